"""How often `graphfix check` agrees with real TensorRT on the ONNX backend node tests.

For each node test shipped in the ``onnx`` package (onnx/backend/test/data/node/<test>/model.onnx
with test_data_set_0/input_*.pb and output_*.pb), the static verdict of ``graphfix check --trt T``
(clean, or not) is compared with what TensorRT did: "parsed, built, ran and matched the expected
outputs" versus anything else. The target is >= 90 % agreement.

Static side only (any machine, seconds):

    python benchmarks/node_tests_agreement.py --trt 8.6 [--node-dir DIR] [--out FILE]

Real side (the GPU rig, TensorRT 8.6): each model runs in a child process (parsers segfault on some
node tests), several children at a time, within a time budget; results accumulate in --out, so
re-running the same command continues where the last one stopped:

    python benchmarks/node_tests_agreement.py --trt 8.6 --trt-real --workers 6 \
        --time-budget 540 --timeout-per-model 60 --out $OUT/node_tests_8.6.json

The build uses builder optimization level 0 and only the EDGE_MASK_CONVOLUTIONS and
JIT_CONVOLUTIONS tactic sources (cuBLAS/cuDNN are stubs on the rig), TF32 off, FP32 (FP16 I/O
stays FP16), INT8 on only for graphs with Q/DQ. Outputs are compared with rtol/atol 1e-3/1e-4
(FP16: 1e-2/1e-3), integers and bools exactly, NaN equal to NaN.

Without --trt-real, an --out file that already holds TensorRT results is re-scored with the current
profile: edit the profile, re-run this (seconds), and see the agreement move.

TensorRT-RTX (``--backend rtx``, any CPU, the `graphfix[rtx]` wheels): the 11.x parser and an
ahead-of-time build with min = opt = max = the test data's shapes; nothing runs. "ok" is then
"parsed and built", and it is compared with check's error findings only (a wrong result cannot show
without a run):

    nice -n 10 python benchmarks/node_tests_agreement.py --trt 11 --backend rtx --trt-real --workers 1 \
        --time-budget 3600 --out benchmarks/results/node_tests_rtx_raw.json

Held out: the tests whose op family (the test name's first word, e.g. "reduce" for
test_reduce_sum_*) hashes to 0 mod 5 (``held_out``) are scored apart; profile corrections are made
from the other tests only, so the held-out agreement is an out-of-sample figure. ``--baseline`` names
the raw run when scoring a fixed copy (fix_node_tests.py): tests that parse and build raw but not
fixed are listed as drops.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter, deque
from typing import Dict, List, Optional, Tuple

SCHEMA = "graphfix.node-tests-agreement/1"
TRT_FIELDS = ("parsed", "built", "ran", "matched", "crashed", "timed_out")
TACTIC_SOURCES = ("EDGE_MASK_CONVOLUTIONS", "JIT_CONVOLUTIONS")
HOLDOUT_MODULUS = 5


def op_family(name: str) -> str:
    """test_reduce_sum_keepdims_expanded -> 'reduce': tests of one op family stay on one side."""
    return re.sub(r"^test_", "", name).split("_")[0]


def held_out(name: str) -> bool:
    return zlib.crc32(op_family(name).encode()) % HOLDOUT_MODULUS == 0


# ----------------------------------------------------------------------------------------------------
# Node tests and the static verdict

def default_node_dir() -> str:
    import onnx
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node")


def list_tests(node_dir: str, pattern: Optional[str]) -> List[str]:
    names = sorted(d for d in os.listdir(node_dir) if os.path.isfile(os.path.join(node_dir, d, "model.onnx")))
    if pattern:
        rx = re.compile(pattern)
        names = [n for n in names if rx.search(n)]
    return names


def _import_check_model():
    try:
        from graphfix.diagnosis import check_model
    except ImportError:  # not installed here: use the checkout this script lives in
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from graphfix.diagnosis import check_model
    return check_model


def static_verdicts(node_dir: str, names: List[str], trt: str) -> Dict[str, dict]:
    check_model = _import_check_model()
    out = {}
    for name in names:
        try:
            result = check_model(os.path.join(node_dir, name, "model.onnx"), trt=trt)
        except Exception as exc:  # a model graphfix cannot read counts as "not clean", with the reason
            out[name] = {"check_clean": False, "check_problems": [f"check-failed: {type(exc).__name__}: {exc}"]}
            continue
        problems = sorted({f"{f.severity}:{f.rule}:{f.op or '-'}" for f in result.findings
                           if f.severity != "warning"})
        out[name] = {"check_clean": result.clean, "check_problems": problems,
                     "check_no_errors": not any(f.severity == "error" for f in result.findings)}
    return out


# ----------------------------------------------------------------------------------------------------
# Child process: parse, build, run and compare one model after another

def _load_pb(path: str):
    import onnx
    from onnx import numpy_helper
    tensor = onnx.TensorProto()
    with open(path, "rb") as f:
        tensor.ParseFromString(f.read())
    return tensor.name, numpy_helper.to_array(tensor)


def _load_case(model_dir: str):
    """(model path, graph inputs {name: array}, expected outputs [(name, array)]) from test_data_set_0."""
    import onnx
    model_path = os.path.join(model_dir, "model.onnx")
    model = onnx.load(model_path, load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    in_names = [i.name for i in model.graph.input if i.name not in inits]
    out_names = [o.name for o in model.graph.output]
    data = os.path.join(model_dir, "test_data_set_0")
    feeds, expected = {}, []
    for k, path in enumerate(sorted(glob.glob(os.path.join(data, "input_*.pb")),
                                    key=lambda p: int(re.findall(r"\d+", os.path.basename(p))[0]))):
        name, arr = _load_pb(path)
        feeds[name or in_names[k]] = arr
    for k, path in enumerate(sorted(glob.glob(os.path.join(data, "output_*.pb")),
                                    key=lambda p: int(re.findall(r"\d+", os.path.basename(p))[0]))):
        name, arr = _load_pb(path)
        expected.append((name or out_names[k], arr))
    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    return model_path, feeds, expected, has_qdq


def _close(actual, expected) -> Tuple[bool, Optional[float], str]:
    import numpy as np
    if actual.shape != expected.shape:
        if actual.size == expected.size and actual.size <= 1:
            actual = actual.reshape(expected.shape)
        else:
            return False, None, f"shape {list(actual.shape)} != expected {list(expected.shape)}"
    if expected.dtype == np.bool_ or actual.dtype == np.bool_:
        same = np.array_equal(actual.astype(np.bool_), expected.astype(np.bool_))
        return same, None, "" if same else "bool values differ"
    if np.issubdtype(expected.dtype, np.integer):
        diff = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
        worst = float(diff.max()) if diff.size else 0.0
        return worst == 0, worst, "" if worst == 0 else f"integer values differ (max {worst:g})"
    rtol, atol = (1e-2, 1e-3) if expected.dtype == np.float16 else (1e-3, 1e-4)
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    ok = np.allclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
    finite = np.isfinite(a) & np.isfinite(e)
    worst = float(np.max(np.abs(a - e)[finite])) if np.any(finite) else 0.0
    return bool(ok), worst, "" if ok else f"max abs error {worst:.3g}"


def _child_one(trt, logger, model_dir: str, keep: list, backend=None) -> dict:
    import numpy as np
    rec = {f: False for f in TRT_FIELDS}
    rec.update(errors=[], detail="")
    started = time.perf_counter()
    try:
        model_path, feeds, expected, has_qdq = _load_case(model_dir)
    except Exception as exc:
        rec["detail"] = f"test data not loadable as tensors: {type(exc).__name__}: {exc}"
        return rec
    builder = trt.Builder(logger)
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)   # gone in 10.x and RTX
    network = builder.create_network(0 if explicit is None else 1 << int(explicit))
    parser = trt.OnnxParser(network, logger)
    keep.extend([builder, network, parser])
    logger.records.clear()
    ok = parser.parse_from_file(model_path)
    rec["errors"] = [str(parser.get_error(i).desc())[:300] for i in range(parser.num_errors)][:5]
    rec["parsed"] = bool(ok) and parser.num_errors == 0
    if not rec["parsed"]:
        rec["seconds"] = time.perf_counter() - started
        return rec
    config = builder.create_builder_config()
    keep.append(config)
    if hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = 0
    mask = 0
    for name in TACTIC_SOURCES:
        if hasattr(trt.TacticSource, name):
            mask |= 1 << int(getattr(trt.TacticSource, name))
    config.set_tactic_sources(mask)
    config.clear_flag(trt.BuilderFlag.TF32)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    if has_qdq and hasattr(trt.BuilderFlag, "INT8"):   # strongly typed RTX networks have no INT8 flag
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        if inp.name not in feeds:
            rec["detail"] = f"network input {inp.name} has no test data"
            return rec
        arr = np.asarray(feeds[inp.name])
        shape = tuple(arr.shape)
        profile.set_shape(inp.name, shape, shape, shape)
        if inp.is_shape_tensor:
            values = [int(v) for v in arr.reshape(-1)]
            profile.set_shape_input(inp.name, values, values, values)
    config.add_optimization_profile(profile)
    logger.records.clear()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        rec["detail"] = "build failed: " + " | ".join(logger.errors()[-3:])[:500]
        rec["seconds"] = time.perf_counter() - started
        return rec
    rec["built"] = True
    if backend is not None and not backend.runs_engines:   # TensorRT-RTX: ahead-of-time build, no run
        rec["seconds"] = time.perf_counter() - started
        return rec
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan)
    keep.extend([runtime, engine])
    if engine is None:
        rec["detail"] = "engine deserialization failed"
        return rec
    from polygraphy.backend.trt import TrtRunner
    from graphfix.checks.tensorrt.worker import contiguous, engine_input_source
    try:
        with TrtRunner(engine) as runner:
            meta = runner.get_input_metadata()
            feed = {}
            for name in meta.keys():
                dtype = meta[name].dtype
                try:
                    dtype = np.dtype(dtype)
                except TypeError:
                    from polygraphy.datatype import DataType
                    dtype = DataType.to_dtype(DataType.from_dtype(dtype), "numpy")
                source = engine_input_source(name, feeds)
                if source is None:
                    raise RuntimeError(f"network input '{name}' matches no ONNX input")
                feed[name] = contiguous(np.asarray(feeds[source]).astype(dtype))
            outputs = runner.infer(feed)
            got = {k: np.array(v, copy=True) for k, v in outputs.items()}
    except Exception as exc:
        rec["detail"] = "run failed: " + " ".join(f"{type(exc).__name__}: {exc}".split())[:400]
        if logger.errors():
            rec["detail"] += " | " + " | ".join(logger.errors()[-2:])[:300]
        rec["seconds"] = time.perf_counter() - started
        return rec
    rec["ran"] = True
    mismatches, worst = [], 0.0
    for name, exp in expected:
        if name not in got:
            mismatches.append(f"{name}: missing from the engine outputs")
            continue
        same, err, why = _close(got[name], np.asarray(exp))
        worst = max(worst, err or 0.0)
        if not same:
            mismatches.append(f"{name}: {why}")
    rec["matched"] = not mismatches
    rec["max_abs_err"] = worst
    rec["detail"] = "; ".join(mismatches)[:500]
    rec["seconds"] = time.perf_counter() - started
    return rec


def child_main(job_path: str, progress_path: str) -> None:
    with open(job_path) as f:
        job = json.load(f)
    out = open(progress_path, "a", buffering=1)
    from graphfix.checks.tensorrt.backends import get_backend
    backend = get_backend(job.get("backend"))
    trt = backend.import_module()

    class Recorder(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.records = []

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.records.append(str(msg))

        def errors(self):
            return list(self.records)

    logger = Recorder()
    import importlib
    importlib.import_module("polygraphy.backend.trt.util").TRT_LOGGER = logger
    trt.init_libnvinfer_plugins(logger, "")
    out.write(json.dumps({"event": "hello", "trt_version": trt.__version__}) + "\n")
    keep: list = []   # TensorRT objects live until exit: teardown of some of them crashes 8.6
    for name in job["models"]:
        out.write(json.dumps({"event": "start", "name": name}) + "\n")
        try:
            rec = _child_one(trt, logger, os.path.join(job["node_dir"], name), keep, backend)
        except Exception as exc:
            rec = {f: False for f in TRT_FIELDS}
            rec.update(errors=[], detail=f"harness error: {type(exc).__name__}: {exc}"[:500])
        out.write(json.dumps({"event": "result", "name": name, "record": rec}) + "\n")
    out.flush()
    os._exit(0)


# ----------------------------------------------------------------------------------------------------
# Parent: run children in parallel, within a budget, resumable

class RealRunner:
    def __init__(self, node_dir: str, timeout: float, deadline: float, on_result, backend: str = "trt"):
        self.node_dir = node_dir
        self.backend = backend
        self.timeout = timeout
        self.deadline = deadline
        self.on_result = on_result
        self.trt_version = None
        self.tmp = tempfile.mkdtemp(prefix="graphfix-agree-")

    def run_chunk(self, models: List[str], wid: int) -> None:
        remaining = list(models)
        while remaining and time.time() < self.deadline:
            done = self._child(remaining, wid)
            remaining = [m for m in remaining if m not in done]

    def _child(self, models: List[str], wid: int) -> set:
        job = os.path.join(self.tmp, f"job{wid}.json")
        progress = os.path.join(self.tmp, f"progress{wid}.jsonl")
        with open(job, "w") as f:
            json.dump({"node_dir": self.node_dir, "models": models, "backend": self.backend}, f)
        open(progress, "w").close()
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", job, progress],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        done, current, current_start, offset = set(), None, time.time(), 0
        timed_out = False
        while True:
            finished = proc.poll() is not None
            with open(progress) as f:
                f.seek(offset)
                chunk = f.read()
            complete = chunk[:chunk.rfind("\n") + 1] if "\n" in chunk else ""
            offset += len(complete)
            for line in complete.splitlines():
                ev = json.loads(line)
                if ev["event"] == "hello":
                    self.trt_version = ev["trt_version"]
                elif ev["event"] == "start":
                    current, current_start = ev["name"], time.time()
                elif ev["event"] == "result":
                    done.add(ev["name"])
                    self.on_result(ev["name"], ev["record"])
                    current = None
            if finished:
                break
            if current is not None and time.time() - current_start > self.timeout:
                timed_out = True
                self._kill(proc)
                continue
            if time.time() > self.deadline:
                self._kill(proc)   # the model in flight is not recorded: the next run redoes it
                return done
            time.sleep(0.2)
        if current is not None:   # started, never finished: a crash or our timeout
            rec = {f: False for f in TRT_FIELDS}
            rec.update(errors=[], seconds=time.time() - current_start)
            if timed_out:
                rec.update(timed_out=True, detail=f"timed out after {self.timeout:.0f}s")
            else:
                code = proc.returncode
                sig = signal.Signals(-code).name if code is not None and code < 0 else f"exit {code}"
                rec.update(crashed=True, detail=f"TensorRT crashed ({sig})")
            done.add(current)
            self.on_result(current, rec)
        return done

    @staticmethod
    def _kill(proc) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def run_real(node_dir: str, names: List[str], args, on_result) -> Optional[str]:
    deadline = time.time() + args.time_budget
    runner = RealRunner(node_dir, args.timeout_per_model, deadline, on_result, args.backend)
    chunks = deque(names[i:i + args.chunk] for i in range(0, len(names), args.chunk))
    lock = threading.Lock()

    def worker(wid: int) -> None:
        while time.time() < deadline:
            with lock:
                if not chunks:
                    return
                chunk = chunks.popleft()
            runner.run_chunk(chunk, wid)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(max(1, args.workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return runner.trt_version


# ----------------------------------------------------------------------------------------------------
# Scoring and output

def trt_ok(rec: dict, build_only: bool = False) -> bool:
    if build_only:
        return bool(rec.get("parsed") and rec.get("built"))
    return bool(rec.get("parsed") and rec.get("built") and rec.get("ran") and rec.get("matched"))


def check_says_ok(rec: dict, build_only: bool = False) -> bool:
    """check's verdict: clean (no error, no wrong result), or for build-only backends: no error finding."""
    if build_only:
        return bool(rec.get("check_no_errors", rec.get("check_clean")))
    return bool(rec["check_clean"])


