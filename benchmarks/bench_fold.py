"""Benchmark: graphfix fold-constants against `polygraphy surgeon sanitize --fold-constants`.

A script, not a test:

    python benchmarks/bench_fold.py                       # 1k, 10k and 100k nodes
    python benchmarks/bench_fold.py --sizes 1k,10k --out bench_fold.json

For each size it writes a seeded transformer-like model (graphfix.fixtures.shapes.transformer_like:
decomposed LayerNorm, Q/K/V with Shape-derived Reshape targets, a Shape-derived attention scale,
transposed weights, Constant-node scalars; about 100 nodes per layer, tiny weights) to a temporary
directory, then runs, one after the other and each in its own Python subprocess started the same
way (so interpreter start-up, imports, load and save count on both sides):

  graphfix:   graphfix.fix(path, passes="normalize,fold-constants,cleanup", check="none") + save
  polygraphy: polygraphy surgeon sanitize --fold-constants path -o out

It reports wall time, peak memory (the child's maximum resident set size, from os.wait4), the node
count of each output and whether the two outputs hold the same multiset of ops; for models up to
--check-max-nodes it also runs the input and both outputs in ONNX Runtime on one seeded input.
graphfix's per-pass seconds are recorded too, to show where its time goes.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import sys
import tempfile
from typing import Dict, List, Optional

from _measure import machine_facts, run_child

LAYERS = {"1k": 10, "10k": 99, "100k": 990}   # transformer_like(L) has 101 * L + 1 nodes

GRAPHFIX_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import graphfix
src, dst, side = sys.argv[1:4]
fixed, report = graphfix.fix(src, passes="normalize,fold-constants,cleanup", check="none")
t1 = time.perf_counter()
graphfix.save_model(fixed, dst)
t2 = time.perf_counter()
json.dump({"passes": {p.name: {"status": p.status, "seconds": round(p.seconds, 3), "counts": p.counts,
                               "warnings": len(p.warnings)} for p in report.passes},
           "fix_seconds": round(t1 - t0, 3), "save_seconds": round(t2 - t1, 3)}, open(side, "w"))
"""

POLYGRAPHY_CHILD = ("import sys; from polygraphy.tools import main; sys.argv[0] = 'polygraphy'; "
                    "sys.exit(main())")


def op_counts(path: str) -> Optional[collections.Counter]:
    import onnx
    if not os.path.exists(path):
        return None
    return collections.Counter(n.op_type for n in onnx.load(path).graph.node)


def same_outputs(original: str, candidates: List[str]) -> Dict[str, Optional[float]]:
    """Max abs difference of each candidate's outputs against the original's (one seeded input)."""
    import numpy as np
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3

    def run(path):
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feeds = {i.name: np.random.default_rng(0).standard_normal(i.shape).astype(np.float32)
                 for i in sess.get_inputs()}
        return sess.run(None, feeds)

    ref = run(original)
    out = {}
    for path in candidates:
        try:
            got = run(path)
            out[os.path.basename(path)] = float(max(np.max(np.abs(a - b)) for a, b in zip(ref, got)))
        except Exception as exc:  # report, do not hide
            out[os.path.basename(path)] = f"could not run: {exc}"
    return out


def bench_size(label: str, workdir: str, timeout: float, check_max_nodes: int) -> Dict:
    import onnx
    from graphfix.fixtures.shapes import transformer_like

    model = transformer_like(LAYERS[label], seed=0)
    src = os.path.join(workdir, f"transformer_{label}.onnx")
    onnx.save(model, src)
    row = {"size": label, "layers": LAYERS[label], "nodes_in": len(model.graph.node),
           "file_mib": round(os.path.getsize(src) / 2 ** 20, 2)}
    del model

    gf_out, pg_out = os.path.join(workdir, f"gf_{label}.onnx"), os.path.join(workdir, f"pg_{label}.onnx")
    side = os.path.join(workdir, f"gf_{label}.json")
    print(f"[{label}] graphfix ...", flush=True)
    row["graphfix"] = run_child([sys.executable, "-c", GRAPHFIX_CHILD, src, gf_out, side], timeout, workdir)
    if os.path.exists(side):
        row["graphfix"].update(json.load(open(side)))
    print(f"[{label}] polygraphy ...", flush=True)
    row["polygraphy"] = run_child([sys.executable, "-c", POLYGRAPHY_CHILD, "surgeon", "sanitize",
                                   "--fold-constants", src, "-o", pg_out], timeout, workdir)
    gf_ops, pg_ops = op_counts(gf_out), op_counts(pg_out)
    row["graphfix"]["nodes_out"] = sum(gf_ops.values()) if gf_ops else None
    row["polygraphy"]["nodes_out"] = sum(pg_ops.values()) if pg_ops else None
    row["same_ops"] = gf_ops == pg_ops if gf_ops and pg_ops else None
    if gf_ops and pg_ops and gf_ops != pg_ops:
        row["op_difference"] = {"graphfix_only": dict(gf_ops - pg_ops), "polygraphy_only": dict(pg_ops - gf_ops)}
    if row["graphfix"]["seconds"] and row["polygraphy"]["returncode"] == 0:
        row["speedup"] = round(row["polygraphy"]["seconds"] / row["graphfix"]["seconds"], 2)
    if row["nodes_in"] <= check_max_nodes:
        row["max_abs_diff_vs_input"] = same_outputs(src, [p for p in (gf_out, pg_out) if os.path.exists(p)])
    return row


def versions() -> Dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("onnx", "onnxruntime", "onnx_graphsurgeon", "polygraphy", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception as exc:
            out[mod] = f"unavailable ({exc})"
    return out


def print_table(rows: List[Dict]) -> None:
    head = (f"{'size':>5} {'nodes in':>9} | {'graphfix s':>10} {'polygraphy s':>12} {'speedup':>7} | "
            f"{'gf RSS MiB':>10} {'pg RSS MiB':>10} | {'gf nodes':>8} {'pg nodes':>8} {'same ops':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        gf, pg = r["graphfix"], r["polygraphy"]
        pg_s = f"{pg['seconds']:.1f}" + ("*" if pg["returncode"] else "")
        print(f"{r['size']:>5} {r['nodes_in']:>9} | {gf['seconds']:>10.1f} {pg_s:>12} "
              f"{r.get('speedup', float('nan')):>7.2f} | {gf['max_rss_mib']:>10.0f} {pg['max_rss_mib']:>10.0f} | "
              f"{str(gf['nodes_out']):>8} {str(pg['nodes_out']):>8} {str(r['same_ops']):>8}")
    if any(r["polygraphy"]["returncode"] for r in rows):
        print("(* the command failed or timed out; see the JSON)")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1k,10k,100k", help=f"comma-separated, from {', '.join(LAYERS)}")
    parser.add_argument("--out", default="bench_fold.json", help="where to write the JSON results")
    parser.add_argument("--workdir", help="keep the models here (default: a temporary directory, removed)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per tool per size")
    parser.add_argument("--check-max-nodes", type=int, default=2000,
                        help="compare ONNX Runtime outputs for models up to this many nodes")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in LAYERS]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; known: {', '.join(LAYERS)}")
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="graphfix-bench-fold-"))
    os.makedirs(workdir, exist_ok=True)
    rows = []
    try:
        for label in sizes:
            rows.append(bench_size(label, workdir, args.timeout, args.check_max_nodes))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    result = {"machine": machine_facts(),
              "versions": versions(), "method": "each tool in its own subprocess of the same Python, run "
              "one after the other; wall time includes start-up, imports, load and save; peak memory is the "
              "child's max RSS (os.wait4)", "results": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print_table(rows)
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
