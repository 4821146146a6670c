"""Benchmark: graphfix fix on long chains, stored sorted and in reverse order.

A script, not a test:

    python benchmarks/bench_scale.py                          # 2k, 10k, 20k nodes; both orders
    python benchmarks/bench_scale.py --sizes 2k,10k --check none --out bench_scale.json

Each case builds graphfix.fixtures.scale.long_chain(n) (Cast -> Add(INT64 constant) -> Neg ... ->
Cast: one INT64 island as long as the graph), then runs graphfix.fix(model, trt="8.6", check=...)
in its own Python subprocess and prints wall time (fix alone, model in memory) and the child's
peak resident set size (os.wait4), with per-pass seconds for the slowest passes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from _measure import run_child  # the script's folder is on sys.path

SIZES = {"2k": 2000, "5k": 5000, "10k": 10000, "20k": 20000}

CHILD = r"""
import json, sys, time
from graphfix.fixtures.scale import long_chain
import graphfix
nodes, order, check, side = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
model = long_chain(nodes, reverse=order == "reversed")
t0 = time.perf_counter()
fixed, report = graphfix.fix(model, trt="8.6", check=check)
seconds = time.perf_counter() - t0
json.dump({"seconds": round(seconds, 2), "nodes_out": len(fixed.graph.node),
           "failed": [p.name for p in report.passes if p.status in ("failed", "rolled-back")],
           "check_passed": [c.get("passed") for c in report.checks],
           "passes": {p.name: round(p.seconds, 2) for p in report.passes}}, open(side, "w"))
"""


def run_case(nodes: int, order: str, check: str, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as work:
        side = os.path.join(work, "side.json")
        child = run_child([sys.executable, "-c", CHILD, str(nodes), order, check, side], timeout, work)
        if child["timed_out"]:
            return {"nodes": nodes, "order": order, "timed_out": timeout}
        out = {"nodes": nodes, "order": order, "wall_seconds": child["seconds"],
               "peak_rss_mib": child["max_rss_mib"], "exit": child["returncode"]}
        if os.path.exists(side):
            out.update(json.load(open(side)))
        return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2k,10k,20k", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--orders", default="reversed,sorted")
    parser.add_argument("--check", default="ort", choices=("ort", "none"))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per case")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = []
    print(f"{'nodes':>7} {'order':>9} {'fix s':>8} {'peak RSS MiB':>13}  slowest passes")
    for size in args.sizes.split(","):
        for order in args.orders.split(","):
            r = run_case(SIZES[size], order, args.check, args.timeout)
            results.append(r)
            if "timed_out" in r:
                print(f"{r['nodes']:>7} {order:>9} {'> %g' % args.timeout:>8}")
                continue
            slow = sorted(r.get("passes", {}).items(), key=lambda kv: -kv[1])[:3]
            print(f"{r['nodes']:>7} {order:>9} {r.get('seconds', float('nan')):>8} {r['peak_rss_mib']:>13}  "
                  + ", ".join(f"{k} {v}" for k, v in slow) + (f"  FAILED {r['failed']}" if r.get("failed") else ""),
                  flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"check": args.check, "python": sys.version.split()[0], "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