def summarize(models: Dict[str, dict], build_only: bool = False, split: bool = True) -> dict:
    static = [m for m in models.values() if "check_clean" in m]
    summary = {"models": len(models), "check_clean": sum(m["check_clean"] for m in static),
               "check_flagged": sum(not m["check_clean"] for m in static)}
    if build_only:
        summary["check_no_errors"] = sum(check_says_ok(m, True) for m in static)
    real = {n: m for n, m in models.items() if "parsed" in m and "check_clean" in m}
    if real and split:
        summary["in_sample"] = summarize({n: m for n, m in models.items() if not held_out(n)}, build_only, False)
        summary["held_out"] = summarize({n: m for n, m in models.items() if held_out(n)}, build_only, False)
    trt_ok_ = (lambda m: trt_ok(m, build_only))  # noqa: E731
    if real:
        matrix = Counter()
        for m in real.values():
            matrix[("clean" if check_says_ok(m, build_only) else "flagged",
                    "trt_ok" if trt_ok_(m) else "trt_fail")] += 1
        agree = matrix[("clean", "trt_ok")] + matrix[("flagged", "trt_fail")]
        summary.update({
            "trt_runs": len(real), "trt_ok": sum(trt_ok_(m) for m in real.values()),
            "trt_parsed": sum(bool(m["parsed"]) for m in real.values()),
            "trt_built": sum(bool(m["built"]) for m in real.values()),
            "trt_crashed": sum(bool(m.get("crashed")) for m in real.values()),
            "trt_timed_out": sum(bool(m.get("timed_out")) for m in real.values()),
            "agree": agree, "agreement": round(agree / len(real), 4),
            "confusion": {f"{a}&{b}": matrix[(a, b)] for a in ("clean", "flagged") for b in ("trt_ok", "trt_fail")},
            "clean_but_trt_failed": sorted(n for n, m in real.items()
                                           if check_says_ok(m, build_only) and not trt_ok_(m)),
            "flagged_but_trt_ok": sorted(n for n, m in real.items() if not check_says_ok(m, build_only) and trt_ok_(m)),
            # rules behind false alarms: the first place to correct the profile
            "rules_on_trt_ok_models": dict(Counter(
                p for m in real.values() if not check_says_ok(m, build_only) and trt_ok_(m)
                for p in m.get("check_problems", []) if not build_only or p.startswith("error:")).most_common()),
        })
    return summary


