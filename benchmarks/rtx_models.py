"""Every fixture and every exported model on TensorRT-RTX, raw and after `graphfix fix --trt 11`.

TensorRT-RTX 1.7 (``pip install graphfix[rtx]``) is the onnx-tensorrt 11.x parser with an
ahead-of-time builder that runs on the CPU: each model is parsed and built (optimization profile from
its dynamic dims, graphfix.checks.tensorrt.optimization_profile), in a child process, and nothing runs. Beside each
verdict: what ``graphfix check --trt 11`` predicted (its error findings), so a failure can be matched
with the reason check gives. tests/test_rtx.py runs the "fixed" half of this in CI.

    nice -n 10 python benchmarks/rtx_models.py --json benchmarks/results/rtx_models.json \\
        --markdown benchmarks/results/rtx_models.md [--only NAME,...] [--fixed-only]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

_HERE = os.path.dirname(os.path.abspath(__file__))
EXPORTED_DIR = os.path.join(_HERE, "..", "fixtures", "exported")
TARGET = "11"


def model_sources() -> List[Tuple[str, Callable[[], Any]]]:
    """(name, loader) for every fixture (graphfix.fixtures) and every exported model (exported/NAME)."""
    import onnx
    from graphfix.fixtures import all_fixtures
    sources: List[Tuple[str, Callable[[], Any]]] = list(sorted(all_fixtures().items()))
    for file in sorted(f for f in os.listdir(EXPORTED_DIR) if f.endswith(".onnx")):
        path = os.path.join(EXPORTED_DIR, file)
        sources.append((f"exported/{file[:-5]}", lambda path=path: onnx.load(path)))
    return sources


def rtx_verdict(path: str, timeout: float = 300) -> Dict[str, Any]:
    """Parse and build on TensorRT-RTX in a child process: parsed, built, crashed, errors by node."""
    from graphfix.checks.tensorrt.rtx import build_only
    result = build_only(path, progress=False, timeout=timeout)
    return {"parsed": result.parsed, "built": result.built, "crashed": result.crashed,
            "timed_out": result.timed_out, "build_seconds": result.build_seconds,
            "errors": [dict(e) for e in result.errors][:5], "label": result.label}


def check_findings(model) -> List[Dict[str, Optional[str]]]:
    """`graphfix check --trt 11`'s findings: errors (what it predicts the parser or builder rejects) and
    the rest (warnings name what only TensorRT-RTX lacks, e.g. plugins)."""
    from graphfix.diagnosis import check_model
    return [{"node": f.node, "op": f.op, "rule": f.rule, "severity": f.severity, "reason": f.reason}
            for f in check_model(model, trt=TARGET).findings]


def check_errors(model) -> List[Dict[str, Optional[str]]]:
    return [f for f in check_findings(model) if f["severity"] == "error"]


def fixed_model(model) -> Tuple[Any, Dict[str, Any]]:
    """`graphfix fix --trt 11 --check none` and a short report. No ONNX Runtime comparison: whether a pass
    is rolled back would then depend on the CPU (ONNX Runtime's integer kernels are inexact without
    AVX-512 VNNI), and the passes' meaning is tested elsewhere; this is about what TensorRT-RTX does."""
    import graphfix
    fixed, report = graphfix.fix(model, trt=TARGET, check="none")
    return fixed, {"ok": report.ok, "applied": [p.name for p in report.passes if p.status == "applied"],
                   "failed": {p.name: p.error for p in report.passes if p.status in ("failed", "rolled-back")}}


