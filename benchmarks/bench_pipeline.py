"""Benchmark: the default `graphfix fix` (every default pass, ONNX Runtime checks) against the anchors.

A script, not a test:

    python benchmarks/bench_pipeline.py --before /path/to/old/checkout        # 10k, 100k, exported
    python benchmarks/bench_pipeline.py --sizes 10k --models none --out bench_pipeline.json

Models: bench_fold's seeded transformer-like graphs (graphfix.fixtures.shapes.transformer_like) of
the sizes asked, and the real exports in fixtures/exported/ (--models all|none|NAME,...).
Each tool runs in its own Python subprocess, one after the other, started the same way (start-up,
imports, load and save count on every side); wall time, CPU time (user + system) and the child's
peak RSS (os.wait4):

  graphfix:         graphfix fix SRC -o OUT --report R   (the CLI's defaults: all default passes, ORT checks;
                    --after: that checkout first on PYTHONPATH, else the installed graphfix)
  graphfix-before:  the same, with the checkout given by --before first on PYTHONPATH (its graphfix/
                    needs passes and fixtures linked to ../passes and ../fixtures, as setuptools maps them)
  polygraphy:       polygraphy surgeon sanitize --fold-constants SRC -o OUT
  onnxsim:          onnxsim SRC OUT                        (when importable here)
  onnxslim:         onnxslim SRC OUT                       (when importable here)

graphfix's report gives its per-pass seconds.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import machine_facts, run_child  # noqa: E402
from bench_fold import LAYERS, POLYGRAPHY_CHILD, op_counts, versions  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORTED = os.path.join(ROOT, "fixtures", "exported")
GRAPHFIX_CHILD = "import sys; from graphfix.cli import main; sys.exit(main(['-q', 'fix'] + sys.argv[1:]))"
ONNXSIM_CHILD = "import sys; from onnxsim import main; sys.argv[0] = 'onnxsim'; sys.exit(main())"
ONNXSLIM_CHILD = ("import sys; import onnxslim; from onnxslim.cli import main; sys.argv[0] = 'onnxslim'; "
                  "sys.exit(main())")


def tools(before: Optional[str], after: Optional[str] = None) -> Dict[str, dict]:
    """name -> {"child": code, "env": environment}: graphfix (the installed one, or --after first on
    PYTHONPATH), graphfix-before with --before first on it, the anchors that are importable."""
    plain = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found = {"graphfix": {"child": GRAPHFIX_CHILD,
                          "env": {**plain, "PYTHONPATH": os.path.abspath(after)} if after else plain}}
    if before:
        found["graphfix-before"] = {"child": GRAPHFIX_CHILD, "env": {**plain, "PYTHONPATH": os.path.abspath(before)}}
    found["polygraphy"] = {"child": POLYGRAPHY_CHILD, "env": plain}
    if importlib.util.find_spec("onnxsim"):
        found["onnxsim"] = {"child": ONNXSIM_CHILD, "env": plain}
    if importlib.util.find_spec("onnxslim"):
        found["onnxslim"] = {"child": ONNXSLIM_CHILD, "env": plain}
    return found


def weight_bytes(path: str) -> int:
    import onnx
    from graphfix.weights import tensor_bytes
    model = onnx.load(path, load_external_data=False)
    return sum(tensor_bytes(t) for t in model.graph.initializer)


def bench_model(label: str, src: str, workdir: str, timeouts, only: Optional[List[str]],
                before: Optional[str], after: Optional[str]) -> Dict:
    import onnx
    nodes = len(onnx.load(src, load_external_data=False).graph.node)
    row = {"model": label, "nodes_in": nodes, "weight_mib": round(weight_bytes(src) / 2 ** 20, 1), "tools": {}}
    for name, tool in tools(before, after).items():
        if only and name not in only:
            continue
        out = os.path.join(workdir, f"{name}_{label}.onnx")
        argv = [sys.executable, "-c", tool["child"]]
        report = os.path.join(workdir, f"{name}_{label}.json")
        if name.startswith("graphfix"):
            argv += [src, "-o", out, "--report", report]
        elif name == "polygraphy":
            argv += ["surgeon", "sanitize", "--fold-constants", src, "-o", out]
        else:
            argv += [src, out]
        print(f"[{label}] {name} ...", flush=True)
        res = run_child(argv, timeouts[0] if name.startswith("graphfix") else timeouts[1], workdir, env=tool["env"])
        ops = op_counts(out)
        res["nodes_out"] = sum(ops.values()) if ops else None
        if name.startswith("graphfix") and os.path.exists(report):
            doc = json.load(open(report))
            res["ok"] = doc["ok"]
            res["passes"] = {p["name"]: {"status": p["status"], "seconds": p["seconds"]} for p in doc["passes"]}
            res["fix_seconds"] = doc["seconds"]
        row["tools"][name] = res
        for path in (out, report):
            if os.path.exists(path):
                os.remove(path)
    return row


def print_table(rows: List[Dict]) -> None:
    names = sorted({n for r in rows for n in r["tools"]},
                   key=lambda n: ["graphfix-before", "graphfix", "polygraphy", "onnxsim", "onnxslim"].index(n))
    print("CPU s / wall s / peak RSS MiB / nodes out per tool (* failed or timed out)")
    print("| model | nodes | weights MiB | " + " | ".join(names) + " |")
    print("|---|---:|---:|" + "---:|" * len(names))
    for r in rows:
        cells = []
        for n in names:
            t = r["tools"].get(n)
            if t is None:
                cells.append("-")
                continue
            mark = "*" if t["returncode"] or t["timed_out"] else ""
            cells.append(f"{t['cpu_seconds']:.1f}{mark} / {t['seconds']:.1f} / {t['max_rss_mib']:.0f} / {t['nodes_out']}")
        print(f"| {r['model']} | {r['nodes_in']} | {r['weight_mib']} | " + " | ".join(cells) + " |")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10k,100k", help=f"comma-separated, from {', '.join(LAYERS)}; '' for none")
    parser.add_argument("--models", default="all", help="exported models from fixtures/exported: all, none or "
                        "comma-separated file names")
    parser.add_argument("--before", help="a second checkout: run as graphfix-before (first on PYTHONPATH)")
    parser.add_argument("--after", help="a checkout to run as graphfix (first on PYTHONPATH; default: the "
                        "installed graphfix)")
    parser.add_argument("--only", help="comma-separated tools to run (graphfix, graphfix-before, polygraphy, "
                        "onnxsim, onnxslim)")
    parser.add_argument("--out", default="bench_pipeline.json", help="where to write the JSON results")
    parser.add_argument("--workdir", help="keep the models here (default: a temporary directory, removed)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per graphfix run")
    parser.add_argument("--anchor-timeout", type=float, default=600.0, help="seconds per anchor run (onnxsim and "
                        "onnxslim take many minutes on 100k nodes)")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in LAYERS]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; known: {', '.join(LAYERS)}")
    if args.models == "all":
        exported = sorted(f for f in os.listdir(EXPORTED) if f.endswith(".onnx"))
    else:
        exported = [] if args.models == "none" else [m.strip() for m in args.models.split(",") if m.strip()]
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="graphfix-bench-pipeline-"))
    os.makedirs(workdir, exist_ok=True)
    rows, timeouts = [], (args.timeout, args.anchor_timeout)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        import onnx
        from graphfix.fixtures.shapes import transformer_like
        for name in exported:
            rows.append(bench_model(name, os.path.join(EXPORTED, name), workdir, timeouts, only, args.before, args.after))
        for label in sizes:
            src = os.path.join(workdir, f"transformer_{label}.onnx")
            onnx.save(transformer_like(LAYERS[label], seed=0), src)
            rows.append(bench_model(f"transformer_{label}", src, workdir, timeouts, only, args.before, args.after))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    import graphfix
    result = {"machine": machine_facts(started=started),
              "graphfix": args.after or graphfix.__file__, "before": args.before, "versions": versions(),
              "method": "each tool in its own subprocess of the same Python, one after the other; wall and CPU "
                        "time include start-up, imports, load and save; peak memory is the child's max RSS "
                        "(os.wait4)",
              "results": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print_table(rows)
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