def load_out(path: Optional[str]) -> dict:
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


def write_out(path: str, doc: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".agree-", dir=directory)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trt", default="8.6", help="TensorRT version for check's verdict (default 8.6)")
    p.add_argument("--node-dir", help="node test directory (default: the installed onnx package's)")
    p.add_argument("--out", help="JSON results file (read first when it exists: runs resume)")
    p.add_argument("--limit", type=int, help="at most this many models (after --pattern)")
    p.add_argument("--pattern", help="only tests whose name matches this regular expression")
    p.add_argument("--trt-real", action="store_true", help="also parse, build and run with TensorRT (GPU)")
    p.add_argument("--workers", type=int, default=6, help="child processes at a time (default 6)")
    p.add_argument("--chunk", type=int, default=20, help="models per child process (default 20)")
    p.add_argument("--timeout-per-model", type=float, default=60.0, help="seconds before a model is killed")
    p.add_argument("--time-budget", type=float, default=540.0,
                   help="stop starting TensorRT work after this many seconds (default 540)")
    p.add_argument("--redo", action="store_true", help="run TensorRT again on models that have results")
    p.add_argument("--backend", choices=["trt", "rtx"], default="trt",
                   help="trt: tensorrt (parse, build, run; GPU); rtx: TensorRT-RTX (parse, build ahead of time; CPU)")
    p.add_argument("--baseline", help="results of the raw node tests, when this run scores a fixed copy: "
                                      "tests ok there and not here are listed as drops")
    p.add_argument("--markdown", help="also write a short markdown table of the summary here")
    p.add_argument("--child", nargs=2, metavar=("JOB", "PROGRESS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_main(*args.child)
        return 0

    node_dir = args.node_dir or default_node_dir()
    if not os.path.isdir(node_dir):
        print(f"no node tests at {node_dir} (pass --node-dir)", file=sys.stderr)
        return 2
    names = list_tests(node_dir, args.pattern)
    if args.limit:
        names = names[:args.limit]
    doc = load_out(args.out)
    models: Dict[str, dict] = doc.get("models", {})
    build_only = args.backend == "rtx"

    started = time.perf_counter()
    verdicts = static_verdicts(node_dir, names, args.trt)
    static_seconds = time.perf_counter() - started
    for name, v in verdicts.items():
        models.setdefault(name, {}).update(v)
    clean = sum(v["check_clean"] for v in verdicts.values())
    print(f"static check --trt {args.trt}: {len(verdicts)} node tests, {clean} clean, "
          f"{len(verdicts) - clean} flagged ({static_seconds:.1f} s)")
    rules = Counter(p.split(":")[1] for v in verdicts.values() for p in v["check_problems"])
    print("flagged by rule (a test can have several): " + ", ".join(f"{r} {n}" for r, n in rules.most_common()))

    lock = threading.Lock()
    last_save = [time.time()]

    def save():
        if not args.out:
            return
        import onnx
        for name in models:
            models[name]["held_out"] = held_out(name)
        doc.update({"schema": SCHEMA, "check_trt": args.trt, "node_dir": node_dir, "onnx_version": onnx.__version__,
                    "backend": args.backend, "models": models, "summary": summarize(models, build_only),
                    "settings": {"builder_optimization_level": 0, "tactic_sources": list(TACTIC_SOURCES),
                                 "tf32": False, "timeout_per_model": args.timeout_per_model}})
        write_out(args.out, doc)

    if args.trt_real:
        todo = [n for n in names if args.redo or "parsed" not in models.get(n, {})]
        print(f"TensorRT: {len(todo)} models to run ({len(names) - len(todo)} already have results), "
              f"{args.workers} workers, budget {args.time_budget:.0f} s")

        def on_result(name, rec):
            with lock:
                models.setdefault(name, {}).update(rec)
                if time.time() - last_save[0] > 20:
                    save()
                    last_save[0] = time.time()

        t0 = time.perf_counter()
        version = run_real(node_dir, todo, args, on_result)
        if version:
            doc["tensorrt_version"] = version
        left = [n for n in names if "parsed" not in models.get(n, {})]
        print(f"TensorRT pass took {time.perf_counter() - t0:.0f} s; {len(left)} models still without results"
              + (" (run the same command again to continue)" if left else ""))
    if args.baseline:
        doc["baseline"] = baseline_drops(load_out(args.baseline).get("models", {}), models, build_only)
    save()
    summary = summarize({n: models[n] for n in names if n in models}, build_only)
    if "trt_runs" in summary:
        what = "parsed+built" if build_only else "parsed+built+matched"
        print(f"TensorRT {doc.get('tensorrt_version', '?')} ({args.backend}): {summary['trt_runs']} runs, "
              f"{summary['trt_parsed']} parsed, {summary['trt_built']} built, {summary['trt_ok']} {what}, "
              f"{summary['trt_crashed']} crashed, {summary['trt_timed_out']} timed out")
        print(f"agreement: {summary['agree']}/{summary['trt_runs']} = {100 * summary['agreement']:.1f} %  "
              f"{summary['confusion']}")
        for part in ("in_sample", "held_out"):
            sub = summary.get(part) or {}
            if "agree" in sub:
                print(f"  {part}: {sub['agree']}/{sub['trt_runs']} = {100 * sub['agreement']:.1f} %  {sub['confusion']}")
        # lists from the in-sample part only: the held-out tests must not teach the profile
        learn = summary.get("in_sample") or summary
        if learn.get("rules_on_trt_ok_models"):
            print("rules that flagged models TensorRT handled (in-sample): " +
                  ", ".join(f"{r} {n}" for r, n in learn["rules_on_trt_ok_models"].items()))
        for key in ("clean_but_trt_failed", "flagged_but_trt_ok"):
            if learn.get(key):
                shown = learn[key][:40]
                print(f"{key} (in-sample, {len(learn[key])}): {' '.join(shown)}{' ...' if len(learn[key]) > 40 else ''}")
    if doc.get("baseline"):
        b = doc["baseline"]
        print(f"vs baseline: {b['ok_before']} ok raw -> {b['ok_after']} ok here; {len(b['drops'])} drop(s): "
              + " ".join(b["drops"][:40]))
    if args.markdown:
        write_markdown(args.markdown, doc, summarize({n: models[n] for n in names if n in models}, build_only))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def baseline_drops(before: Dict[str, dict], after: Dict[str, dict], build_only: bool) -> dict:
    """Tests TensorRT handled in the baseline (raw) run and not in this (fixed) one."""
    common = [n for n in sorted(after) if "parsed" in after[n] and "parsed" in before.get(n, {})]
    return {"compared": len(common),
            "ok_before": sum(trt_ok(before[n], build_only) for n in common),
            "ok_after": sum(trt_ok(after[n], build_only) for n in common),
            "parsed_before": sum(bool(before[n]["parsed"]) for n in common),
            "parsed_after": sum(bool(after[n]["parsed"]) for n in common),
            "drops": [n for n in common if trt_ok(before[n], build_only) and not trt_ok(after[n], build_only)],
            "gains": len([n for n in common if not trt_ok(before[n], build_only) and trt_ok(after[n], build_only)])}


def write_markdown(path: str, doc: dict, summary: dict) -> None:
    what = "parsed and built" if doc.get("backend") == "rtx" else "parsed, built, matched"
    rows = [f"# Node tests: {doc.get('backend')} {doc.get('tensorrt_version', '?')}, check --trt {doc.get('check_trt')}",
            "", f"node tests at `{doc.get('node_dir')}` (installed onnx {doc.get('onnx_version')})", "",
            "| part | tests | parsed | built | " + what + " | crashed | check agrees | clean&ok | flagged&fail "
            "| flagged&ok | clean&fail |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, sub in (("all", summary), ("in-sample", summary.get("in_sample") or {}),
                       ("held out", summary.get("held_out") or {})):
        if "agree" not in sub:
            continue
        c = sub["confusion"]
        rows.append(f"| {label} | {sub['trt_runs']} | {sub['trt_parsed']} | {sub['trt_built']} | {sub['trt_ok']} | "
                    f"{sub['trt_crashed']} | {sub['agree']} ({100 * sub['agreement']:.1f} %) | {c['clean&trt_ok']} | "
                    f"{c['flagged&trt_fail']} | {c['flagged&trt_ok']} | {c['clean&trt_fail']} |")
    if doc.get("baseline"):
        b = doc["baseline"]
        rows += ["", f"vs the raw run: {what} {b['ok_before']} -> {b['ok_after']} ({b['gains']} gained, "
                     f"{len(b['drops'])} dropped: {', '.join(b['drops']) or 'none'})"]
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    sys.exit(main())
