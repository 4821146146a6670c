"""Regression net: ONNX's backend node tests through graphfix, judged by their expected outputs.

Every model under onnx/backend/test/data/node (about 1,600, each with test_data_set_*/input_*.pb and
output_*.pb) is run in ONNX Runtime as shipped ("before") and after ``graphfix.fix(trt=X,
check="none")`` ("after"). The number of models whose outputs match the expected ones must not
drop; each model that matched before and not after is a graphfix bug (or needs an explanation).

    python benchmarks/node_tests_regression.py --trt 8.6 --jobs 2 --out node_regression.json
    python benchmarks/node_tests_regression.py --limit 100 --only 'reduce|split'
    python benchmarks/node_tests_regression.py --print-sample    # the sample tests/ runs

The node tests ship inside onnx wheels up to 1.19 (later wheels leave them out). They are found
in: --data DIR, $GRAPHFIX_NODE_TESTS, the installed onnx, a cache (~/.cache/graphfix), or else
fetched once into that cache with ``pip download onnx==1.19.1 --no-deps`` (the rig's onnx).
Where a pass whose output ONNX Runtime cannot run (plugin substitution) changed a model, "after"
is judged on graphfix's output without those passes (listed as judged_without_plugins).
Comparison follows ONNX's own backend runner: same shapes and dtypes, allclose(rtol=1e-3,
atol=1e-7), strings equal, sequences element by element.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Any, Dict, List, Optional, Sequence

NODE_TESTS_ONNX_VERSION = "1.19.1"
RTOL, ATOL = 1e-3, 1e-7

# Op types whose handling the passes change; the sample covers each of them: per op, two of the
# op's own tests and one other model that uses it (often an "_expanded" composite, such as the
# decomposed LayerNorm that fuse-layernorm matches).
SAMPLE_OPS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
              "Split", "Slice", "Reshape", "Expand", "Concat", "Cast", "LayerNormalization", "Where",
              "Gather", "Pad", "Resize", "Unsqueeze", "TopK", "Range")
SAMPLE_OWN, SAMPLE_OTHER = 2, 1
SAMPLE_SIZE = 60


# ---------------------------------------------------------------- finding the data

def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "graphfix", f"onnx-{NODE_TESTS_ONNX_VERSION}-node-tests")


def _valid(root: Optional[str]) -> bool:
    return bool(root) and os.path.isfile(os.path.join(root, "test_abs", "model.onnx"))


def find_node_tests(data: Optional[str] = None, download: bool = True) -> Optional[str]:
    """The node-test directory (…/backend/test/data/node), fetching it once if allowed; else None."""
    candidates = [data, os.environ.get("GRAPHFIX_NODE_TESTS")]
    try:
        import onnx
        candidates.append(os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node"))
    except ImportError:
        pass
    cached = os.path.join(_cache_dir(), "node")
    candidates.append(cached)
    for root in candidates:
        if _valid(root):
            return os.path.abspath(root)
    if data:
        raise FileNotFoundError(f"{data}: no ONNX node tests there (expected test_abs/model.onnx)")
    if not download:
        return None
    return _download(cached)


def _download(dest: str) -> Optional[str]:
    """pip download the onnx wheel that ships the node tests; unpack only that directory."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "-d", tmp, f"onnx=={NODE_TESTS_ONNX_VERSION}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = glob.glob(os.path.join(tmp, "onnx-*.whl"))
        if proc.returncode != 0 or not wheels:
            sys.stderr.write(f"could not fetch onnx=={NODE_TESTS_ONNX_VERSION}: {proc.stderr.strip()[-500:]}\n")
            return None
        prefix = "onnx/backend/test/data/node/"
        staging = tempfile.mkdtemp(prefix=".node-", dir=os.path.dirname(dest))
        with zipfile.ZipFile(wheels[0]) as z:
            for member in z.namelist():
                if member.startswith(prefix) and not member.endswith("/"):
                    target = os.path.join(staging, member[len(prefix):])
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with z.open(member) as src, open(target, "wb") as out:
                        out.write(src.read())
        try:
            os.replace(staging, dest)
        except OSError:  # another process got there first
            import shutil
            shutil.rmtree(staging, ignore_errors=True)
    return dest if _valid(dest) else None


def list_models(root: str) -> List[str]:
    return sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "model.onnx")))


