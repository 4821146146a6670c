"""The pipeline: load, validate, run the selected passes in the written order, check, report.

Each pass gets a fresh gs.Graph of the current model and mutates it. When it reports changes,
the new model is checked structurally and, where ONNX Runtime can run it, against the model
before the pass. A failing check or an exception rolls the pass back; the run goes on.
"""
from __future__ import annotations

import time
import traceback
from typing import List, Optional, Sequence, Tuple, Union

import onnx

from .checks.structural import check_rewrite, validate_input
from .errors import UsageError
from .graph_utils import to_graph, to_model
from .model_io import load_model
from .pass_api import PassContext
from .registry import ordered_passes, registered
from .report import APPLIED, FAILED, ROLLED_BACK, SKIPPED, UNCHANGED, PassReport, Report, model_summary
from .target import Target, resolve_target
from .weights import big_bytes, export_in_place

# With --check none and weights above this, a pass's result replaces the model in place (one copy
# of the weights, not two): nothing needs the model before the pass but a rollback.
IN_PLACE_BYTES = 256 * 1024 ** 2

CHECK_MODES = ("ort", "none", "trt")


def _split(names: Union[str, Sequence[str], None]) -> Optional[List[str]]:
    if names is None:
        return None
    if isinstance(names, str):
        names = names.split(",")
    return [n.strip() for n in names if n.strip()]


def select_passes(target: Target, passes=None, skip=None) -> Tuple[List[type], List[PassReport]]:
    """Passes to run (pipeline order) and skip records for the registered ones left out, with why."""
    reg = registered()
    wanted, skipped = _split(passes), set(_split(skip) or [])
    for name in (wanted or []) + sorted(skipped):
        if name not in reg:
            known = ", ".join(c.info.name for c in ordered_passes())
            raise UsageError(f"unknown pass '{name}' (known: {known})")
    run, reports = [], []
    for cls in ordered_passes():
        info = cls.info
        if info.name in skipped:
            reports.append(PassReport(info.name, SKIPPED, error="skipped on request"))
        elif wanted is not None and info.name not in wanted:
            continue
        elif wanted is None and not info.default:
            continue
        elif not info.trt.contains(target.version):
            reports.append(PassReport(info.name, SKIPPED,
                                      error=f"TensorRT {target.version} does not need it (needed for {info.trt})"))
        else:
            run.append(cls)
    return run, reports


def fix(model, trt=None, passes=None, skip=None, check: str = "ort", *,
        context: Optional[PassContext] = None, shapes=None, seed: int = 1) -> Tuple[onnx.ModelProto, Report]:
    """Run graphfix on a model (path, bytes, ModelProto or gs.Graph); return (fixed model, report).

    ``trt``: target TensorRT version ("8.6", "10.3"); default: installed tensorrt, else DEFAULT_TRT.
    ``passes``/``skip``: pass names (list or comma-separated). ``check``: "ort" (default) compares
    ONNX Runtime outputs before/after each checkable pass and for the whole result; "none" skips it.
    """
    if check not in CHECK_MODES:
        raise UsageError(f"unknown check mode '{check}' (expected one of {', '.join(CHECK_MODES)})")
    started = time.perf_counter()
    loaded = load_model(model)
    validate_input(loaded.model, loaded.source)
    target = resolve_target(trt)
    ctx = context or PassContext()
    ctx.target = target.version
    to_run, skipped = select_passes(target, passes, skip)
    report = Report(input=model_summary(loaded.model, loaded.path), target=target.to_json())
    report.passes.extend(skipped)

    original = loaded.model
    current = original
    for cls in to_run:
        rec, current = _run_one(cls, ctx, current, check, shapes, seed, ran_before=_names_run(report))
        report.passes.append(rec)
    _sort_records(report)
    if check in ("ort", "trt"):   # changed: compare with the input; unchanged: can it be loaded at all?
        report.checks.append(_whole_model_check(original, current, shapes, seed, _declared_tolerance(report))
                             if report.changed else _loadable_check(current))
    report.checks.append(_checker_check(current))
    report.output = model_summary(current)
    report.seconds = time.perf_counter() - started
    return current, report


def _names_run(report: Report) -> List[str]:
    return [p.name for p in report.passes if p.status != SKIPPED]


def _sort_records(report: Report) -> None:
    order = {cls.info.name: i for i, cls in enumerate(ordered_passes())}
    report.passes.sort(key=lambda p: order.get(p.name, len(order)))


