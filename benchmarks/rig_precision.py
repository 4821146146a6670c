"""GPU rig: FP16 engines of (a) the original FP32 model with the FP16 builder flag alone and (b)
graphfix's mixed-precision model (`graphfix fix --precision fp16`), each compared with ONNX Runtime
FP32 on the original model.

Models: the exported transformers in fixtures/exported/ (manifest) and the precision fixtures
(fixtures/precision.py: LayerNorm overflow, attention masks, Exp on large values, a small CNN).
For each: `graphfix fix MODEL -o MIXED --trt 8.6 --precision fp16` (the CLI, in a child process),
then two TensorRT builds through graphfix.checks.tensorrt.trt.build_and_compare (each in its own child
process; FP16 flag on for both: on 8.6 and 10.x the builder needs it to choose FP16 kernels, see
graphfix.passes.precision.builder_fp16_flag), builder optimization level 0 unless
--optimization-level says otherwise.

Prints a table and writes JSON to OUT_JSON. Python 3.9, TensorRT 8.6 and a GPU; without them it
says so (exit 0, or 1 with --require-trt). `--dry-run` only prepares the models (fixtures written,
graphfix fix run) and writes the JSON without building, which runs anywhere.

    python benchmarks/rig_precision.py OUT_JSON [--work DIR] [--models a,b] [--timeout 900] [--optimization-level N] [--dry-run]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORTED_DIR = os.path.join(REPO, "fixtures", "exported")
FIXTURE_MODELS = ("prec_layernorm_overflow", "prec_attention_masks", "prec_exp_large", "prec_small_cnn",
                  "ln_two_layers")
TRT_TARGET = "8.6"


def model_list(work: str) -> List[Dict[str, Any]]:
    """(name, path, opt shapes or None) of every model: exported ones, then fixtures written to `work`."""
    models = []
    manifest = os.path.join(EXPORTED_DIR, "manifest.json")
    if os.path.exists(manifest):
        with open(manifest) as f:
            for entry in json.load(f)["models"]:
                models.append({"name": entry["file"][:-len(".onnx")], "path": os.path.join(EXPORTED_DIR, entry["file"]),
                               "opt_shapes": {i["name"]: list(i["sample_shape"]) for i in entry["inputs"]}})
    import onnx
    from graphfix.fixtures import build
    os.makedirs(work, exist_ok=True)
    for name in FIXTURE_MODELS:
        path = os.path.join(work, name + ".onnx")
        onnx.save(build(name), path)
        models.append({"name": name, "path": path, "opt_shapes": None})
    return models


def run_fix(model_path: str, mixed_path: str, report_path: str) -> Dict[str, Any]:
    """`graphfix fix --precision fp16` in a child process (a crash in it is a result too)."""
    cmd = [sys.executable, "-m", "graphfix", "fix", model_path, "-o", mixed_path, "--trt", TRT_TARGET,
           "--precision", "fp16", "--report", report_path, "--quiet"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out: Dict[str, Any] = {"returncode": proc.returncode, "seconds": round(time.perf_counter() - started, 2),
                           "stderr_tail": proc.stderr.strip().splitlines()[-5:], "written": os.path.exists(mixed_path)}
    if os.path.exists(report_path):
        with open(report_path) as f:
            report = json.load(f)
        out["ok"] = report.get("ok")
        rec = next((p for p in report.get("passes", []) if p["name"] == "precision"), None)
        if rec is not None:
            out["precision"] = {"status": rec["status"], "counts": rec["counts"], "error": rec["error"],
                                "fp32_nodes": {c["target"]: c["details"]["reason"] for c in rec["changes"]
                                               if c["action"] == "keep-fp32"}}
        checks = [c for c in report.get("checks", []) if c.get("kind") == "ort"]
        if checks:
            out["ort_max_abs"] = max((o.get("max_abs") or 0.0 for o in checks[0].get("outputs", [])), default=None)
    return out


def build(original: str, candidate: str, opt_shapes, timeout: float, level: int) -> Dict[str, Any]:
    """One FP16 TensorRT build + run of `candidate`, compared with ONNX Runtime FP32 on `original`."""
    from graphfix.checks.tensorrt.trt import build_and_compare
    try:
        res = build_and_compare(original, candidate, fp16=True, opt_shapes=opt_shapes, optimization_level=level,
                                timeout=timeout, progress=False)
    except Exception as exc:
        return {"built": False, "passed": False, "max_abs": None, "detail": f"{type(exc).__name__}: {exc}"}
    finite = [o.max_abs for o in res.outputs if o.max_abs == o.max_abs and abs(o.max_abs) != float("inf")]
    return {"parsed": res.parsed, "built": res.built, "ran": res.ran, "passed": res.passed, "crashed": res.crashed,
            "max_abs": max(finite) if finite else None,
            "nonfinite": any(not (o.max_abs == o.max_abs and abs(o.max_abs) != float("inf")) for o in res.outputs),
            "detail": res.to_json().get("detail"), "trt_version": res.trt_version}


def _cell(b: Optional[Dict[str, Any]]) -> str:
    if not b:
        return "-"
    if b.get("crashed"):
        return "CRASH"
    if not b.get("built"):
        return "no build"
    if b.get("nonfinite"):
        return "inf/NaN"
    err = b.get("max_abs")
    return f"{'ok' if b.get('passed') else 'BAD'} {err:.1e}" if err is not None else "?"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_json", help="where to write the results (JSON)")
    p.add_argument("--work", help="directory for the written fixtures and mixed models (default: beside OUT_JSON)")
    p.add_argument("--models", help="comma-separated model names (default: all)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per TensorRT build+run")
    p.add_argument("--optimization-level", type=int, default=0,
                   help="builder optimization level (0: fast builds; 3, TensorRT's default, tries more FP16 kernels)")
    p.add_argument("--dry-run", action="store_true", help="prepare the models only; no TensorRT")
    p.add_argument("--require-trt", action="store_true", help="exit 1 when TensorRT or a GPU is absent")
    args = p.parse_args(argv)
    work = args.work or os.path.splitext(os.path.abspath(args.out_json))[0] + ".work"
    reason = None
    if not args.dry_run:
        from graphfix.checks.tensorrt.env import trt_unavailable_reason
        reason = trt_unavailable_reason()
        if reason is not None:
            _write(args.out_json, {"skipped": reason})
            print(f"rig_precision: skipped: {reason}")
            return 1 if args.require_trt else 0
    wanted = set(args.models.split(",")) if args.models else None
    rows = []
    for m in model_list(work):
        if wanted is not None and m["name"] not in wanted:
            continue
        mixed = os.path.join(work, m["name"] + ".fp16mixed.onnx")
        sys.stderr.write(f"{m['name']}: graphfix fix --precision fp16\n")
        row = {"model": m["name"], "fix": run_fix(m["path"], mixed, os.path.join(work, m["name"] + ".report.json")),
               "builds": {}}
        if not args.dry_run:
            sys.stderr.write(f"{m['name']}: TensorRT FP16 flag on the original\n")
            row["builds"]["flag-only"] = build(m["path"], m["path"], m["opt_shapes"], args.timeout,
                                                     args.optimization_level)
            if row["fix"]["written"]:
                sys.stderr.write(f"{m['name']}: TensorRT FP16 flag on the mixed model\n")
                row["builds"]["graphfix-mixed"] = build(m["path"], mixed, m["opt_shapes"], args.timeout,
                                                          args.optimization_level)
        rows.append(row)
    trt_version = next((b.get("trt_version") for r in rows for b in r["builds"].values() if b.get("trt_version")), None)
    _write(args.out_json, {"target": TRT_TARGET, "trt_version": trt_version, "dry_run": args.dry_run,
                           "optimization_level": args.optimization_level,
                           "python": sys.version.split()[0], "models": rows})
    print(f"FP16 engines on TensorRT {trt_version or '(dry run)'}: max abs error vs ONNX Runtime FP32 on the original")
    print(f"{'model':<26} {'fix':<4} {'fp32 nodes':>10} {'flag only':>14} {'graphfix mixed':>15}")
    for r in rows:
        prec = r["fix"].get("precision") or {}
        print(f"{r['model']:<26} {'ok' if r['fix'].get('ok') else 'NO':<4} "
              f"{prec.get('counts', {}).get('nodes_fp32', '-'):>10} {_cell(r['builds'].get('flag-only')):>14} "
              f"{_cell(r['builds'].get('graphfix-mixed')):>15}")
    print(f"JSON: {args.out_json}")
    return 0


def _write(path: str, doc: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