def model_ops(root: str, name: str) -> List[str]:
    import onnx
    model = onnx.load(os.path.join(root, name, "model.onnx"), load_external_data=False)
    return sorted({n.op_type for n in model.graph.node})


def _spread(pool: List[str], k: int) -> List[str]:
    """k names evenly spaced over the sorted pool, at the centres of k equal slices (the first and
    last names by alphabet are often exotic dtypes that ONNX Runtime cannot feed)."""
    k = min(k, len(pool))
    return [pool[(2 * i + 1) * len(pool) // (2 * k)] for i in range(k)]


def _names_op(name: str, op: str) -> bool:
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()   # ReduceMean -> reduce_mean, TopK -> top_k
    return re.search(rf"(^test_|_){snake}(_|$)", name) is not None


def sample_models(root: str, ops: Sequence[str] = SAMPLE_OPS, own: int = SAMPLE_OWN,
                  other: int = SAMPLE_OTHER, size: int = SAMPLE_SIZE) -> List[str]:
    """The fixed sample: for each op in turn, `own` of its own tests (the snake_case op name is a word
    of the test name: test_reduce_mean_*, test_edge_pad) and
    `other` of the remaining models that use it, evenly spaced by name, skipping models already
    taken; then sorted. Depends only on the node-test directory's contents."""
    names = list_models(root)
    uses = {n: set(model_ops(root, n)) for n in names}
    chosen: List[str] = []
    for op in ops:
        users = [n for n in names if op in uses[n] and n not in chosen]
        own_pool = [n for n in users if _names_op(n, op)]
        other_pool = [n for n in users if not _names_op(n, op)]
        for pick in _spread(own_pool, own) + _spread(other_pool, other):
            if pick not in chosen and len(chosen) < size:
                chosen.append(pick)
    while len(chosen) < size:  # overlaps left room: one more own test per op, round robin
        before = len(chosen)
        for op in ops:
            pool = [n for n in names if op in uses[n] and _names_op(n, op) and n not in chosen]
            if pool and len(chosen) < size:
                chosen.append(_spread(pool, 1)[0])
        if len(chosen) == before:
            break
    return sorted(chosen)


# ---------------------------------------------------------------- one model

def _load_value(path: str, type_proto):
    import onnx
    from onnx import numpy_helper
    with open(path, "rb") as f:
        data = f.read()
    if type_proto.HasField("sequence_type"):
        seq = onnx.SequenceProto()
        seq.ParseFromString(data)
        return numpy_helper.to_list(seq)
    if type_proto.HasField("optional_type"):
        opt = onnx.OptionalProto()
        opt.ParseFromString(data)
        return numpy_helper.to_optional(opt)
    tensor = onnx.TensorProto()
    tensor.ParseFromString(data)
    return numpy_helper.to_array(tensor)


def load_data_sets(model, case_dir: str) -> List[Dict[str, Any]]:
    """[{"inputs": {name: value}, "expected": [value, ...]}] per test_data_set_* (sorted)."""
    sets = []
    for ds in sorted(glob.glob(os.path.join(case_dir, "test_data_set_*"))):
        n_in = len(glob.glob(os.path.join(ds, "input_*.pb")))
        n_out = len(glob.glob(os.path.join(ds, "output_*.pb")))
        inputs = {model.graph.input[i].name: _load_value(os.path.join(ds, f"input_{i}.pb"),
                                                         model.graph.input[i].type) for i in range(n_in)}
        expected = [_load_value(os.path.join(ds, f"output_{i}.pb"), model.graph.output[i].type)
                    for i in range(n_out)]
        sets.append({"inputs": inputs, "expected": expected})
    return sets


def mismatch(expected: Sequence[Any], got: Sequence[Any], rtol: float = RTOL, atol: float = ATOL,
             where: str = "output") -> Optional[str]:
    """None when `got` matches `expected` the way ONNX's backend runner judges it; else why not."""
    import numpy as np
    if len(got) != len(expected):
        return f"{len(got)} outputs, expected {len(expected)}"
    for i, (ref, out) in enumerate(zip(expected, got)):
        label = f"{where} {i}"
        if isinstance(ref, (list, tuple)) or isinstance(out, (list, tuple)):
            if not isinstance(ref, (list, tuple)) or not isinstance(out, (list, tuple)):
                return f"{label}: {type(out).__name__}, expected {type(ref).__name__}"
            why = mismatch(ref, out, rtol, atol, where=label)
            if why:
                return why
            continue
        if ref is None or out is None:
            if (ref is None) != (out is None):
                return f"{label}: {'None' if out is None else 'a value'}, expected {'None' if ref is None else 'a value'}"
            continue
        out, ref = np.asarray(out), np.asarray(ref)
        if out.shape != ref.shape:
            return f"{label}: shape {out.shape}, expected {ref.shape}"
        if ref.dtype == object:
            if not np.array_equal(out, ref):
                return f"{label}: strings differ"
            continue
        if out.dtype != ref.dtype:
            return f"{label}: dtype {out.dtype}, expected {ref.dtype}"
        r = rtol
        if out.dtype.name == "bfloat16":
            r, out, ref = max(rtol, 2 ** -6), out.astype(np.float32), ref.astype(np.float32)
        elif out.dtype.kind not in "biufc":  # float8/int4 from ml_dtypes: compare as float32
            out, ref = out.astype(np.float32), ref.astype(np.float32)
        try:
            np.testing.assert_allclose(out, ref, rtol=r, atol=atol)
        except AssertionError:
            diff = np.abs(out.astype(np.float64) - ref.astype(np.float64)) if out.dtype.kind != "b" else out != ref
            return f"{label}: values differ (max abs {float(np.nanmax(diff)) if diff.size else 0:.3g})"
    return None


def _ort_session(model_bytes: bytes):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: " + " ".join(str(exc).split())
    return text[:limit] + ("..." if len(text) > limit else "")


def run_ort_sets(model_bytes: bytes, data_sets) -> Dict[str, Any]:
    """{"outputs": [[...] per set] or None, "error": str or None, "seconds": float}."""
    t0 = time.perf_counter()
    try:
        sess = _ort_session(model_bytes)
        names = [o.name for o in sess.get_outputs()]
        outs = [sess.run(names, ds["inputs"]) for ds in data_sets]
        return {"outputs": outs, "error": None, "seconds": time.perf_counter() - t0}
    except Exception as exc:
        return {"outputs": None, "error": _one_line(exc), "seconds": time.perf_counter() - t0}


def _verdict(run: Dict[str, Any], data_sets) -> str:
    if run["error"]:
        return "error: " + run["error"]
    for i, (ds, got) in enumerate(zip(data_sets, run["outputs"])):
        why = mismatch(ds["expected"], got)
        if why:
            return f"mismatch: set {i}: {why}"
    return "match"


def run_case(root: str, name: str, trt: str = "8.6") -> Dict[str, Any]:
    """Everything about one node test: ORT before, graphfix, ORT after, pass statuses, timings."""
    import onnx
    import graphfix
    from graphfix.errors import GraphfixError

    rec: Dict[str, Any] = {"name": name, "ops": [], "before": None, "after": None, "fix": None,
                           "changed": False, "passes": {}, "pass_problems": [], "same_as_original": None,
                           "seconds": {}}
    case_dir = os.path.join(root, name)
    try:
        model = onnx.load(os.path.join(case_dir, "model.onnx"))
        rec["ops"] = sorted({n.op_type for n in model.graph.node})
        data_sets = load_data_sets(model, case_dir)
    except Exception as exc:
        rec["before"] = rec["after"] = "unloadable: " + _one_line(exc)
        return rec
    original = model.SerializeToString()
    before = run_ort_sets(original, data_sets)
    rec["before"] = _verdict(before, data_sets)
    rec["seconds"]["ort_before"] = round(before["seconds"], 4)

    t0 = time.perf_counter()
    try:
        fixed, report = graphfix.fix(model, trt=trt, check="none")
        rec["fix"] = "ok"
    except GraphfixError as exc:
        rec["fix"] = "rejected: " + _one_line(exc)
    except Exception as exc:  # a crash outside the passes (they are caught by the pipeline)
        rec["fix"] = "crash: " + _one_line(exc, 500)
    rec["seconds"]["fix"] = round(time.perf_counter() - t0, 4)
    if rec["fix"] != "ok":
        rec["after"] = rec["fix"]
        return rec
    rec["changed"] = report.changed
    for p in report.passes:
        rec["passes"][p.name] = p.status
        if p.counts or p.warnings:
            rec.setdefault("counts", {})[p.name] = dict(p.counts, warnings=len(p.warnings))
        if p.status in ("failed", "rolled-back"):
            rec["pass_problems"].append({"pass": p.name, "status": p.status, "error": p.error})
    # ONNX Runtime cannot run plugin ops: judge the model graphfix makes without those passes
    unrunnable = [p.name for p in report.passes if p.status == "applied" and not _ort_checkable(p.name)]
    if unrunnable:
        rec["after_without"] = unrunnable
        fixed, _ = graphfix.fix(model, trt=trt, check="none", skip=unrunnable)
    after = run_ort_sets(fixed.SerializeToString(), data_sets)
    rec["after"] = _verdict(after, data_sets)
    rec["seconds"]["ort_after"] = round(after["seconds"], 4)
    if before["outputs"] is not None and after["outputs"] is not None:
        diffs = [mismatch(b, a) for b, a in zip(before["outputs"], after["outputs"])]
        rec["same_as_original"] = not any(diffs)
        if any(diffs):
            rec["differs_from_original"] = next(d for d in diffs if d)
    return rec


def _ort_checkable(pass_name: str) -> bool:
    from graphfix.registry import registered
    cls = registered().get(pass_name)
    return cls is None or cls.info.ort_checkable


# ---------------------------------------------------------------- many models

def _worker(args):
    root, name, trt = args
    try:
        return run_case(root, name, trt)
    except BaseException as exc:  # keep the run going whatever one model does
        return {"name": name, "before": None, "after": "crash: " + _one_line(exc, 500), "fix": "crash",
                "passes": {}, "pass_problems": [], "seconds": {}}


def run_all(root: str, names: Sequence[str], trt: str, jobs: int = 1, timeout: float = 300.0,
            progress: bool = True) -> Dict[str, Dict[str, Any]]:
    results: Dict[str, Dict[str, Any]] = {}
    tasks = [(root, n, trt) for n in names]
    t0 = time.perf_counter()

    def note(i, rec):
        results[rec["name"]] = rec
        if progress and (i % 50 == 0 or i == len(tasks)):
            sys.stderr.write(f"  {i}/{len(tasks)} models, {time.perf_counter() - t0:.0f}s\n")

    if jobs <= 1:
        for i, task in enumerate(tasks, 1):
            note(i, _worker(task))
        return results
    import multiprocessing
    with multiprocessing.Pool(processes=jobs, maxtasksperchild=100) as pool:
        pending = [(t[1], pool.apply_async(_worker, (t,))) for t in tasks]
        for i, (name, fut) in enumerate(pending, 1):
            try:
                rec = fut.get(timeout=timeout)
            except multiprocessing.TimeoutError:  # hung, or the worker died (segfault)
                rec = {"name": name, "before": None, "after": f"crash: no result within {timeout:.0f}s "
                       "(timeout or the worker died)", "fix": "crash", "passes": {}, "pass_problems": [],
                       "seconds": {}}
            note(i, rec)
        pool.terminate()
    return results


def summarize(results: Dict[str, Dict[str, Any]], trt: str, seconds: float) -> Dict[str, Any]:
    recs = [results[n] for n in sorted(results)]
    match_before = [r["name"] for r in recs if r["before"] == "match"]
    match_after = [r["name"] for r in recs if r["after"] == "match"]
    regressions = sorted(set(match_before) - set(match_after))
    improvements = sorted(set(match_after) - set(match_before))
    per_pass: Dict[str, Dict[str, int]] = {}
    for r in recs:
        for p, status in r.get("passes", {}).items():
            per_pass.setdefault(p, {}).setdefault(status, 0)
            per_pass[p][status] += 1
    pass_sets = sorted({",".join(r.get("passes", {})) for r in recs if r.get("passes")})
    fix_times = sorted(((r["seconds"].get("fix", 0.0), r["name"]) for r in recs), reverse=True)
    return {
        "trt": trt,
        "models": len(recs),
        "match_before": len(match_before),
        "match_after": len(match_after),
        "regressions": regressions,
        "improvements": improvements,
        "changed_by_graphfix": sum(1 for r in recs if r.get("changed")),
        "judged_without_plugins": sorted(r["name"] for r in recs if r.get("after_without")),
        "differs_from_original": sorted(r["name"] for r in recs if r.get("same_as_original") is False),
        "rejected": sorted(r["name"] for r in recs if str(r.get("fix") or "").startswith("rejected")),
        "crashes": sorted(r["name"] for r in recs if str(r.get("fix") or "").startswith("crash")),
        "pass_problems": sorted(({"model": r["name"], **p} for r in recs for p in r.get("pass_problems", [])),
                                key=lambda d: (d["pass"], d["model"])),
        "pass_statuses": {p: dict(sorted(s.items())) for p, s in sorted(per_pass.items())},
        # more than one: the registered passes changed while the run went on (rerun it)
        "pass_sets": pass_sets,
        "seconds": {"wall": round(seconds, 1),
                    "fix_total": round(sum(t for t, _ in fix_times), 2),
                    "fix_median": round(statistics.median([t for t, _ in fix_times]), 4) if fix_times else 0,
                    "fix_slowest": [{"model": n, "seconds": t} for t, n in fix_times[:5]]},
    }


def print_summary(s: Dict[str, Any], out=sys.stdout) -> None:
    w = out.write
    w(f"ONNX node tests through graphfix (TensorRT {s['trt']}): {s['models']} models\n")
    w(f"  match expected outputs in ONNX Runtime: before {s['match_before']}, after {s['match_after']}\n")
    w(f"  changed by graphfix: {s['changed_by_graphfix']}; rejected: {len(s['rejected'])}; "
      f"crashes: {len(s['crashes'])}\n")
    for label in ("regressions", "improvements", "differs_from_original", "rejected", "crashes",
                  "judged_without_plugins"):
        if s[label]:
            w(f"  {label} ({len(s[label])}): {', '.join(s[label][:40])}{' ...' if len(s[label]) > 40 else ''}\n")
    for p in s["pass_problems"]:
        w(f"  {p['status']:<11} {p['pass']:<15} {p['model']}: {(p['error'] or '')[:200]}\n")
    for name, statuses in s["pass_statuses"].items():
        w(f"  pass {name:<15} " + ", ".join(f"{k} {v}" for k, v in statuses.items()) + "\n")
    if len(s["pass_sets"]) > 1:
        w(f"  WARNING: the registered passes changed during the run ({len(s['pass_sets'])} sets); rerun it\n")
    t = s["seconds"]
    w(f"  time: {t['wall']}s wall, graphfix {t['fix_total']}s total, median {t['fix_median']}s; slowest: "
      + ", ".join(f"{d['model']} {d['seconds']:.2f}s" for d in t["fix_slowest"]) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="ONNX backend node tests before/after graphfix, in ONNX Runtime")
    p.add_argument("--trt", default="8.6", help="target TensorRT version for graphfix (default 8.6)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--limit", type=int, help="only the first N models (by name, after --only)")
    p.add_argument("--only", help="regular expression on model names")
    p.add_argument("--sample", action="store_true", help="only the fixed sample that tests/ runs")
    p.add_argument("--data", help="node test directory (default: found or fetched, see module docstring)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per model before it counts as a crash")
    p.add_argument("--out", default="node_regression.json", help="JSON output (per-model details + summary)")
    p.add_argument("--print-sample", action="store_true", help="print the fixed sample and exit")
    args = p.parse_args(argv)

    root = find_node_tests(args.data)
    if root is None:
        sys.stderr.write("ONNX node tests not found and could not be fetched\n")
        return 2
    if args.print_sample:
        print("\n".join(sample_models(root)))
        return 0
    names = sample_models(root) if args.sample else list_models(root)
    if args.only:
        names = [n for n in names if re.search(args.only, n)]
    if args.limit:
        names = names[:args.limit]
    sys.stderr.write(f"{len(names)} node tests from {root}, TensorRT {args.trt}, {args.jobs} job(s)\n")
    t0 = time.perf_counter()
    results = run_all(root, names, args.trt, jobs=args.jobs, timeout=args.timeout)
    summary = summarize(results, args.trt, time.perf_counter() - t0)
    import graphfix
    from graphfix.registry import ordered_passes
    doc = {"schema": "graphfix.node-regression/1", "data": root, "graphfix": graphfix.__version__,
           "passes": [c.info.name for c in ordered_passes()], "versions": _versions(),
           "summary": summary, "models": [results[n] for n in sorted(results)]}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1, default=str)
        f.write("\n")
    print_summary(summary)
    sys.stdout.write(f"  details: {args.out}\n")
    return 1 if summary["regressions"] or summary["crashes"] else 0


def _versions() -> Dict[str, Optional[str]]:
    out = {}
    for mod in ("onnx", "onnxruntime", "onnx_graphsurgeon", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    return out


if __name__ == "__main__":
    sys.exit(main())
