"""Peak memory and time of `graphfix fix` on a large model with external data (not run in CI).

    nice -n 10 python benchmarks/bench_large.py --gb 3 --check none ort --dir /tmp/gf-large

Generates a chain of blocks with FP32 weights of about --gb GiB in external data (one weight
at a time, straight to the data file: the generator never holds more than one block's weights),
then runs `graphfix fix MODEL -o OUT --trt 10.0 --check MODE` in a child process per mode and
prints wall time and the child's peak RSS (ru_maxrss of the waited-for child) as a multiple of
the weight bytes. Removes the files at the end unless --keep.

Each block, H = --hidden::

    x -> MatMul(W[HxH]) -> Add(b[H]) -> ReduceMean -> Sub -> Pow(2) -> ReduceMean -> Add(eps)
      -> Sqrt -> Div -> Mul(gamma[H]) -> Add(beta[H]) -> y     (LayerNorm, decomposed)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper

IR_VERSION = 10


def _external(name: str, dims, location: str, offset: int, length: int) -> TensorProto:
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(dims))
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def generate(path: str, gb: float, hidden: int, seed: int = 0) -> int:
    """Write MODEL and MODEL.data; return the weight bytes."""
    block_bytes = hidden * hidden * 4
    blocks = max(1, round(gb * 1024 ** 3 / block_bytes))
    location = os.path.basename(path) + ".data"
    rng = np.random.default_rng(seed)
    nodes, inits, offset = [], [], 0
    scale = np.float32(1.0 / np.sqrt(hidden))
    with open(path + ".data", "wb") as data:
        def put(name, array):
            nonlocal offset
            raw = np.ascontiguousarray(array, dtype=np.float32).tobytes()
            data.write(raw)
            inits.append(_external(name, array.shape, location, offset, len(raw)))
            offset += len(raw)
        x = "x"
        for i in range(blocks):
            p = f"b{i}."
            put(p + "W", rng.standard_normal((hidden, hidden), dtype=np.float32) * scale)
            put(p + "bias", rng.standard_normal(hidden, dtype=np.float32) * np.float32(0.1))
            put(p + "gamma", 1 + rng.standard_normal(hidden, dtype=np.float32) * np.float32(0.1))
            put(p + "beta", rng.standard_normal(hidden, dtype=np.float32) * np.float32(0.1))
            nodes += [helper.make_node("MatMul", [x, p + "W"], [p + "mm"], name=p + "matmul"),
                      helper.make_node("Add", [p + "mm", p + "bias"], [p + "h"], name=p + "add_bias"),
                      helper.make_node("ReduceMean", [p + "h"], [p + "mean"], name=p + "mean", axes=[-1]),
                      helper.make_node("Sub", [p + "h", p + "mean"], [p + "d"], name=p + "sub"),
                      helper.make_node("Pow", [p + "d", "two"], [p + "sq"], name=p + "pow"),
                      helper.make_node("ReduceMean", [p + "sq"], [p + "var"], name=p + "var", axes=[-1]),
                      helper.make_node("Add", [p + "var", "eps"], [p + "ve"], name=p + "add_eps"),
                      helper.make_node("Sqrt", [p + "ve"], [p + "std"], name=p + "sqrt"),
                      helper.make_node("Div", [p + "d", p + "std"], [p + "n"], name=p + "div"),
                      helper.make_node("Mul", [p + "n", p + "gamma"], [p + "g"], name=p + "mul_gamma"),
                      helper.make_node("Add", [p + "g", p + "beta"], [p + "y"], name=p + "add_beta")]
            x = p + "y"
    inits += [onnx.numpy_helper.from_array(np.array(2, np.float32), "two"),
              onnx.numpy_helper.from_array(np.array(1e-5, np.float32), "eps")]
    graph = helper.make_graph(nodes, "large_chain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", hidden])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_large")
    model.ir_version = IR_VERSION
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return offset


def run_fix(model: str, out: str, check: str, trt: str, extra) -> dict:
    """graphfix fix in a child; its peak RSS from the kernel's accounting of waited-for children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    cmd = [sys.executable, "-m", "graphfix", "fix", model, "-o", out, "--trt", trt, "--check", check,
           "--report", out + ".report.json", "--quiet"] + list(extra)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # RUSAGE_CHILDREN's ru_maxrss is the largest child so far: run the biggest mode last, or one per call
    return {"check": check, "exit_code": proc.returncode, "seconds": round(seconds, 1),
            "peak_rss_bytes": peak_kib * 1024, "peak_grew": peak_kib > before,
            "stderr_tail": proc.stderr.strip().splitlines()[-3:]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gb", type=float, default=3.0, help="weight GiB to generate (default 3)")
    ap.add_argument("--hidden", type=int, default=4096, help="H: each block holds an HxH FP32 MatMul weight")
    ap.add_argument("--check", nargs="+", default=["none"], choices=["none", "ort"],
                    help="check modes to run, each in its own child (default: none)")
    ap.add_argument("--trt", default="10.0")
    ap.add_argument("--dir", default="/tmp/gf-large")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--json", help="also write the results here")
    args, extra = ap.parse_known_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    free = shutil.disk_usage(args.dir).free
    if free < 2.3 * args.gb * 1024 ** 3:
        print(f"bench_large: {args.dir} has {free / 1024 ** 3:.1f} GiB free; need about {2.3 * args.gb:.1f}",
              file=sys.stderr)
        return 2
    model = os.path.join(args.dir, "large.onnx")
    try:
        t0 = time.perf_counter()
        weight_bytes = generate(model, args.gb, args.hidden)
        print(f"generated {model}: {weight_bytes / 1024 ** 3:.2f} GiB of weights in "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
        results = []
        for check in args.check:
            # a fresh interpreter per mode, so RUSAGE_CHILDREN's maximum is this mode's alone
            code = ("import json,sys; sys.path.insert(0, %r); import bench_large as b; "
                    "print(json.dumps(b.run_fix(*sys.argv[1:5], sys.argv[5:])))") % os.path.dirname(__file__)
            out = os.path.join(args.dir, f"fixed-{check}.onnx")
            proc = subprocess.run([sys.executable, "-c", code, model, out, check, args.trt] + extra,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["weight_bytes"] = weight_bytes
            r["peak_over_weights"] = round(r["peak_rss_bytes"] / weight_bytes, 2)
            results.append(r)
            print(f"check={check}: exit {r['exit_code']}, {r['seconds']}s, peak RSS "
                  f"{r['peak_rss_bytes'] / 1024 ** 3:.2f} GiB = {r['peak_over_weights']}x the weights"
                  + (f"; stderr: {' | '.join(r['stderr_tail'])}" if r["exit_code"] != 0 else ""),
                  flush=True)
            for name in (out, out + ".data"):
                if os.path.exists(name):
                    os.remove(name)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
    finally:
        if not args.keep:
            for name in os.listdir(args.dir):
                path = os.path.join(args.dir, name)
                if os.path.isfile(path):
                    os.remove(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
