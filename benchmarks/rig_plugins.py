"""Rig script: plugin substitution and decomposition on real TensorRT, compared with ONNX Runtime.

For each case (a graphfix fixture, with inputs chosen for it): ``graphfix.fix(model, trt=TARGET,
options)`` rewrites it (EfficientNMS_TRT, ROIAlign_TRT, GroupNormalizationPlugin, dequantized
float ops, contrib decompositions); the original model and the rewrite are each parsed, built
(FP32, tactic sources EDGE_MASK_CONVOLUTIONS + JIT_CONVOLUTIONS only, builder optimization level 0)
and run by TensorRT in a child process; the rewrite's outputs are compared with ONNX Runtime on the
*original* model -- NMS results as sets of kept (class, box, score), since order and padding differ.
A GroupNormalizationPlugin build that fails is retried with the CUDNN tactic source added (the
plugin normalizes through cuDNN), and both attempts are recorded.

    pip install -e . --no-deps          # once: graphfix.passes must be importable
    python benchmarks/rig_plugins.py --out rig_plugins.json [--trt 8.6] [--cases nms_topk_head,...]
                                     [--timeout 300] [--no-trt]

Writes the JSON (schema graphfix.rig_plugins/1) and prints one line per case. Runs with Python 3.9,
tensorrt 8.6.0, polygraphy 0.53.6, onnx 1.19, onnxruntime 1.19.2, numpy 1.26. Without TensorRT (or
with --no-trt) it does the CPU part only and marks the TensorRT part skipped. Exit code 0 when it
ran, 2 when graphfix is not importable.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Dict, List, Optional

import numpy as np

SCHEMA = "graphfix.rig_plugins/1"
ATOL, RTOL = 1e-3, 1e-3          # TensorRT FP32 vs ONNX Runtime
NMS_TOL = 1e-4                   # box coordinate / score match for NMS sets


# -- the cases ------------------------------------------------------------------------------------
def nms_feeds(seed: int = 0, n: int = 64, classes: int = 3, clusters: int = 8) -> Dict[str, np.ndarray]:
    """Tight box clusters (NMS suppresses), scores mostly under the 0.3 threshold: at most 10 boxes
    per class and 20 in all survive, so ONNX's per-class cap and EfficientNMS's per-image cap agree."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.2, 0.8, (clusters, 2))
    c = centers[rng.integers(0, clusters, n)] + rng.normal(0, 0.01, (n, 2))
    hw = rng.uniform(0.08, 0.12, (n, 2))
    boxes = np.concatenate([c - hw, c + hw], axis=1)[None].astype(np.float32)
    return {"boxes": boxes, "scores": rng.uniform(0.0, 0.45, (1, n, classes)).astype(np.float32)}


def nms_bcn_feeds(seed: int = 0) -> Dict[str, np.ndarray]:
    f = nms_feeds(seed)
    return {"boxes": f["boxes"], "scores": np.ascontiguousarray(f["scores"].transpose(0, 2, 1))}


def roi_feeds(seed: int = 0, batch: int = 2, rois: int = 5, size: int = 16, scale: float = 8.0):
    """Feature map and ROIs inside it (rois in input-image coordinates: feature * 1/spatial_scale)."""
    rng = np.random.default_rng(seed)
    lo = rng.uniform(0, size * 0.6, (rois, 2))
    hi = lo + rng.uniform(2, size * 0.4, (rois, 2))
    r = np.concatenate([lo, hi], axis=1) / scale
    return {"x": rng.standard_normal((batch, 4, size, size)).astype(np.float32), "rois": r.astype(np.float32),
            "batch_indices": rng.integers(0, batch, rois).astype(np.int64)}


def check_roi_feeds(seed: int = 0):
    f = roi_feeds(seed, batch=1, rois=3, size=8, scale=1.0)
    return {"x": f["x"][:, :2], "rois": f["rois"]}


