"""Benchmark: the default `graphfix fix` (every default pass, ONNX Runtime checks) against the anchors.

A script, not a test:

    python benchmarks/bench_pipeline.py                         # 1k, 10k and 100k nodes
    python benchmarks/bench_pipeline.py --sizes 1k,10k --out bench_pipeline.json
    PYTHONPATH=/path/to/other/checkout python benchmarks/bench_pipeline.py --only graphfix   # "before"

The models are bench_fold's seeded transformer-like graphs (graphfix.fixtures.shapes.transformer_like).
Each tool runs in its own Python subprocess, one after the other, started the same way (start-up,
imports, load and save count on every side); wall time and the child's peak RSS (os.wait4):

  graphfix:    graphfix fix SRC -o OUT --report R     (the CLI's defaults: all default passes, ORT checks)
  polygraphy:  polygraphy surgeon sanitize --fold-constants SRC -o OUT
  onnxsim:     onnxsim SRC OUT                         (when importable here)
  onnxslim:    onnxslim SRC OUT                        (when importable here)

graphfix's report gives its per-pass seconds. The children inherit PYTHONPATH, so a second checkout
put first on it is what the graphfix child runs (to measure before/after on the same machine).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_fold import LAYERS, POLYGRAPHY_CHILD, op_counts, run_child, versions  # noqa: E402

GRAPHFIX_CHILD = "import sys; from graphfix.cli import main; sys.exit(main(['-q', 'fix'] + sys.argv[1:]))"
ONNXSIM_CHILD = "import sys; from onnxsim import main; sys.argv[0] = 'onnxsim'; sys.exit(main())"
ONNXSLIM_CHILD = ("import sys; import onnxslim; from onnxslim.cli import main; sys.argv[0] = 'onnxslim'; "
                  "sys.exit(main())")


def anchors() -> Dict[str, str]:
    found = {"polygraphy": POLYGRAPHY_CHILD}
    if importlib.util.find_spec("onnxsim"):
        found["onnxsim"] = ONNXSIM_CHILD
    if importlib.util.find_spec("onnxslim"):
        found["onnxslim"] = ONNXSLIM_CHILD
    return found


def bench_size(label: str, workdir: str, timeout: float, only: Optional[List[str]]) -> Dict:
    import onnx
    from graphfix.fixtures.shapes import transformer_like

    model = transformer_like(LAYERS[label], seed=0)
    src = os.path.join(workdir, f"transformer_{label}.onnx")
    onnx.save(model, src)
    row = {"size": label, "nodes_in": len(model.graph.node), "tools": {}}
    del model
    tools = {"graphfix": GRAPHFIX_CHILD, **anchors()}
    for name, child in tools.items():
        if only and name not in only:
            continue
        out = os.path.join(workdir, f"{name}_{label}.onnx")
        argv = [sys.executable, "-c", child]
        if name == "graphfix":
            report = os.path.join(workdir, f"graphfix_{label}.json")
            argv += [src, "-o", out, "--report", report]
        elif name == "polygraphy":
            argv += ["surgeon", "sanitize", "--fold-constants", src, "-o", out]
        else:
            argv += [src, out]
        print(f"[{label}] {name} ...", flush=True)
        res = run_child(argv, timeout, workdir)
        ops = op_counts(out)
        res["nodes_out"] = sum(ops.values()) if ops else None
        if name == "graphfix" and os.path.exists(report):
            doc = json.load(open(report))
            res["ok"] = doc["ok"]
            res["passes"] = {p["name"]: {"status": p["status"], "seconds": p["seconds"]} for p in doc["passes"]}
            res["checks"] = [{"kind": c.get("kind"), "passed": c.get("passed"), "seconds": c.get("seconds")}
                             for c in doc["checks"]]
            res["fix_seconds"] = doc["seconds"]
        row["tools"][name] = res
    return row


def print_table(rows: List[Dict]) -> None:
    names = sorted({n for r in rows for n in r["tools"]}, key=lambda n: (n != "graphfix", n))
    head = f"{'size':>5} {'nodes in':>9} | " + " | ".join(f"{n:>10} s {'RSS MiB':>8} {'nodes':>6}" for n in names)
    print(head)
    print("-" * len(head))
    for r in rows:
        cells = []
        for n in names:
            t = r["tools"].get(n)
            if t is None:
                cells.append(f"{'-':>12} {'-':>8} {'-':>6}")
                continue
            s = f"{t['seconds']:.1f}" + ("*" if t["returncode"] else "")
            cells.append(f"{s:>12} {t['max_rss_mib']:>8.0f} {str(t['nodes_out']):>6}")
        print(f"{r['size']:>5} {r['nodes_in']:>9} | " + " | ".join(cells))
    print("(* the command failed or timed out; see the JSON)")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1k,10k,100k", help=f"comma-separated, from {', '.join(LAYERS)}")
    parser.add_argument("--only", help="comma-separated tools to run (graphfix, polygraphy, onnxsim, onnxslim)")
    parser.add_argument("--out", default="bench_pipeline.json", help="where to write the JSON results")
    parser.add_argument("--workdir", help="keep the models here (default: a temporary directory, removed)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per tool per size")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in LAYERS]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; known: {', '.join(LAYERS)}")
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="graphfix-bench-pipeline-"))
    os.makedirs(workdir, exist_ok=True)
    rows = []
    try:
        for label in sizes:
            rows.append(bench_size(label, workdir, args.timeout, only))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    import graphfix
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
              "graphfix": graphfix.__file__, "versions": versions(),
              "method": "each tool in its own subprocess of the same Python, one after the other; wall time "
                        "includes start-up, imports, load and save; peak memory is the child's max RSS (os.wait4)",
              "results": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print_table(rows)
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
