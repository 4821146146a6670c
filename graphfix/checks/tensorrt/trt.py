"""The TensorRT check: parse, build and run the fixed model, compare with ONNX Runtime on the original.

TensorRT runs in a child process (``python -m graphfix.checks.tensorrt.worker``): TensorRT 8.6 can
segfault or abort on a bad graph, and a crash must be reported as a failed check, not end graphfix.
The parent makes the seeded inputs (graphfix.checks.inputs), runs the ORIGINAL model in ONNX
Runtime, hands the inputs to the child, prints progress while the child works, and compares the
engine's outputs with Polygraphy's comparator.

Defaults, all documented in the README:
- precision FP32 (TF32 off); ``fp16``/``tf32`` enable those builder flags;
- tolerances per output: FP32 engine atol = rtol = 1e-3; TF32 or FP16 engine 1e-2; integer and bool
  outputs exact; an element fails only when it is outside both atol and rtol (Polygraphy's rule);
- optimization profile for each input with dynamic dims: ``--shapes name:1x128`` fixes min = opt =
  max; else opt = the concrete shape graphfix's ORT checks use (leading dynamic axis 1, other
  dynamic axes 4, one value per dim symbol), min = 1 and max = 2 x opt on each dynamic axis, each
  overridable with ``--min-shapes/--opt-shapes/--max-shapes``; the engine is run at opt;
- builder optimization level 0 (a validation build needs accuracy, not speed) where TensorRT has
  it (8.6+); tactic sources: only TensorRT's own (EDGE_MASK_CONVOLUTIONS, JIT_CONVOLUTIONS), no
  cuBLAS/cuBLASLt/cuDNN; a timing cache reused across runs, by default
  ``~/.cache/graphfix/trt-<version>.timing-cache`` (``$XDG_CACHE_HOME`` respected).
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ...model_io import load_model
# imported here, not in the functions: rig scripts call build_and_compare from several threads, and a
# first import racing in two threads fails with "partially initialized module" (seen on the rig)
from ..inputs import graph_inputs, make_feeds
from ..ort import EXACT as EXACT_TOLERANCE, OutputStats, _quiet_polygraphy, accuracy_stats, run_ort, runnable_copy
from .child import STAGE_WORDS, ChildRun, byte_size_text, run_worker
from .env import trt_unavailable_reason  # noqa: F401  (looked up here by graphfix.commandline.trt)
from .errors import attribute_message, map_parser_errors
from .optimization_profile import derive_profile, dims_text as _x, output_tolerances, precision_name



# ----------------------------------------------------------------------------------------- results

@dataclass
class ParseOutcome:
    parsed: bool
    crashed: bool
    errors: List[Dict[str, Optional[str]]] = field(default_factory=list)  # {"node", "op", "message"}
    warnings: List[str] = field(default_factory=list)
    trt_version: Optional[str] = None
    detail: Optional[str] = None   # why no parse result: crash, timeout, TensorRT not importable
    label: Optional[str] = None    # how the backend names itself (backends.Backend.label)

    def to_json(self) -> dict:
        return {"parsed": self.parsed, "crashed": self.crashed, "errors": self.errors,
                "warnings": self.warnings, "trt_version": self.trt_version, "detail": self.detail,
                "label": self.label}


@dataclass
class TrtCheckResult:
    model: str
    precision: str
    parsed: bool = False
    built: bool = False
    ran: bool = False
    crashed: bool = False
    timed_out: bool = False
    passed: bool = False
    signal: Optional[str] = None
    stage: Optional[str] = None            # the last stage the child reached
    trt_version: Optional[str] = None
    errors: List[Dict[str, Optional[str]]] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    outputs: List[Any] = field(default_factory=list)   # ort.OutputStats
    build_seconds: Optional[float] = None
    engine_bytes: Optional[int] = None
    timing_cache: Optional[str] = None
    optimization_level: Optional[int] = None
    profile: Dict[str, Dict[str, List[int]]] = field(default_factory=dict)
    shapes: Dict[str, List[int]] = field(default_factory=dict)
    plugins: List[str] = field(default_factory=list)
    seconds: float = 0.0
    log_tail: List[str] = field(default_factory=list)
    clocks: Optional[Dict[str, Any]] = None   # GPU clocks/power state over the run (graphfix.doctor.clocks)
    backend: str = "trt"                   # backends.BACKENDS key
    label: Optional[str] = None            # e.g. "TensorRT-RTX 1.7 (parser 11.x, ahead-of-time build, not run)"
    build_only: bool = False               # the backend parses and builds, never runs: no comparison

    @property
    def detail(self) -> str:
        if self.build_only and self.built and not self.crashed:
            return "parsed and built ahead of time; not run, so outputs were not compared"
        if self.crashed:
            return f"TensorRT crashed ({self.signal}) while {STAGE_WORDS.get(self.stage, self.stage)}"
        if self.errors and not self.ran:
            if self.timed_out:
                return self.errors[-1]["message"]
            return f"{STAGE_WORDS.get(self.stage, self.stage or 'starting TensorRT')} failed: {_describe(self.errors[0])}"
        if not self.outputs:
            return _describe(self.errors[0]) if self.errors else "no outputs compared"
        bad = [o for o in self.outputs if not o.passed]
        worst = max(bad or self.outputs, key=lambda o: _sortable(o.max_abs))
        head = f"{self.precision}: {len(bad)} of {len(self.outputs)} output(s) out of tolerance" if bad \
            else f"{self.precision}: {len(self.outputs)} output(s) within tolerance"
        return (f"{head}; worst {worst.name}: max abs {worst.max_abs:.3g}, max rel {worst.max_rel:.3g} "
                f"(atol {worst.atol:g}, rtol {worst.rtol:g})")

    def to_json(self) -> dict:
        out = {k: getattr(self, k) for k in (
            "passed", "parsed", "built", "ran", "crashed", "timed_out", "signal", "stage", "model",
            "precision", "trt_version", "errors", "warnings", "build_seconds", "engine_bytes",
            "timing_cache", "optimization_level", "profile", "shapes", "plugins", "clocks", "backend", "label",
            "build_only")}
        out["outputs"] = [{k: _finite(v) for k, v in o.to_json().items()} for o in self.outputs]
        out["seconds"] = round(self.seconds, 3)
        out["detail"] = self.detail
        if not self.passed:
            out["log_tail"] = self.log_tail
        return out

    def summary(self) -> str:
        on = self.label or f"TensorRT {self.trt_version or '?'}"
        lines = [f"graphfix validate: {self.model} on {on} ({self.precision})"]
        for name, dims in sorted(self.profile.items()):
            lines.append(f"  profile {name}: min {_x(dims['min'])}, opt {_x(dims['opt'])}, max {_x(dims['max'])}")
        lines.append(f"  parse   {'ok' if self.parsed else 'FAILED'}")
        if self.parsed:
            size = f", engine {byte_size_text(self.engine_bytes)}" if self.engine_bytes else ""
            took = f" in {self.build_seconds:.1f}s" if self.build_seconds is not None else ""
            lines.append(f"  build   {'ok' if self.built else 'FAILED'}{took}{size}")
        if self.built:
            lines.append("  run     not run (ahead-of-time build)" if self.build_only
                         else f"  run     {'ok' if self.ran else 'FAILED'}")
        for e in self.errors[:10]:
            lines.append(f"    error: {_describe(e)}")
        if len(self.errors) > 10:
            lines.append(f"    ... {len(self.errors) - 10} more error(s) in the JSON output")
        for o in self.outputs:
            lines.append(f"  output {o.name}: max abs {o.max_abs:.3g}, max rel {o.max_rel:.3g}, "
                         f"mean abs {o.mean_abs:.3g} (atol {o.atol:g}, rtol {o.rtol:g}) "
                         f"{'ok' if o.passed else 'OUT OF TOLERANCE'}")
        if self.clocks:
            c = self.clocks
            lines.append(f"  GPU clocks during the run: SM {c['sm_mhz_min']}-{c['sm_mhz_max']} MHz, "
                         f"{'/'.join(c['pstates']) or '?'}")
            lines.extend(f"    warning: {w}" for w in self.warnings if w.startswith("the GPU") or w.startswith("the SM clock"))
        if self.crashed or self.timed_out:
            lines.append("  last TensorRT log lines:")
            lines.extend(f"    {line}" for line in self.log_tail[-8:])
        lines.append(f"  {'PASSED' if self.passed else 'FAILED'}: {self.detail}  [{self.seconds:.1f}s]")
        return "\n".join(lines)


def _describe(error: Dict[str, Optional[str]]) -> str:
    where = error.get("node") or ""
    if error.get("op"):
        where = f"{where} ({error['op']})" if where else f"({error['op']})"
    return f"{where}: {error['message']}" if where else str(error["message"])


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": keeps the report valid JSON
    return value


def _sortable(value) -> float:
    return float("inf") if isinstance(value, float) and math.isnan(value) else float(value)


# ------------------------------------------------------------------------------------- parse

def parse_in_subprocess(model_path: str, plugins: Sequence[str] = (), *, timeout: Optional[float] = None,
                        progress: bool = False, backend: str = "trt") -> ParseOutcome:
    """Parse a model with TensorRT's ONNX parser in a child process; errors named by ONNX node.
    ``backend`` picks the TensorRT build (graphfix.checks.tensorrt.backends: "trt" or "rtx")."""
    import onnx
    try:
        model = onnx.load(model_path, load_external_data=False)  # node names and types are enough
    except Exception:
        model = None
    with tempfile.TemporaryDirectory(prefix="graphfix-trt-") as workdir:
        child = run_worker({"mode": "parse", "model": os.path.abspath(model_path), "backend": backend,
                            "plugins": [os.path.abspath(p) for p in plugins]},
                           workdir, timeout=timeout, progress=progress)
    start = child.last("start") or {}
    parsed = child.last("parsed")
    outcome = ParseOutcome(parsed=bool(parsed and parsed["ok"]), crashed=child.crashed,
                           trt_version=start.get("trt_version"), label=start.get("label"))
    if parsed:
        outcome.errors = map_parser_errors(parsed["errors"], model)
        outcome.warnings = list(parsed.get("warnings") or [])
    failure = child.failure()
    if failure:
        outcome.parsed = outcome.parsed and not child.crashed
        outcome.errors.append(failure)
        outcome.detail = failure["message"]
    outcome.warnings.extend(child.warnings())
    return outcome


# ----------------------------------------------------------------------------- build and compare

def compare_into_report(report, original: str, fixed: str, **options) -> "TrtCheckResult":
    """build_and_compare, appended to report.checks as {"kind": "trt", ...}: `fix --check trt` and
    fix(check="trt"). Without shapes, the engine's opt shapes are the sizes on which ONNX Runtime
    ran the original (report.inputs)."""
    chosen = (getattr(report, "inputs", None) or {}).get("shapes")
    if chosen and not (options.get("shapes") or options.get("opt_shapes")):
        options["opt_shapes"] = chosen
    result = build_and_compare(original, fixed, **options)
    report.checks.append({"kind": "trt", **result.to_json()})
    return result


def build_and_compare(original_model_path: str, fixed_model_path: str, *, fp16: bool = False, tf32: bool = False,
                      shapes=None, min_shapes=None, opt_shapes=None, max_shapes=None,
                      timing_cache: Optional[str] = None, plugins: Sequence[str] = (), seed: int = 1,
                      timeout: Optional[float] = None, progress: bool = True, optimization_level: Optional[int] = 0,
                      workspace: Optional[int] = None, engine_path: Optional[str] = None,
                      inputs=None) -> TrtCheckResult:
    """Build the FIXED model with TensorRT, run it, compare with ONNX Runtime on the ORIGINAL model.

    Both runs get the same seeded inputs (graphfix.checks.inputs.make_feeds) at the profile's opt
    shapes. ``inputs`` (an .npz path or name -> array) replaces generated values. Raises
    InputError/UsageError for unusable models or shapes; everything TensorRT does wrong, crashes
    included, ends up in the result.
    """
    import numpy as np

    started = time.perf_counter()
    original = load_model(original_model_path).model
    fixed = load_model(fixed_model_path).model
    precision = precision_name(fp16, tf32)
    from ..inputs import load_input_values
    given = load_input_values(original, inputs)
    if not shapes and not opt_shapes:   # opt: sizes on which ONNX Runtime runs the original
        from ..input_search import choose_inputs
        choice = choose_inputs(original, seed=seed, values=given)
        fixed_inputs = {i.name for i in graph_inputs(fixed)}
        if choice.runnable and (choice.tries > 1 or given):
            opt_shapes = {n: list(d) for n, d in choice.shapes.items() if n in fixed_inputs}
    profile, run_shapes = derive_profile(fixed, shapes, min_shapes, opt_shapes, max_shapes)
    result = TrtCheckResult(model=os.fspath(fixed_model_path), precision=precision, profile=profile,
                            shapes=run_shapes, plugins=[os.fspath(p) for p in plugins])
    original_inputs = [i.name for i in graph_inputs(original)]
    extra = [n for n in run_shapes if n not in original_inputs]
    if extra:
        result.errors.append({"node": None, "op": None,
                              "message": f"the fixed model has inputs the original lacks: {extra}"})
        result.seconds = time.perf_counter() - started
        return result

    _quiet_polygraphy()
    feeds = [{**feed, **given} for feed in make_feeds(original, seed=seed, shapes={
        n: run_shapes[n] for n in original_inputs if n in run_shapes})]
    reference, problem, note = reference_outputs(original, feeds)
    if problem:
        result.errors.append({"node": None, "op": None, "message": problem})
    if note:
        result.warnings.append(note)

    with tempfile.TemporaryDirectory(prefix="graphfix-trt-") as workdir:
        feed_specs = []
        for i, feed in enumerate(feeds):
            names = sorted(feed)
            np.savez(os.path.join(workdir, f"feeds_{i}.npz"), *[np.asarray(feed[n]) for n in names])
            feed_specs.append({"file": f"feeds_{i}.npz", "names": names})
        request = {"mode": "build", "model": os.path.abspath(fixed_model_path),
                   "plugins": [os.path.abspath(p) for p in plugins], "fp16": fp16, "tf32": tf32,
                   "profile": profile, "timing_cache": os.path.abspath(timing_cache) if timing_cache else None,
                   "optimization_level": optimization_level, "workspace": workspace,
                   "engine_path": os.path.abspath(engine_path) if engine_path else None, "feeds": feed_specs}
        from ...doctor.clocks import ClockWatch
        with ClockWatch() as watch:   # build times are only comparable at steady clocks
            child = run_worker(request, workdir, timeout=timeout, progress=progress, label=precision)
        result.clocks = watch.summary()
        result.warnings.extend(watch.warnings())
        candidate = fold_events(result, child, fixed)
        if candidate is not None and reference is not None:
            result.outputs, problems = compare_outputs(reference, candidate, output_tolerances(original, precision))
            result.errors.extend({"node": None, "op": None, "message": p} for p in problems)
    result.passed = bool(result.ran and result.outputs and all(o.passed for o in result.outputs)
                         and reference is not None and not result.crashed)
    if not result.passed:
        result.log_tail = child.log_tail
    result.seconds = time.perf_counter() - started
    return result


def reference_outputs(original, feeds) -> Tuple[Optional[List[Dict[str, Any]]], Optional[str], Optional[str]]:
    """ONNX Runtime's outputs for the original model: (outputs, problem, note).

    Properties of a file that do not change what it computes can make ONNX Runtime refuse it
    (repeated node names, an IR version newer than it knows): then the same copy the ONNX Runtime
    check uses (ort.runnable_copy) is run, and the note says so.
    """
    try:
        return [run_ort(original, feed) for feed in feeds], None, None
    except Exception as exc:
        first = " ".join(str(exc).split())[:300]
    copy = runnable_copy(original)
    if copy is not original:
        try:
            outputs = [run_ort(copy, feed) for feed in feeds]
            return outputs, None, (f"reference: ONNX Runtime refused the original as is ({first}); ran it "
                                   "with unique node names and IR version <= 10")
        except Exception:
            pass
    return None, f"ONNX Runtime could not run the original model: {first}", None


def fold_events(result: TrtCheckResult, child: ChildRun, fixed) -> Optional[List[Dict[str, Any]]]:
    """Copy what the child reported into `result`; return the engine's outputs when it ran."""
    import numpy as np
    start = child.last("start") or {}
    result.trt_version = start.get("trt_version")
    result.label = start.get("label") or result.label
    result.stage, result.crashed, result.timed_out = child.stage, child.crashed, child.timed_out
    result.signal = child.signal_name if child.crashed else None
    parsed = child.last("parsed")
    if parsed:
        result.parsed = bool(parsed["ok"])
        result.errors.extend(map_parser_errors(parsed["errors"], fixed))
        result.warnings.extend(parsed.get("warnings") or [])
    built = child.last("built")
    if built:
        result.built = bool(built["ok"])
        result.build_seconds = round(float(built["seconds"]), 3)
        result.engine_bytes = int(built["engine_bytes"]) or None
        result.timing_cache = built.get("timing_cache")
        result.optimization_level = built.get("optimization_level")
        if built.get("int8_explicit"):
            result.warnings.append("explicit quantization: the network has Q/DQ layers, so INT8 was enabled "
                                   "for them (no calibration)")
        if not built["ok"]:
            messages = list(built.get("errors") or []) or [built.get("failure") or "engine build failed"]
            result.errors.extend(attribute_message(m, fixed) for m in messages)
    failure = child.failure()
    if failure:
        result.errors.append(failure)
    result.warnings.extend(child.warnings())
    ran = child.last("ran")
    if not ran or failure:
        return None
    result.ran = True
    outputs = []
    for spec in ran["iterations"]:
        stored = np.load(os.path.join(child.workdir, spec["file"]))
        outputs.append({name: stored[f"arr_{k}"] for k, name in enumerate(spec["names"])})
    return outputs