def random_feeds(model, seed: int = 0) -> Dict[str, np.ndarray]:
    """Seeded inputs in the ranges graphfix's own checks use (floats in [-1, 1], ids in range)."""
    import onnx
    from graphfix.checks.inputs import concrete_shapes, graph_inputs, value_ranges
    rng = np.random.default_rng(seed)
    dims, ranges = concrete_shapes(model), value_ranges(model)
    feeds = {}
    for inp in graph_inputs(model):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        lo, hi = ranges[inp.name]
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.uniform(lo, hi, dims[inp.name]).astype(dtype)
        elif dtype == np.uint8:
            feeds[inp.name] = rng.integers(0, 256, dims[inp.name]).astype(dtype)
        else:
            feeds[inp.name] = rng.integers(int(lo), int(hi) + 1, dims[inp.name]).astype(dtype)
    return feeds


# name: (fixture, kind, graphfix options, feeds function or None for random, float source fixture)
CASES: Dict[str, Dict[str, Any]] = {
    "nms_topk_head": dict(fixture="nms_topk_head", kind="nms", options={"nms": True}, feeds=nms_feeds),
    "nms_gather_head": dict(fixture="nms_gather_head", kind="nms", options={"nms": True}, feeds=nms_feeds),
    "nms_scores_bcn": dict(fixture="nms_scores_bcn", kind="nms", options={"nms": True}, feeds=nms_bcn_feeds),
    "roi_align_16": dict(fixture="roi_align_16", kind="dense", options={}, feeds=roi_feeds),
    "roi_align_10": dict(fixture="roi_align_10", kind="dense", options={}, feeds=roi_feeds),
    "check_roialign": dict(fixture="check_roialign", kind="dense", options={}, feeds=check_roi_feeds),
    "group_norm_torch": dict(fixture="group_norm_torch", kind="dense", options={"group_norm": True}),
    "group_norm_no_affine": dict(fixture="group_norm_no_affine", kind="dense", options={"group_norm": True}),
    "group_norm_three_layers": dict(fixture="group_norm_three_layers", kind="dense", options={"group_norm": True}),
    "quantized_dynamic_mlp.exact": dict(fixture="quantized_dynamic_mlp", kind="dense", options={},
                                        source="float_mlp"),
    "quantized_dynamic_mlp.float": dict(fixture="quantized_dynamic_mlp", kind="dense",
                                        options={"dequantize": "float"}, source="float_mlp"),
    "quantized_conv.exact": dict(fixture="quantized_conv", kind="dense", options={}, source="float_conv"),
    "quantized_conv.float": dict(fixture="quantized_conv", kind="dense", options={"dequantize": "float"},
                                 source="float_conv"),
    "quantized_dq_matmul.exact": dict(fixture="quantized_dq_matmul", kind="dense", options={}),
    "quantized_dq_matmul.float": dict(fixture="quantized_dq_matmul", kind="dense", options={"dequantize": "float"}),
    "quantized_dq_lstm": dict(fixture="quantized_dq_lstm", kind="dense", options={}, source="float_lstm"),
    "quantized_matmul_integer_uint8_input": dict(fixture="quantized_matmul_integer_uint8_input", kind="dense",
                                                 options={}),
    "contrib_skip_layer_norm": dict(fixture="contrib_skip_layer_norm", kind="dense", options={}),
    "contrib_skip_layer_norm_opset13": dict(fixture="contrib_skip_layer_norm_opset13", kind="dense", options={}),
    "contrib_gelus": dict(fixture="contrib_gelus", kind="dense", options={}),
    "contrib_embed_layer_norm": dict(fixture="contrib_embed_layer_norm", kind="dense", options={}),
    "contrib_skip_layer_norm.plugin": dict(fixture="contrib_skip_layer_norm", kind="dense",
                                           options={"contrib_plugins": True}, drop_sum_output=True),
    "contrib_fast_gelu.plugin": dict(fixture="contrib_fast_gelu", kind="dense", options={"contrib_plugins": True}),
}