def _run_one(cls, ctx: PassContext, model: onnx.ModelProto, check: str, shapes, seed: int,
             ran_before: List[str]) -> Tuple[PassReport, onnx.ModelProto]:
    info = cls.info
    missing = [m for m in info.needs if not _importable(m)]
    if missing:
        return PassReport(info.name, SKIPPED, error=f"needs {', '.join(missing)}, not installed"), model
    t0 = time.perf_counter()
    rec = PassReport(info.name, UNCHANGED)
    try:
        graph = to_graph(model)
        ctx.model = model
        result = cls(ctx).run(graph)
        rec.counts, rec.warnings = dict(sorted(result.counts.items())), list(result.warnings)
        rec.changes = [c.to_json() for c in result.changes]
        if not result.modified:
            rec.seconds = time.perf_counter() - t0
            return rec, model
        undo, before = None, model
        if check == "none" and big_bytes(model) >= IN_PLACE_BYTES:   # nothing compares two models
            new_model, undo, before = export_in_place(model, lambda place: to_model(graph, model, place))
        else:
            new_model = to_model(graph, model)
    except Exception as exc:  # a pass bug must not end the run: roll back, report, go on
        rec.status = FAILED
        rec.error = (f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]} "
                     f"(passes run before it: {', '.join(ran_before) or 'none'}); "
                     f"at {_where(exc)}")
        rec.seconds = time.perf_counter() - t0
        return rec, model
    problems = check_rewrite(before, new_model, allow_io_change=ctx.int32_io) if info.ort_checkable \
        else _light_problems(before, new_model, ctx, rec.changes)
    if not problems and info.ort_checkable and check in ("ort", "trt"):
        from .checks.ort import compare_models
        eq = compare_models(model, new_model, seed=seed, shapes=shapes, tolerance=result.tolerance)
        rec.check = {"kind": "ort", **eq.to_json()}
        if result.tolerance is not None:
            rec.check["tolerance"] = list(result.tolerance)
        if eq.unchecked:   # ORT cannot run the model before the pass: say so, do not pretend
            rec.warnings.append(f"not checked in ONNX Runtime: {eq.error}")
        elif not eq.passed:
            problems.append(f"ONNX Runtime outputs differ from before the pass: {eq.worst()}")
    rec.seconds = time.perf_counter() - t0
    if problems:
        rec.status = ROLLED_BACK
        rec.error = "; ".join(problems)
        return rec, undo() if undo else model
    rec.status = APPLIED
    return rec, new_model


def _light_problems(before, after, ctx: PassContext, changes=()) -> List[str]:
    """For passes ONNX's checker cannot judge (plugin ops): unique names and the I/O signature
    (which may change only where the pass recorded a "change-outputs" change, e.g. NMS -> EfficientNMS)."""
    from .checks.structural import io_signature, repeated_node_names
    problems = []
    if repeated_node_names(after):
        problems.append("duplicate node names")
    declared = any(c.get("action") == "change-outputs" for c in changes)
    if not ctx.int32_io and not declared and io_signature(before) != io_signature(after):
        problems.append("graph I/O signature changed")
    return problems


def _declared_tolerance(report: Report):
    """The loosest (atol, rtol) an applied pass declared for its own check (dequantization), if any."""
    declared = [p.check["tolerance"] for p in report.passes
                if p.status == APPLIED and p.check and p.check.get("tolerance")]
    return (max(t[0] for t in declared), max(t[1] for t in declared)) if declared else None


def _whole_model_check(original, final, shapes, seed, tolerance=None) -> dict:
    from .checks.ort import compare_models
    eq = compare_models(original, final, seed=seed, shapes=shapes, tolerance=tolerance)
    if eq.unchecked:
        return {"kind": "ort", **eq.to_json(), "passed": None, "skipped": True, "detail": eq.error}
    if eq.error and "could not run" in eq.error and not _ort_runnable(final):
        return {"kind": "ort", **eq.to_json(), "passed": None, "skipped": True,
                "detail": "output holds ops ONNX Runtime cannot run (plugins); "
                          "the passes before them were checked one by one"}
    check = {"kind": "ort", **eq.to_json(), "detail": eq.worst()}
    if tolerance is not None:
        check["tolerance"] = list(tolerance)   # declared by an inexact pass (dequantization)
    return check


def _checker_check(model: onnx.ModelProto) -> dict:
    """ONNX's checker on the result, whether or not a pass changed it: "done" needs a valid model.
    Ops of custom domains (TensorRT plugins) have no schema; the checker lets them through."""
    from .model_io import over_protobuf_limit
    from .weights import weightless_model
    model = weightless_model(model)   # the checker reads types and dims, not weight bytes
    if over_protobuf_limit(model):
        return {"kind": "onnx-checker", "passed": None, "skipped": True,
                "detail": "unchecked: the checker takes models under 2 GiB only"}
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        return {"kind": "onnx-checker", "passed": False, "detail": " ".join(str(exc).split())[:400]}
    return {"kind": "onnx-checker", "passed": True}


def _loadable_check(model: onnx.ModelProto) -> dict:
    """No pass changed the model, so there is nothing to compare: say whether ONNX Runtime loads it.
    A model it cannot load is "unchecked", not failed: ONNX Runtime is the reference, not the judge
    of validity (ONNX's checker is), and plugin ops are meant for TensorRT."""
    from .checks.ort import _load_error, ort_can_load, runnable_copy
    runnable = runnable_copy(model)
    if ort_can_load(runnable):
        return {"kind": "ort", "passed": True, "detail": "nothing changed; ONNX Runtime loads the model"}
    custom = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node
                     if n.domain not in ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")})
    why = (f"custom-domain ops ({', '.join(custom[:3])}) that only TensorRT (plugins) runs" if custom
           else f"ONNX Runtime cannot load the model: {_load_error(runnable)}")
    return {"kind": "ort", "passed": None, "skipped": True, "detail": f"unchecked: {why}"}


def _ort_runnable(model: onnx.ModelProto) -> bool:
    from .checks.ort import ort_can_load
    return ort_can_load(model)


def _importable(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def _where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return "?"
    frame = tb[-1]
    return f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"
