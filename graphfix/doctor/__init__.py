"""`graphfix doctor`: what this machine can do with TensorRT, and whether a plan or timing cache runs here.

- environment.py: TensorRT, TensorRT-RTX, CUDA runtime/driver, GPUs, ONNX Runtime, found without
  importing tensorrt in this process (a broken CUDA setup can abort the interpreter);
- plan_header.py: reads a serialized plan's or timing cache's header, never deserializing it;
- verdict.py: the problems of an environment and whether a plan can run in it, each with its cause
  and its fix;
- clocks.py: GPU clocks and power state through NVML (ctypes), for timed runs;
- report.py: the text and JSON forms.
"""