# -- the TensorRT child ---------------------------------------------------------------------------
def child_main(model_path: str, feeds_path: str, out_path: str, status_path: str, tactics: str) -> int:
    """Parse, build (FP32), run; write outputs (npz) and {"ok", "stage", "error", seconds} (json)."""
    status: Dict[str, Any] = {"ok": False, "stage": "import", "error": None}

    def save():
        with open(status_path, "w") as f:
            json.dump(status, f)
    save()
    try:
        import tensorrt as trt
        from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, TrtRunner
        from polygraphy.logger import G_LOGGER
        G_LOGGER.module_severity = G_LOGGER.ERROR
        status["tensorrt"] = trt.__version__
        trt.init_libnvinfer_plugins(trt.Logger(trt.Logger.ERROR), "")
        sources = [trt.TacticSource.EDGE_MASK_CONVOLUTIONS, trt.TacticSource.JIT_CONVOLUTIONS]
        if tactics == "edge_jit_cudnn":
            sources.append(trt.TacticSource.CUDNN)
        status["tactic_sources"] = [str(s) for s in sources]
        status["stage"] = "parse"
        save()
        t0 = time.perf_counter()
        network = NetworkFromOnnxPath(model_path)
        built = network()
        status["parse_s"] = time.perf_counter() - t0
        status["stage"] = "build"
        save()
        config = CreateConfig(tactic_sources=sources, builder_optimization_level=0)
        t0 = time.perf_counter()
        engine = EngineFromNetwork(built, config=config)()
        status["build_s"] = time.perf_counter() - t0
        status["stage"] = "context"
        save()
        feeds = dict(np.load(feeds_path))
        with TrtRunner(engine) as runner:
            status["stage"] = "run"
            save()
            meta = runner.get_input_metadata()
            feeds = {k: v.astype(_numpy_dtype(meta[k].dtype)) if k in meta and meta[k].dtype is not None else v
                     for k, v in feeds.items()}     # e.g. INT64 inputs are INT32 bindings on 8.6
            t0 = time.perf_counter()
            outputs = runner.infer(feeds)
            status["run_s"] = time.perf_counter() - t0
        np.savez(out_path, **{k: np.asarray(v) for k, v in outputs.items()})
        status["ok"], status["stage"] = True, "done"
    except BaseException as exc:  # noqa: B902 - everything TensorRT does wrong is a result here
        status["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:800]}"
    save()
    return 0


def _numpy_dtype(dtype):
    """Polygraphy >= 0.50 reports its own DataType; older ones numpy dtypes."""
    try:
        from polygraphy.datatype import DataType
        return np.dtype(DataType.to_dtype(dtype, "numpy"))
    except Exception:
        return np.dtype(dtype)


def run_child(model, feeds: Dict[str, np.ndarray], workdir: str, tag: str, timeout: int,
              tactics: str = "edge_jit") -> Dict[str, Any]:
    import onnx
    model_path = os.path.join(workdir, f"{tag}.onnx")
    feeds_path, out_path, status_path = (os.path.join(workdir, f"{tag}.{ext}")
                                         for ext in ("feeds.npz", "out.npz", "status.json"))
    onnx.save(model, model_path)
    np.savez(feeds_path, **feeds)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", model_path, feeds_path, out_path, status_path,
           tactics]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        rc, log = proc.returncode, (proc.stderr + proc.stdout)
    except subprocess.TimeoutExpired as exc:
        rc, log = None, f"timed out after {timeout} s: {exc}"
    result: Dict[str, Any] = {"tactics": tactics, "seconds": round(time.perf_counter() - t0, 2), "returncode": rc}
    try:
        with open(status_path) as f:
            result.update(json.load(f))
    except (OSError, ValueError):
        result.update({"ok": False, "stage": "start", "error": "child wrote no status"})
    if rc not in (0, None) and result.get("ok") is not True:
        result["error"] = result.get("error") or f"child exited with {rc} (crash?)"
    if not result.get("ok"):
        result["log_tail"] = [line for line in log.strip().splitlines() if line.strip()][-8:]
        return result
    result["outputs"] = dict(np.load(out_path))
    return result


# -- comparisons ----------------------------------------------------------------------------------
def dense_compare(reference: Dict[str, np.ndarray], got: Dict[str, np.ndarray]) -> Dict[str, Any]:
    rows, ok = [], True
    for name, ref in reference.items():
        if name not in got:
            rows.append({"name": name, "missing": True})
            ok = False
            continue
        a = np.asarray(got[name]).astype(np.float64).reshape(ref.shape)
        b = ref.astype(np.float64)
        diff = np.abs(a - b)
        close = bool(np.allclose(a, b, atol=ATOL, rtol=RTOL))
        ok &= close
        rows.append({"name": name, "max_abs": float(diff.max(initial=0.0)),
                     "max_rel": float((diff / (np.abs(b) + 1e-6)).max(initial=0.0)),
                     "rms": float(np.sqrt(np.mean(diff ** 2))) if diff.size else 0.0, "allclose": close})
    return {"passed": ok, "atol": ATOL, "rtol": RTOL, "outputs": rows}


