"""Write a copy of the ONNX backend node tests with each model.onnx replaced by `graphfix fix`'s output.

The copy has the same layout (model.onnx + test_data_set_*), so any harness that reads the node
tests (node_tests_agreement.py --node-dir, node_tests_regression.py) runs on the fixed models and
its numbers compare raw vs fixed directly. Models graphfix cannot fix are copied unchanged and
listed in DIR/fix_summary.json.

    python benchmarks/fix_node_tests.py --trt 8.6 --out-dir /tmp/node_fixed [--node-dir DIR] [--int32-io]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor


def _fix_one(job):
    src_dir, dst_dir, trt, int32_io = job
    import graphfix
    from graphfix.model_io import save_model
    from graphfix.pass_api import PassContext
    shutil.copytree(src_dir, dst_dir, dirs_exist_ok=True)
    t0 = time.perf_counter()
    try:
        fixed, report = graphfix.fix(os.path.join(src_dir, "model.onnx"), trt=trt, check="none",
                                     context=PassContext(int32_io=int32_io))
    except graphfix.GraphfixError as exc:
        return os.path.basename(src_dir), {"status": "input-error", "error": str(exc)}
    save_model(fixed, os.path.join(dst_dir, "model.onnx"), overwrite_input=True)
    applied = [p.name for p in report.passes if p.status == "applied"]
    bad = {p.name: p.error for p in report.passes if p.status in ("failed", "rolled-back")}
    return os.path.basename(src_dir), {"status": "fixed" if applied else "unchanged", "applied": applied,
                                       "failed": bad, "seconds": round(time.perf_counter() - t0, 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trt", default="8.6")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--node-dir", help="default: the installed onnx package's node tests")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    p.add_argument("--int32-io", action="store_true", help="as graphfix fix --int32-io (the harnesses feed "
                   "each input in the engine's type)")
    args = p.parse_args(argv)
    if args.node_dir is None:
        import onnx
        args.node_dir = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node")
    names = sorted(d for d in os.listdir(args.node_dir)
                   if os.path.isfile(os.path.join(args.node_dir, d, "model.onnx")))
    os.makedirs(args.out_dir, exist_ok=True)
    jobs = [(os.path.join(args.node_dir, n), os.path.join(args.out_dir, n), args.trt, args.int32_io) for n in names]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = dict(pool.map(_fix_one, jobs, chunksize=8))
    counts = {}
    for rec in results.values():
        counts[rec["status"]] = counts.get(rec["status"], 0) + 1
    failed = sum(1 for r in results.values() if r.get("failed"))
    summary = {"trt": args.trt, "int32_io": args.int32_io, "models": len(names), "counts": counts, "with_failed_pass": failed,
               "seconds": round(time.perf_counter() - t0, 1), "models_detail": results}
    with open(os.path.join(args.out_dir, "fix_summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    print(json.dumps({k: v for k, v in summary.items() if k != "models_detail"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