def compare_outputs(reference: List[Dict[str, Any]], candidate: List[Dict[str, Any]],
                    tolerances: Dict[str, Tuple[float, float]]) -> Tuple[List[Any], List[str]]:
    """Per-output stats (ort.OutputStats) of TensorRT vs ONNX Runtime, over all iterations, with
    Polygraphy's comparator; plus problems that stop a comparison (missing output, shape mismatch)."""
    import numpy as np
    from polygraphy.comparator import RunResults

    problems: List[str] = []
    names = list(tolerances)
    comparable = []
    for name in names:
        ref_shapes = [tuple(it[name].shape) for it in reference if name in it]
        got = [it.get(name) for it in candidate]
        if any(g is None for g in got):
            problems.append(f"output '{name}': TensorRT did not produce it")
        elif [tuple(g.shape) for g in got] != ref_shapes:
            problems.append(f"output '{name}': shape {[tuple(g.shape) for g in got][0]} from TensorRT, "
                            f"{ref_shapes[0]} from ONNX Runtime")
        else:
            comparable.append(name)
    stats: Dict[str, Any] = {}
    if comparable:
        results = RunResults()
        results.add([{n: it[n] for n in comparable} for it in reference], runner_name="onnxruntime-original")
        results.add([{n: it[n] for n in comparable} for it in candidate], runner_name="tensorrt-fixed")
        stats.update(accuracy_stats(results, {n: tolerances[n] for n in comparable}))
    for name in comparable:   # integer/bool outputs: exact, judged on widened values
        if tolerances[name] == EXACT_TOLERANCE and name in stats:
            widened = [(np.asarray(r[name]).astype(np.float64), np.asarray(c[name]).astype(np.float64))
                       for r, c in zip(reference, candidate)]
            equal = all(np.array_equal(r, c) for r, c in widened)
            worst = max(float(np.max(np.abs(r - c), initial=0.0)) for r, c in widened)
            st = stats[name]
            stats[name] = OutputStats(name, st.passed and equal, st.atol, st.rtol, max(st.max_abs, worst),
                                      st.max_rel, st.mean_abs)
    outs = []
    for name in names:
        if name in stats:
            outs.append(stats[name])
        else:
            atol, rtol = tolerances[name]
            outs.append(OutputStats(name, False, atol, rtol, float("nan"), float("nan"), float("nan")))
            if name in comparable:
                problems.append(f"output '{name}': not compared")
    return outs, problems
