"""FP16 conversion side by side (CPU): graphfix's precision pass vs ModelOpt AutoCast vs a blanket
conversion (onnxconverter-common's convert_float_to_float16, keep_io_types=True).

For each model (the exported transformers in fixtures/exported/ and the precision/LayerNorm
fixtures): max (and mean) abs error of the converted model vs ONNX Runtime FP32 on the original (seeded inputs,
graphfix.checks.inputs), nodes computing in FP32 (non-Cast nodes with a FLOAT output), Casts added,
conversion time. ONNX Runtime's CPU kernels run FP16 nodes that lack an FP16 kernel in FP32, so these
errors understate what an FP16 engine does; benchmarks/rig_precision.py measures TensorRT.

AutoCast (`nvidia-modelopt`) is run in a child process with its defaults (keep_io_types=True). Its
package imports torch when modelopt.onnx is imported although AutoCast does not use it; where torch
is not importable the child puts a stub torch module first on sys.path (said in the output).

    python benchmarks/bench_precision.py OUT_PREFIX [--models a,b]   # writes OUT_PREFIX.json and .md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = ("prec_layernorm_overflow", "prec_attention_masks", "prec_exp_large", "prec_small_cnn",
            "ln_two_layers", "ln_pow_div")
EXPORTED = ("bert_ts17", "gpt2_ts17", "vit_ts17", "llama_ts17", "t5_ts17", "bert_dynamo18", "llama_dynamo18")

AUTOCAST_CHILD = r"""
import sys, importlib.util
stub = sys.argv[3]
if importlib.util.find_spec("torch") is None:
    sys.path.insert(0, stub)
import onnx
from modelopt.onnx.autocast import convert_to_mixed_precision
m = convert_to_mixed_precision(onnx_path=sys.argv[1], low_precision_type="fp16", keep_io_types=True)
onnx.save(m, sys.argv[2])
print("STUBBED_TORCH" if stub in sys.path else "REAL_TORCH")
"""
TORCH_STUB = ("__version__ = '0.0'\n\nclass _Anything:\n    def __init__(self, *a, **k): pass\n"
              "    def __getattr__(self, name): return _Anything()\n    def __call__(self, *a, **k): return _Anything()\n\n"
              "def __getattr__(name):\n    return _Anything\n")


def fp32_nodes(model: onnx.ModelProto) -> Tuple[int, int]:
    """(nodes computing in FP32, islands): non-Cast, non-Constant nodes with a FLOAT output, and
    their groups connected by tensors between them."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info)
             + list(inferred.graph.output)}
    nodes = [n for n in model.graph.node if n.op_type not in ("Cast", "Constant")
             and any(types.get(o) == onnx.TensorProto.FLOAT for o in n.output)]
    parent = list(range(len(nodes)))

    def find(k):
        while parent[k] != k:
            k = parent[k]
        return k
    made = {o: k for k, n in enumerate(nodes) for o in n.output}
    for k, n in enumerate(nodes):
        for i in n.input:
            if i in made:
                parent[find(k)] = find(made[i])
    return len(nodes), len({find(k) for k in range(len(nodes))})


def casts(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type == "Cast")


def errors(original: onnx.ModelProto, converted: onnx.ModelProto, feeds) -> Tuple[float, float]:
    """(max, mean) abs error over the float outputs; inf when an output is not finite."""
    from graphfix.checks.ort import run_ort
    ref = run_ort(original, feeds)
    got = run_ort(converted, feeds)
    worst, means = 0.0, []
    for name, r in ref.items():
        if not np.issubdtype(r.dtype, np.floating):
            continue
        d = np.abs(np.asarray(got[name], np.float64) - r.astype(np.float64))
        if not np.isfinite(d).all():
            return float("inf"), float("inf")
        worst = max(worst, float(d.max()) if d.size else 0.0)
        means.append(float(d.mean()) if d.size else 0.0)
    return worst, max(means, default=0.0)


def convert_graphfix(path: str, out: str) -> onnx.ModelProto:
    import graphfix
    model, _ = graphfix.fix(path, trt="10.0", context=graphfix.PassContext(options={"precision": "fp16"}),
                            check="none")
    return model


def convert_blanket(path: str, out: str) -> onnx.ModelProto:
    from onnxconverter_common import float16
    return float16.convert_float_to_float16(onnx.load(path), keep_io_types=True)


