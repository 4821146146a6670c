"""Verification on real TensorRT: the backends (TensorRT 8.6/10.x, built and run; TensorRT-RTX, the
11.x parser with an ahead-of-time build), each driven in a child process so that a crashing parser
or builder is a result, never the end of graphfix.

    trt.py                   build, run and compare with ONNX Runtime (`validate`, `fix --check trt`)
    rtx.py                   TensorRT-RTX: parse and build ahead of time (`--check rtx`, `check --trt 11`)
    backends.py              the backends as data (module, what each can do, its label in reports)
    env.py                   whether a backend is installed and usable here
    child.py / worker.py     the child process and what runs in it
    errors.py                parser messages mapped to nodes
    optimization_profile.py  TensorRT optimization profiles (min/opt/max shapes) and tolerances
"""