def evaluate(name: str, load: Callable[[], Any], fixed_only: bool = False) -> Dict[str, Any]:
    from graphfix.model_io import save_model
    record: Dict[str, Any] = {"name": name}
    model = load()
    with tempfile.TemporaryDirectory(prefix="graphfix-rtx-models-") as tmp:
        if not fixed_only:
            raw_path = os.path.join(tmp, "raw.onnx")
            save_model(model, raw_path)
            record["raw"] = rtx_verdict(raw_path)
            findings = check_findings(model)
            record["raw"]["check_errors"] = [f for f in findings if f["severity"] == "error"]
            record["raw"]["check_other"] = [f for f in findings if f["severity"] != "error"]
        started = time.perf_counter()
        try:
            fixed, record["fix"] = fixed_model(model)
        except Exception as exc:  # graphfix refused the input: recorded, the raw verdict stands
            record["fix"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            return record
        record["fix"]["seconds"] = round(time.perf_counter() - started, 3)
        fixed_path = os.path.join(tmp, "fixed.onnx")
        save_model(fixed, fixed_path)
        record["fixed"] = rtx_verdict(fixed_path)
        findings = check_findings(fixed)
        record["fixed"]["check_errors"] = [f for f in findings if f["severity"] == "error"]
        record["fixed"]["check_other"] = [f for f in findings if f["severity"] != "error"]
    return record


def evaluate_fixed_many(sources: List[Tuple[str, Callable[[], Any]]], workers: Optional[int] = None
                        ) -> Dict[str, Dict[str, Any]]:
    """evaluate(..., fixed_only=True) for many models: graphfix runs in this thread, one model after
    another; the TensorRT-RTX children (the slow part) run `workers` at a time (default: CPU count)."""
    from concurrent.futures import ThreadPoolExecutor
    from graphfix.model_io import save_model
    workers = workers or max(1, os.cpu_count() or 1)
    records: Dict[str, Dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="graphfix-rtx-models-") as tmp:
        paths, fixed_models = {}, {}
        for k, (name, load) in enumerate(sources):
            record = records[name] = {"name": name}
            started = time.perf_counter()
            try:
                fixed, record["fix"] = fixed_model(load())
            except Exception as exc:
                record["fix"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                continue
            record["fix"]["seconds"] = round(time.perf_counter() - started, 3)
            paths[name] = os.path.join(tmp, f"{k}.onnx")
            save_model(fixed, paths[name])
            fixed_models[name] = fixed
        with ThreadPoolExecutor(workers) as pool:
            verdicts = dict(zip(paths, pool.map(rtx_verdict, paths.values())))
    for name, verdict in verdicts.items():
        findings = check_findings(fixed_models[name])
        verdict["check_errors"] = [f for f in findings if f["severity"] == "error"]
        verdict["check_other"] = [f for f in findings if f["severity"] != "error"]
        records[name]["fixed"] = verdict
    return records


def ok(verdict: Optional[Dict[str, Any]]) -> bool:
    return bool(verdict and verdict.get("parsed") and verdict.get("built"))


def agrees(verdict: Optional[Dict[str, Any]]) -> bool:
    """check --trt 11 agrees with TensorRT-RTX: no error finding and parsed+built, or both say no."""
    return verdict is not None and ok(verdict) == (not verdict.get("check_errors"))


def summarize(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"models": len(records)}
    for side in ("raw", "fixed"):
        have = [r for r in records if side in r]
        if not have:
            continue
        out[side] = {"runs": len(have), "parsed": sum(bool(r[side]["parsed"]) for r in have),
                     "built": sum(ok(r[side]) for r in have), "crashed": sum(bool(r[side]["crashed"]) for r in have),
                     "check_agrees": sum(agrees(r[side]) for r in have),
                     "disagreements": [r["name"] for r in have if not agrees(r[side])],
                     "failing": [r["name"] for r in have if not ok(r[side])]}
    both = [r for r in records if "raw" in r and "fixed" in r]
    out["drops"] = [r["name"] for r in both if ok(r["raw"]) and not ok(r["fixed"])]
    return out


def markdown(summary: Dict[str, Any], records: List[Dict[str, Any]], env: Dict[str, Any]) -> str:
    label = next((r[s]["label"] for r in records for s in ("fixed", "raw") if r.get(s, {}).get("label")), "?")
    lines = [f"# Fixtures and exported models on {label}", "",
             f"graphfix fix --trt {TARGET} --check none; python {env.get('python')}, onnx {env.get('onnx')}", "",
             "| models | parsed | parsed and built | crashed | check --trt 11 agrees |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for side in ("raw", "fixed"):
        s = summary.get(side)
        if s:
            lines.append(f"| {side} ({s['runs']}) | {s['parsed']} | {s['built']} | {s['crashed']} | "
                         f"{s['check_agrees']} ({100 * s['check_agrees'] / s['runs']:.1f} %) |")
    lines += ["", f"dropped after fix: {', '.join(summary.get('drops') or []) or 'none'}", ""]
    for side in ("raw", "fixed"):
        for r in records:
            v = r.get(side)
            if v is not None and (not ok(v) or not agrees(v)):
                first = (v["errors"] or [{}])[0]
                why = f" ({first.get('op')}: {str(first.get('message', ''))[:160]})" if not ok(v) else ""
                predicted = ", ".join(sorted({f"{e['op']}:{e['rule']}" for e in v["check_errors"]})) or "no error"
                warned = sorted({f"{e['op']}" for e in v.get("check_other", []) if e["severity"] == "warning"})
                if warned:
                    predicted += f" (warnings on {', '.join(str(w) for w in warned)})"
                lines.append(f"- {side} `{r['name']}`: {'parsed+built' if ok(v) else 'FAILED'}{why}; "
                             f"check predicted {predicted}")
    return "\n".join(lines) + "\n"


def rescore(path: str, markdown_path: Optional[str]) -> int:
    """Recompute check --trt 11's findings for the records in PATH (raw model and fixed output)."""
    with open(path) as f:
        doc = json.load(f)
    sources = dict(model_sources())
    for rec in doc["records"]:
        model = sources[rec["name"]]()
        sides = [("raw", model)] + ([("fixed", fixed_model(model)[0])] if "fixed" in rec else [])
        for side, m in sides:
            if side in rec:
                findings = check_findings(m)
                rec[side]["check_errors"] = [x for x in findings if x["severity"] == "error"]
                rec[side]["check_other"] = [x for x in findings if x["severity"] != "error"]
    doc["summary"] = dict(summarize(doc["records"]), seconds=doc["summary"].get("seconds"))
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(markdown(doc["summary"], doc["records"], doc["environment"]))
    print(json.dumps({k: {"built": v["built"], "check_agrees": v["check_agrees"]} for k, v in doc["summary"].items()
                      if k in ("raw", "fixed")}))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write all records here")
    p.add_argument("--markdown", help="write a short table and the failures here")
    p.add_argument("--only", help="comma-separated names (fixture names, exported/NAME)")
    p.add_argument("--fixed-only", action="store_true", help="skip the raw models")
    p.add_argument("--rescore", action="store_true",
                   help="keep the TensorRT-RTX verdicts in --json, recompute check's findings (after a profile edit)")
    args = p.parse_args(argv)
    if args.rescore:
        return rescore(args.json, args.markdown)
    from graphfix.checks.tensorrt.env import environment, rtx_unavailable_reason
    reason = rtx_unavailable_reason()
    if reason:
        print(f"TensorRT-RTX is not usable here: {reason}", file=sys.stderr)
        return 2
    sources = model_sources()
    if args.only:
        wanted = set(args.only.split(","))
        sources = [s for s in sources if s[0] in wanted]
    started = time.perf_counter()
    records = []
    for name, load in sources:
        rec = evaluate(name, load, fixed_only=args.fixed_only)
        records.append(rec)
        cells = [f"{side}: {'ok' if ok(rec[side]) else 'FAIL'}" for side in ("raw", "fixed") if side in rec]
        print(f"{name:<50} {'  '.join(cells)}", flush=True)
    summary = summarize(records)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    env = environment()
    print(json.dumps({k: v for k, v in summary.items() if k not in ("raw", "fixed")}))
    for side in ("raw", "fixed"):
        if side in summary:
            s = summary[side]
            print(f"{side}: {s['runs']} models, {s['parsed']} parsed, {s['built']} parsed+built, "
                  f"check agrees {s['check_agrees']}; failing: {' '.join(s['failing'])}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"schema": "graphfix.rtx-models/1", "environment": env, "summary": summary,
                       "records": records}, f, indent=1, sort_keys=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(summary, records, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