def convert_autocast(path: str, out: str) -> onnx.ModelProto:
    stub = os.path.join(os.path.dirname(out), "torch_stub")
    os.makedirs(os.path.join(stub, "torch"), exist_ok=True)
    with open(os.path.join(stub, "torch", "__init__.py"), "w") as f:
        f.write(TORCH_STUB)
    proc = subprocess.run([sys.executable, "-c", AUTOCAST_CHILD, path, out, stub], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(" ".join(proc.stderr.strip().splitlines()[-1:]))
    convert_autocast.stubbed = "STUBBED_TORCH" in proc.stdout
    return onnx.load(out)


TOOLS = (("graphfix", convert_graphfix), ("autocast", convert_autocast), ("blanket", convert_blanket))


def model_paths(work: str, wanted) -> Dict[str, str]:
    from graphfix.fixtures import build
    paths = {}
    for name in EXPORTED:
        paths[name] = os.path.join(REPO, "fixtures", "exported", name + ".onnx")
    for name in FIXTURES:
        paths[name] = os.path.join(work, name + ".onnx")
        onnx.save(build(name), paths[name])
    return {k: v for k, v in paths.items() if wanted is None or k in wanted}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_prefix")
    p.add_argument("--models")
    args = p.parse_args(argv)
    from graphfix.checks.inputs import make_feeds
    from graphfix.checks.ort import _quiet_polygraphy
    _quiet_polygraphy()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, path in model_paths(work, set(args.models.split(",")) if args.models else None).items():
            original = onnx.load(path)
            feeds = next(iter(make_feeds(original, seed=1)))
            row = {"model": name, "nodes": len(original.graph.node), "fp32_nodes_before": fp32_nodes(original)[0]}
            for tool, fn in TOOLS:
                out = os.path.join(work, f"{name}.{tool}.onnx")
                t0 = time.perf_counter()
                try:
                    converted = fn(path, out)
                    seconds = time.perf_counter() - t0
                    worst, mean = errors(original, converted, feeds)
                    n_fp32, islands = fp32_nodes(converted)
                    row[tool] = {"max_abs": worst, "mean_abs": mean, "fp32_nodes": n_fp32, "fp32_islands": islands,
                                 "casts_added": casts(converted) - casts(original), "seconds": round(seconds, 2)}
                except Exception as exc:
                    row[tool] = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
                sys.stderr.write(f"{name} {tool}: {row[tool]}\n")
            rows.append(row)
    doc = {"onnxruntime": _version("onnxruntime"), "onnx": onnx.__version__,
           "nvidia-modelopt": _version("nvidia-modelopt"), "onnxconverter-common": _version("onnxconverter-common"),
           "autocast_torch_stubbed": getattr(convert_autocast, "stubbed", None), "models": rows}
    with open(args.out_prefix + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    table = _table(doc)
    with open(args.out_prefix + ".md", "w") as f:
        f.write(table + "\n")
    print(table)
    return 0


def _version(dist: str) -> Optional[str]:
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cell(r: dict) -> str:
    if "error" in r:
        return "failed"
    err = r["max_abs"]
    e = "inf/NaN" if err == float("inf") else f"{err:.1e} ({r['mean_abs']:.0e})"
    return f"{e} / {r['fp32_nodes']} ({r['fp32_islands']}) / {r['casts_added']} / {r['seconds']:.1f}s"


NOTES = """# FP16 conversion: graphfix vs ModelOpt AutoCast vs onnxconverter-common (CPU)

Written by `nice -n 10 python benchmarks/bench_precision.py OUT_PREFIX` on the 2-core development
machine (shared with other jobs: times are noisy). graphfix: `graphfix.fix(..., trt="10.0")` with
precision fp16, the whole pipeline (LayerNorm fusion included). AutoCast: `convert_to_mixed_precision(
..., low_precision_type="fp16", keep_io_types=True)`, defaults otherwise. Blanket:
`onnxconverter_common.float16.convert_float_to_float16(model, keep_io_types=True)`.
"failed": ONNX Runtime could not run the converted model (reason below the table).
ONNX Runtime's CPU kernels compute FP16 nodes that lack an FP16 kernel in FP32 (Pow, ReduceMean, ...),
so overflow that an FP16 engine would hit does not show here; TensorRT: `benchmarks/rig_precision.py`.
AutoCast ran with a stub `torch`: modelopt.onnx imports torch, and `pip install "nvidia-modelopt[onnx]"`
would pull torch 2.14 with CUDA 13 libraries and replace onnx 1.23 by 1.21 and onnxruntime by
onnxruntime-gpu here, so nvidia-modelopt, onnxscript, onnx-ir, onnxslim, lief, nvidia-ml-py and tqdm
were installed with `--no-deps`. The AutoCast errors on the LayerNorm fixtures were not investigated.
"""


def _table(doc: dict) -> str:
    lines = [NOTES, f"FP16 conversion, CPU (ONNX Runtime {doc['onnxruntime']}, onnx {doc['onnx']}, nvidia-modelopt "
             f"{doc['nvidia-modelopt']}, onnxconverter-common {doc['onnxconverter-common']}; AutoCast with a torch "
             f"stub: {doc['autocast_torch_stubbed']}).",
             "Cells: max abs error (mean abs error) vs ONNX Runtime FP32 / nodes computing in FP32 (islands) / Casts added "
             "(negative: the tool removed Casts) / conversion time.", "",
             "| model | nodes (FP32) | graphfix | AutoCast | blanket (onnxconverter-common) |",
             "| --- | ---: | --- | --- | --- |"]
    for r in doc["models"]:
        lines.append(f"| {r['model']} | {r['nodes']} ({r['fp32_nodes_before']}) | {_cell(r['graphfix'])} | "
                     f"{_cell(r['autocast'])} | {_cell(r['blanket'])} |")
    errors = [(r["model"], t, r[t]["error"]) for r in doc["models"] for t, _ in TOOLS if "error" in r[t]]
    for model, tool, err in errors:
        lines.append(f"\n{model} / {tool}: {err}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