def nms_sets(original_outputs: Dict[str, np.ndarray], names: List[str], plugin_outputs: Dict[str, np.ndarray]):
    """Compare ONNX NMS head outputs (boxes[K,4], scores[K], classes[K]) with EfficientNMS's padded ones."""
    boxes, scores, classes = (original_outputs[n] for n in names)
    expected = [(int(c), float(s), [float(v) for v in b]) for b, s, c in zip(boxes, scores, classes)]
    n = int(np.asarray(plugin_outputs["num_detections"]).reshape(-1)[0])
    got = [(int(plugin_outputs["detection_classes"][0, i]), float(plugin_outputs["detection_scores"][0, i]),
            [float(v) for v in plugin_outputs["detection_boxes"][0, i]]) for i in range(n)]
    unmatched = list(got)
    missing = []
    for c, s, b in expected:
        hit = next((g for g in unmatched if g[0] == c and abs(g[1] - s) <= NMS_TOL
                    and max(abs(x - y) for x, y in zip(g[2], b)) <= NMS_TOL), None)
        if hit is None:
            missing.append([c, s, b])
        else:
            unmatched.remove(hit)
    scores_sorted = all(got[i][1] >= got[i + 1][1] for i in range(len(got) - 1))
    return {"passed": not missing and not unmatched, "onnx_runtime_kept": len(expected), "tensorrt_kept": n,
            "matched": len(expected) - len(missing), "missing": missing[:5], "extra": [list(g) for g in unmatched[:5]],
            "tensorrt_sorted_by_score": scores_sorted}


# -- one case -------------------------------------------------------------------------------------
def run_case(name: str, spec: Dict[str, Any], trt: str, workdir: str, timeout: int, use_trt: bool) -> Dict[str, Any]:

    import graphfix
    from graphfix.checks.ort import run_ort
    from graphfix.fixtures import build
    from graphfix.pass_api import PassContext

    row: Dict[str, Any] = {"case": name, "fixture": spec["fixture"], "options": spec["options"]}
    model = build(spec["fixture"])
    if spec.get("drop_sum_output"):             # the SkipLayerNorm plugin has one output
        model.graph.node[0].output[3] = ""
        del model.graph.node[1]
        del model.graph.output[1]
    feeds = spec["feeds"]() if spec.get("feeds") else random_feeds(model)
    fixed, report = graphfix.fix(model, trt=trt, context=PassContext(options=dict(spec["options"])))
    row["rewrite"] = {
        "report_ok": report.ok,
        "passes": {p.name: {"status": p.status, "changes": len(p.changes), "warnings": p.warnings[:3],
                            "error": p.error} for p in report.passes if p.status not in ("skipped", "unchanged")},
        "ops": sorted({n.op_type for n in fixed.graph.node}),
        "outputs": [o.name for o in fixed.graph.output],
        "whole_model_check": [{k: c.get(k) for k in ("passed", "skipped", "detail")} for c in report.checks],
    }
    reference = run_ort(model, feeds)
    if spec.get("source"):
        source = run_ort(build(spec["source"]), feeds)
        row["quantized_vs_float_source"] = dense_compare(source, reference)
    if not use_trt:
        row["tensorrt"] = {"skipped": True}
        row["verdict"] = "cpu-only"
        return row
    fixed_feeds = {i.name: feeds[i.name] for i in fixed.graph.input if i.name in feeds}
    row["original_on_trt"] = strip(run_child(model, feeds, workdir, f"{name}.original", timeout))
    fixed_run = run_child(fixed, fixed_feeds, workdir, f"{name}.fixed", timeout)
    attempts = [strip(fixed_run)]
    if not fixed_run.get("ok") and "GroupNormalizationPlugin" in row["rewrite"]["ops"]:
        fixed_run = run_child(fixed, fixed_feeds, workdir, f"{name}.fixed-cudnn", timeout, tactics="edge_jit_cudnn")
        attempts.append(strip(fixed_run))
    row["fixed_on_trt"] = attempts
    if not fixed_run.get("ok"):
        row["verdict"] = f"error at {fixed_run.get('stage')}"
        return row
    outputs = fixed_run["outputs"]
    if spec["kind"] == "nms":
        row["compare"] = nms_sets(reference, [o.name for o in model.graph.output], outputs)
    else:
        row["compare"] = dense_compare(reference, outputs)
        if spec.get("source"):
            row["tensorrt_vs_float_source"] = dense_compare(source, outputs)
    row["verdict"] = "pass" if row["compare"]["passed"] else "mismatch"
    return row


