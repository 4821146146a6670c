"""Rig script: every fixture on real TensorRT, before and after `graphfix fix`.

For each fixture (graphfix.fixtures): the raw model and the model after
``graphfix.fix(raw, trt=TARGET)`` are each parsed by TensorRT (errors named by ONNX node), built as
FP32 and FP16 engines and run on the same seeded inputs as ONNX Runtime on the raw model; the
largest error per output is recorded. TensorRT runs in child processes, so a crash is a result.

    python benchmarks/rig_fixtures.py OUT_DIR [--trt 8.6] [--fixtures a,b] [--precisions fp32,fp16]
                                      [--jobs 6] [--shard K/N] [--resume] [--timeout 600]
                                      [--timing-cache FILE] [--until-parses]

Writes OUT_DIR/<fixture>/{raw.onnx, fixed.onnx, fix-report.json}, OUT_DIR/<fixture>.json (all
figures for that fixture), OUT_DIR/summary.json (environment and one row per fixture found in
OUT_DIR), and prints a table. ``--jobs`` runs fixtures side by side (TensorRT children share the
GPU; timings then overlap), ``--shard``/``--resume`` split a long run over several commands.
When graphfix changes nothing, the raw figures are the fixed ones (built once).
Exit code 0 when it ran (whatever TensorRT said), 2 when TensorRT is not usable here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any, Dict, List, Optional

PRECISIONS = {"fp32": {}, "fp16": {"fp16": True}, "tf32": {"tf32": True}}




def worst(result: Dict[str, Any]) -> Optional[float]:
    values = [o["max_abs"] for o in result.get("outputs", []) if isinstance(o.get("max_abs"), float)]
    bad = [o for o in result.get("outputs", []) if not isinstance(o.get("max_abs"), float)]
    if bad:
        return float("nan")
    return max(values) if values else None


def cell(result: Optional[Dict[str, Any]]) -> str:
    """One table cell: pass/FAIL, with the stage that failed or the worst error."""
    if result is None:
        return "-"
    if result.get("crashed"):
        return f"CRASH({result.get('signal')}@{result.get('stage')})"
    if result.get("timed_out"):
        return "TIMEOUT"
    if not result.get("parsed"):
        return "no-parse"
    if not result.get("built"):
        return "no-build"
    if not result.get("ran"):
        return "no-run"
    w = worst(result)
    return f"{'ok' if result.get('passed') else 'FAIL'} {w:.1e}" if w is not None else \
        ("ok" if result.get("passed") else "FAIL")


def one_fixture(name: str, make, args, out_dir: str) -> Dict[str, Any]:
    import graphfix
    from graphfix.checks.tensorrt.trt import build_and_compare
    from graphfix.model_io import save_model

    here = os.path.join(out_dir, name)
    os.makedirs(here, exist_ok=True)
    row: Dict[str, Any] = {"fixture": name}
    started = time.perf_counter()
    raw_path, fixed_path = os.path.join(here, "raw.onnx"), os.path.join(here, "fixed.onnx")
    raw = make()
    save_model(raw, raw_path)
    try:
        fixed, report = graphfix.fix(raw, trt=args.trt, check="ort")
        save_model(fixed, fixed_path)
        with open(os.path.join(here, "fix-report.json"), "w") as f:
            f.write(report.dumps() + "\n")
        row["fix"] = {"ok": report.ok, "changed": report.changed,
                      "applied": [p.name for p in report.passes if p.status == "applied"],
                      "problems": [f"{p.name}: {p.status}: {p.error}" for p in report.passes
                                   if p.status in ("failed", "rolled-back")]}
    except Exception as exc:  # a fixture graphfix refuses is a finding, not the end of the run
        row["fix"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        fixed_path = None
    same = fixed_path is not None and open(raw_path, "rb").read() == open(fixed_path, "rb").read()
    row["fixed_is_raw"] = same
    for label, path in (("fixed", fixed_path), ("raw", raw_path)):
        if path is None:
            continue
        for precision in args.precisions:
            if label == "raw" and same:
                row[f"raw_{precision}"] = row[f"fixed_{precision}"]
                continue
            result = build_and_compare(raw_path, path, timeout=args.timeout, timing_cache=args.timing_cache,
                                       plugins=args.plugins, progress=args.jobs == 1, **PRECISIONS[precision])
            row[f"{label}_{precision}"] = result.to_json()
            print(f"[{name}] {label} {precision}: {cell(row[f'{label}_{precision}'])}", file=sys.stderr, flush=True)
    if args.until_parses:
        from graphfix.fix_loop import fix_until_parses
        try:
            _, loop = fix_until_parses(raw, trt=args.trt, plugins=args.plugins, timeout=args.timeout)
            row["until_parses"] = {"parses": loop.parses, "rounds": loop.rounds}
        except Exception as exc:
            row["until_parses"] = {"error": f"{type(exc).__name__}: {exc}"}
    row["seconds"] = round(time.perf_counter() - started, 2)
    return row


def summary_row(row: Dict[str, Any], precisions: List[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"fixture": row["fixture"], "fix_ok": row.get("fix", {}).get("ok"),
                           "applied": row.get("fix", {}).get("applied")}
    out["fixed_is_raw"] = row.get("fixed_is_raw")
    for label in ("raw", "fixed"):
        first = row.get(f"{label}_{precisions[0]}") if precisions else None
        out[f"{label}_parses"] = first["parsed"] if first else None
        out[f"{label}_errors"] = [f"{e.get('node')} ({e.get('op')}): {e['message']}"[:200]
                                  for e in (first or {}).get("errors", [])][:5]
        for p in precisions:
            r = row.get(f"{label}_{p}")
            out[f"{label}_{p}"] = None if r is None else {
                "passed": r["passed"], "parsed": r["parsed"], "built": r["built"], "ran": r["ran"],
                "crashed": r["crashed"], "max_abs": worst(r), "build_seconds": r["build_seconds"],
                "engine_bytes": r["engine_bytes"], "detail": r["detail"]}
    if "until_parses" in row:
        out["until_parses"] = row["until_parses"].get("parses")
    return out


def print_table(rows: List[Dict[str, Any]], precisions: List[str]) -> None:
    heads = ["fixture", "changed"] + [f"raw {p}" for p in precisions] + [f"fixed {p}" for p in precisions]
    table = [heads]
    for row in rows:
        line = [row["fixture"], "no" if row.get("fixed_is_raw") else "yes"]
        for label in ("raw", "fixed"):
            line.extend(cell(row.get(f"{label}_{p}")) for p in precisions)
        table.append(line)
    widths = [max(len(str(r[i])) for r in table) for i in range(len(heads))]
    for r in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="rig_fixtures.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--trt", default="8.6", help="target TensorRT for graphfix.fix (default 8.6)")
    parser.add_argument("--fixtures", help="comma-separated fixture names (default: all)")
    parser.add_argument("--precisions", default="fp32,fp16", help="comma-separated: fp32, fp16, tf32")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per TensorRT child (default 600)")
    parser.add_argument("--timing-cache", help="timing cache file (default: graphfix's, under ~/.cache/graphfix)")
    parser.add_argument("--plugins", nargs="*", default=[], help="plugin libraries to load")
    parser.add_argument("--until-parses", action="store_true", help="also run the parser-driven fix loop on raw")
    parser.add_argument("--jobs", type=int, default=6, help="fixtures run side by side (default 6)")
    parser.add_argument("--shard", default="1/1", help="K/N: run the K-th of N slices of the fixture list")
    parser.add_argument("--resume", action="store_true", help="skip fixtures whose OUT_DIR/<name>.json exists")
    args = parser.parse_args(argv)
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    unknown = [p for p in args.precisions if p not in PRECISIONS]
    if unknown:
        parser.error(f"unknown precision(s) {unknown}")

    from graphfix.checks.tensorrt.env import trt_unavailable_reason
    from graphfix.fixtures import all_fixtures
    reason = trt_unavailable_reason()
    if reason is not None:
        print(f"rig_fixtures: TensorRT is not usable here: {reason}", file=sys.stderr)
        return 2
    fixtures = all_fixtures()
    names = [n.strip() for n in args.fixtures.split(",")] if args.fixtures else list(fixtures)
    missing = [n for n in names if n not in fixtures]
    if missing:
        parser.error(f"unknown fixture(s) {missing}; known: {', '.join(fixtures)}")
    try:
        k, n = (int(x) for x in args.shard.split("/"))
        assert 1 <= k <= n
    except (ValueError, AssertionError):
        parser.error(f"--shard {args.shard}: expected K/N with 1 <= K <= N")
    names = names[k - 1::n]
    os.makedirs(args.out_dir, exist_ok=True)
    if args.resume:
        names = [m for m in names if not os.path.exists(os.path.join(args.out_dir, f"{m}.json"))]
    from graphfix.checks.tensorrt.env import environment
    env = environment()
    print(json.dumps(env), file=sys.stderr)
    started = time.perf_counter()

    def run_one(name: str) -> None:
        try:
            row = one_fixture(name, fixtures[name], args, args.out_dir)
        except Exception as exc:
            row = {"fixture": name, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        with open(os.path.join(args.out_dir, f"{name}.json"), "w") as f:
            json.dump(row, f, indent=2)

    from concurrent.futures import ThreadPoolExecutor
    from graphfix.registry import registered
    registered()  # import every pass once, before threads use the registry
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(run_one, names))
    rows = []
    for name in fixtures:  # every fixture with results in OUT_DIR, from this run or earlier shards
        path = os.path.join(args.out_dir, f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                rows.append(json.load(f))
    summary = {"environment": env, "trt_target": args.trt, "precisions": args.precisions,
               "seconds_this_run": round(time.perf_counter() - started, 1),
               "fixtures": [summary_row(r, args.precisions) if "error" not in r else
                            {"fixture": r["fixture"], "error": r["error"]} for r in rows]}
    with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print_table([r for r in rows if "error" not in r], args.precisions)
    for r in rows:
        if "error" in r:
            print(f"{r['fixture']}: script error: {r['error']}")
    fixed_ok = sum(1 for r in summary["fixtures"] if (r.get("fixed_fp32") or {}).get("passed"))
    print(f"fixed models passing FP32 on TensorRT: {fixed_ok} of {len(rows)}; "
          f"details in {os.path.join(args.out_dir, 'summary.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
