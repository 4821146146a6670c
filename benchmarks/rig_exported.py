"""GPU rig: the committed exported models on real TensorRT, before and after `graphfix fix`.

For each model in fixtures/exported/manifest.json:
  1. `graphfix fix MODEL -o FIXED --trt 8.6 --report REPORT` (the CLI, as a user runs it);
  2. TensorRT builds of the original and of the fixed model, FP32 and FP16, each in its own child
     process (graphfix.checks.tensorrt.trt: TensorRT 8.6's parser segfaults on some dynamo opset-18
     exports, and that must become a result, not end this script), through Polygraphy's TensorRT
     backend with builder optimization level 0 and only the EDGE_MASK_CONVOLUTIONS and
     JIT_CONVOLUTIONS tactic sources (cuBLAS/cuDNN are stubs on the rig);
  3. each engine runs on seeded inputs at the export's sample shapes (profile min 1, max 2 x opt
     on each dynamic axis) and its outputs are compared with ONNX Runtime FP32 on the ORIGINAL.

Writes OUT_DIR/<model>.json (fix report + four builds) and OUT_DIR/summary.json, prints a table.
Python 3.9; needs tensorrt and a GPU (where either is absent it says so, writes summary.json with
the reason, and exits 0, or 1 with --require-trt).

    python benchmarks/rig_exported.py OUT_DIR [--models bert_ts14,vit_dynamo18] [--timeout 900]
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
PRECISIONS = (("fp32", False), ("fp16", True))
TRT_TARGET = "8.6"


def _finite(x):
    return None if x is None or x != x or x in (float("inf"), float("-inf")) else x


def run_fix(model_path: str, fixed_path: str, report_path: str) -> Dict[str, Any]:
    """The CLI in a child process (a crash in it is a result too)."""
    cmd = [sys.executable, "-m", "graphfix", "fix", model_path, "-o", fixed_path, "--trt", TRT_TARGET,
           "--report", report_path, "--quiet"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out: Dict[str, Any] = {"command": " ".join(cmd[1:]), "returncode": proc.returncode,
                           "seconds": round(time.perf_counter() - started, 2),
                           "stderr_tail": proc.stderr.strip().splitlines()[-10:]}
    if os.path.exists(report_path):
        with open(report_path) as f:
            report = json.load(f)
        out["ok"] = report.get("ok")
        out["passes"] = {p["name"]: {"status": p["status"], "counts": p["counts"], "error": p["error"]}
                         for p in report.get("passes", [])}
        out["opset_after"] = (report.get("output") or {}).get("opsets", {}).get("ai.onnx")
    out["written"] = os.path.exists(fixed_path)
    return out


def build(original: str, candidate: str, fp16: bool, opt_shapes: Dict[str, List[int]], timeout: float
          ) -> Dict[str, Any]:
    """One TensorRT build + run of `candidate`, compared with ONNX Runtime FP32 on `original`."""
    from graphfix.checks.tensorrt.trt import build_and_compare
    try:
        res = build_and_compare(original, candidate, fp16=fp16, opt_shapes=opt_shapes, optimization_level=0,
                                timeout=timeout, progress=False)
    except Exception as exc:  # bad shapes or an unreadable model: still a row in the table
        return {"parsed": False, "built": False, "ran": False, "passed": False, "crashed": False,
                "max_abs": None, "detail": f"{type(exc).__name__}: {exc}"}
    j = res.to_json()
    max_abs = max((o.max_abs for o in res.outputs), default=None)
    return {"parsed": res.parsed, "built": res.built, "ran": res.ran, "passed": res.passed,
            "crashed": res.crashed, "signal": res.signal, "timed_out": res.timed_out,
            "max_abs": _finite(max_abs), "detail": j.get("detail"), "trt_version": res.trt_version,
            "build_seconds": res.build_seconds, "errors": j.get("errors", [])[:10],
            "outputs": j.get("outputs"), "log_tail": j.get("log_tail", [])[-15:]}


def _cell(b: Dict[str, Any]) -> str:
    if b.get("crashed"):
        return f"CRASH {b.get('signal') or ''}".strip()
    if b.get("timed_out"):
        return "TIMEOUT"
    if not b.get("parsed"):
        return "parse FAIL"
    if not b.get("built"):
        return "build FAIL"
    if not b.get("ran"):
        return "run FAIL"
    err = b.get("max_abs")
    return f"{'ok' if b.get('passed') else 'BAD'} {err:.1e}" if err is not None else ("ok" if b.get("passed") else "BAD")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", help="directory for the JSON results (and the fixed models)")
    p.add_argument("--models", help="comma-separated file stems (default: every model in the manifest)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per TensorRT build+run")
    p.add_argument("--require-trt", action="store_true", help="exit 1 when TensorRT or a GPU is absent")
    args = p.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)

    from graphfix.checks.tensorrt.env import trt_unavailable_reason
    reason = trt_unavailable_reason()
    if reason is not None:
        with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
            json.dump({"skipped": reason}, f, indent=2)
        print(f"rig_exported: skipped: {reason}")
        return 1 if args.require_trt else 0

    with open(os.path.join(EXPORTED_DIR, "manifest.json")) as f:
        manifest = json.load(f)
    wanted = set(args.models.split(",")) if args.models else None
    rows = []
    for entry in manifest["models"]:
        stem = entry["file"][:-len(".onnx")]
        if wanted is not None and stem not in wanted:
            continue
        original = os.path.join(EXPORTED_DIR, entry["file"])
        fixed = os.path.join(args.out_dir, stem + ".trt86.onnx")
        sys.stderr.write(f"{stem}: graphfix fix --trt {TRT_TARGET}\n")
        rec: Dict[str, Any] = {"file": entry["file"], "model": entry["model"], "exporter": entry["exporter"],
                               "opset": entry["opset"], "fix": run_fix(original, fixed, os.path.join(
                                   args.out_dir, stem + ".report.json")), "builds": {}}
        opt = {i["name"]: list(i["sample_shape"]) for i in entry["inputs"]}
        for which, path in (("original", original), ("fixed", fixed)):
            for precision, fp16 in PRECISIONS:
                key = f"{which}-{precision}"
                if which == "fixed" and not rec["fix"]["written"]:
                    rec["builds"][key] = {"parsed": False, "built": False, "ran": False, "passed": False,
                                          "crashed": False, "max_abs": None, "detail": "graphfix wrote no model"}
                    continue
                sys.stderr.write(f"{stem}: TensorRT {which} {precision}\n")
                rec["builds"][key] = build(original, path, fp16, opt, args.timeout)
                sys.stderr.write(f"    {_cell(rec['builds'][key])}: {rec['builds'][key].get('detail')}\n")
        with open(os.path.join(args.out_dir, stem + ".json"), "w") as f:
            json.dump(rec, f, indent=1, default=str)
        rows.append(rec)

    keys = [f"{w}-{pr}" for w in ("original", "fixed") for pr, _ in PRECISIONS]
    trt_version = next((b.get("trt_version") for r in rows for b in r["builds"].values() if b.get("trt_version")), None)
    summary = {"trt_version": trt_version, "target": TRT_TARGET, "python": sys.version.split()[0],
               "models": [{"file": r["file"], "fix_ok": r["fix"].get("ok"),
                           **{k: {f: r["builds"][k].get(f) for f in ("parsed", "built", "ran", "passed", "crashed",
                                                                      "max_abs", "detail")}
                              for k in keys if k in r["builds"]}} for r in rows]}
    with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    print(f"exported models on TensorRT {trt_version} (graphfix target {TRT_TARGET}); "
          f"cells: status and max abs error vs ONNX Runtime FP32")
    print(f"{'model':<16} {'fix':<4} " + " ".join(f"{k:>16}" for k in keys))
    for r in rows:
        print(f"{r['file'][:-5]:<16} {'ok' if r['fix'].get('ok') else 'NO':<4} "
              + " ".join(f"{_cell(r['builds'][k]) if k in r['builds'] else '-':>16}" for k in keys))
    print(f"JSON: {os.path.join(args.out_dir, 'summary.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