def strip(run: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in run.items() if k != "outputs"}




def summary_line(row: Dict[str, Any]) -> str:
    verdict = row.get("verdict", "?")
    extra = ""
    cmp_ = row.get("compare") or {}
    if "outputs" in cmp_:
        worst = max((o.get("max_abs", float("nan")) for o in cmp_["outputs"]), default=float("nan"))
        extra = f"max abs {worst:.3g}"
    elif "matched" in cmp_:
        extra = f"{cmp_['matched']}/{cmp_['onnx_runtime_kept']} boxes matched, TensorRT kept {cmp_['tensorrt_kept']}"
    orig = row.get("original_on_trt")
    base = "" if not orig else (" | original: ok" if orig.get("ok") else f" | original fails at {orig.get('stage')}")
    return f"{row['case']:<40} {verdict:<14} {extra}{base}"


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return child_main(*argv[1:6])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--trt", help="target TensorRT for graphfix (default: the installed tensorrt, else 8.6)")
    ap.add_argument("--cases", help="comma-separated case names (default: all): " + ", ".join(CASES))
    ap.add_argument("--timeout", type=int, default=300, help="seconds per TensorRT child")
    ap.add_argument("--no-trt", action="store_true", help="CPU part only (rewrite + ONNX Runtime)")
    args = ap.parse_args(argv)
    try:
        importlib.import_module("graphfix.passes")    # a clear message when graphfix is not installed
        from graphfix.target import installed_trt_version
    except ImportError as exc:
        print(f"rig_plugins: graphfix is not importable ({exc}); run `pip install -e . --no-deps` first",
              file=sys.stderr)
        return 2
    use_trt = not args.no_trt and importlib.util.find_spec("tensorrt") is not None
    trt = args.trt or installed_trt_version() or "8.6"
    names = [c.strip() for c in args.cases.split(",")] if args.cases else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        print(f"rig_plugins: unknown cases {unknown}", file=sys.stderr)
        return 2
    from graphfix.checks.tensorrt.env import environment
    doc: Dict[str, Any] = {"schema": SCHEMA, "target": trt, "environment": environment(),
                           "tensorrt_used": use_trt, "settings": {
                               "precision": "fp32", "tactic_sources": ["EDGE_MASK_CONVOLUTIONS", "JIT_CONVOLUTIONS"],
                               "builder_optimization_level": 0, "atol": ATOL, "rtol": RTOL, "nms_tol": NMS_TOL},
                           "cases": []}
    if not use_trt:
        doc["tensorrt_skipped"] = "--no-trt" if args.no_trt else "tensorrt is not installed"
    with tempfile.TemporaryDirectory(prefix="rig_plugins.") as workdir:
        for name in names:
            t0 = time.perf_counter()
            try:
                row = run_case(name, CASES[name], trt, workdir, args.timeout, use_trt)
            except Exception as exc:
                row = {"case": name, "verdict": "script-error",
                       "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
            row["seconds"] = round(time.perf_counter() - t0, 2)
            doc["cases"].append(row)
            print(summary_line(row), flush=True)
            with open(args.out, "w") as f:          # rewritten after each case: a partial run still reports
                json.dump(doc, f, indent=2, default=_json_default)
    verdicts = [r.get("verdict") for r in doc["cases"]]
    doc["summary"] = {v: verdicts.count(v) for v in sorted(set(verdicts))}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2, default=_json_default)
    print(json.dumps(doc["summary"]))
    return 0


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
