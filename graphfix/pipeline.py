"""The pipeline: load, validate, run the selected passes in the written order, check, report.

One model state travels through the passes (model_state.ModelState): the model, its gs.Graph and
what the checks learned about it. Each pass mutates the state's graph in place; a pass that reports
no change costs nothing more (no export, no check, no session: a contract test holds that it left
the graph byte-identical). When it reports changes, the graph is exported once, checked
structurally and, where ONNX Runtime can run it, run once and compared with the outputs of the
state before it, computed once. A failing check or an exception rolls the pass back (the graph is
imported again from the model before it when the next pass needs it); the run goes on.
"""
from __future__ import annotations

import os
import time
import traceback
from typing import List, Optional, Sequence, Tuple, Union

import onnx

from .checks.structural import check_rewrite, validate_input
from .console import progress
from .errors import UsageError
from .graph_utils import to_model
from .model_io import load_model
from .model_state import ModelState
from .pass_api import PassContext
from .registry import ordered_passes, registered
from .report import (APPLIED, FAILED, ROLLED_BACK, SKIPPED, UNCHANGED, PassReport, Report, input_facts,
                     model_differences, model_summary)
from .target import Target, resolve_target
from .weights import big_bytes, export_in_place

# With --check none and weights above this, a pass's result replaces the model in place (one copy
# of the weights, not two): nothing needs the model before the pass but a rollback.
IN_PLACE_BYTES = 256 * 1024 ** 2

CHECK_MODES = ("ort", "none", "trt")
FREEZE = "freeze-inputs"     # the report record of input specialization (not a pass: it runs first)


def _split(names: Union[str, Sequence[str], None]) -> Optional[List[str]]:
    if names is None:
        return None
    if isinstance(names, str):
        names = names.split(",")
    return [n.strip() for n in names if n.strip()]


def select_passes(target: Target, passes=None, skip=None, options=None) -> Tuple[List[type], List[PassReport]]:
    """Passes to run (pipeline order) and skip records for the registered ones left out, with why.
    An opt-in pass also runs when `options` sets the option of its name (``precision="fp16"``)."""
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
        elif wanted is None and not info.default and not (options or {}).get(info.name.replace("-", "_")):
            continue
        elif not info.trt.contains(target.version):
            reports.append(PassReport(info.name, SKIPPED,
                                      error=f"TensorRT {target.version} does not need it (needed for {info.trt})"))
        else:
            run.append(cls)
    return run, reports


def fix(model, trt=None, passes=None, skip=None, check: str = "ort", *,
        context: Optional[PassContext] = None, shapes=None, seed: int = 1,
        inputs=None, freeze=None, static_shapes=None) -> Tuple[onnx.ModelProto, Report]:
    """Run graphfix on a model (path, bytes, ModelProto or gs.Graph); return (fixed model, report).

    ``trt``: target TensorRT version ("8.6", "10.3"); default: installed tensorrt, else DEFAULT_TRT.
    ``passes``/``skip``: pass names (list or comma-separated). ``check``: "ort" (default) compares
    ONNX Runtime outputs before/after each checkable pass and for the whole result; "trt" also builds
    and runs the result in TensorRT (UsageError where TensorRT is absent); "none" skips them.
    ``shapes``: sizes for the checks, per input (``{"ids": [1, 128]}``) or per dim symbol
    (``{"seq": 128}``); ``inputs``: input values for the checks (an .npz path or name -> array).
    ``freeze``: {input: value}: those inputs become constants, the Ifs they decide are inlined
    (graphfix.freeze); ``static_shapes`` (per input or dim symbol, as ``shapes``) pins dynamic
    input dims. These are the only signature changes.
    """
    if check not in CHECK_MODES:
        raise UsageError(f"unknown check mode '{check}' (expected one of {', '.join(CHECK_MODES)})")
    if check == "trt":   # the TensorRT check: refuse before any work where it cannot run
        from .checks.tensorrt.env import require_tensorrt
        require_tensorrt("fix(check='trt')")
    started = time.perf_counter()
    progress("loading %s", model if isinstance(model, (str, os.PathLike)) else "the model")
    from .mapped_data import closer, embedded_model
    given_path = isinstance(model, (str, os.PathLike))   # big weights stay in their files until the end
    loaded = load_model(model, keep_weights_in_files=given_path)
    close_files = closer(loaded.model, loaded) if given_path else (lambda: None)
    validate_input(loaded.model, loaded.source)
    given = _check_user_inputs(loaded.model, shapes, inputs)
    target = resolve_target(trt)
    ctx = context or PassContext()
    ctx.target = target.version
    to_run, skipped = select_passes(target, passes, skip, ctx.options)
    report = Report(input=model_summary(loaded.model, loaded.path), target=target.to_json())
    report.passes.extend(skipped)
    facts = input_facts(loaded.model)

    original = loaded.model
    current = original
    if freeze or static_shapes:
        rec, original, current, shapes, given = _freeze(loaded.model, freeze or {}, check, shapes, given, seed,
                                                        static_shapes)
        report.passes.append(rec)
    choice = None
    if check in ("ort", "trt") and to_run:   # once: every pass is checked on the same inputs
        from .checks.input_search import choose_inputs
        choice = choose_inputs(original, shapes=shapes, values=given, seed=seed)
        report.inputs = choice.to_json()
    reference = ModelState(original, run=_choice_run(choice, original))
    state = reference if current is original else ModelState(current)
    for i, cls in enumerate(to_run, 1):
        progress("pass %d/%d: %s", i, len(to_run), cls.info.name)
        rec, state = _run_one(cls, ctx, state, check, shapes, seed, ran_before=_names_run(report),
                              choice=choice, given=given)
        report.passes.append(rec)
    _sort_records(report)
    finish(report, reference, state, target, check, shapes=shapes, seed=seed, choice=choice, given=given)
    if check == "trt":
        _trt_check(report, original, state.model, given)
    report.differences = model_differences(facts, state.model, report.passes)
    report.seconds = time.perf_counter() - started
    fixed = embedded_model(state.model) if given_path else state.model   # the caller's copy: self-contained
    close_files()
    return fixed, report


def finish(report: Report, reference: ModelState, final: ModelState, target: Target, check: str, *,
           shapes=None, seed: int = 1, choice=None, given=None) -> None:
    """The whole-model checks of a run, appended to the report, and its output summary: ONNX Runtime
    (the final model against the reference, with the tolerance the applied passes declared, reusing
    what each state's checks computed), ONNX's checker and `graphfix check` for the target.
    `fix` and the fix loop (fix_loop) both end with it."""
    current = final.model
    if check in ("ort", "trt"):   # changed: compare with the input; unchanged: can it be loaded at all?
        if report.changed:
            progress("comparing the fixed model with the original in ONNX Runtime")
            report.checks.append(_whole_model_check(reference.model, current, shapes, seed,
                                                    _declared_tolerance(report), choice=choice, given=given,
                                                    states=(reference, final)))
        else:
            report.checks.append(_loadable_check(current))
    report.checks.append(_checker_check(current, final.problems))
    from .verdict import target_check   # ok means TensorRT-ready: `graphfix check` on the output
    progress("graphfix check on the output for TensorRT %s", target.version)
    report.checks.append(target_check(current, str(target.version), report.passes))
    report.output = model_summary(current)


def _choice_run(choice, model: onnx.ModelProto):
    """The original's outputs from the input search (checks.input_search), where they are what the
    equivalence check would compute (ONNX Runtime, not the exact reference)."""
    if choice is None or getattr(choice, "outputs", None) is None:
        return None
    from .checks.exact_reference import needs_exact_reference
    from .checks.ort import ModelRun
    return None if needs_exact_reference(model) else ModelRun(choice.outputs, "onnxruntime")


def _trt_check(report: Report, original: onnx.ModelProto, fixed: onnx.ModelProto, given) -> None:
    """fix(check="trt"): build and run the output in TensorRT, compare it with the original in ONNX
    Runtime and append the check to the report, as `graphfix fix --check trt` does with its default
    engine options (the CLI passes its own engine flags: commandline.trt.add_trt_check)."""
    import tempfile
    from .checks.tensorrt import trt as trt_check
    from .model_io import save_model
    with tempfile.TemporaryDirectory(prefix="graphfix-trt-check-") as tmp:
        paths = []
        for name, model in (("original.onnx", original), ("fixed.onnx", fixed)):
            paths.append(os.path.join(tmp, name))
            save_model(model, paths[-1])
        trt_check.compare_into_report(report, paths[0], paths[1], inputs=given)


def _check_user_inputs(model: onnx.ModelProto, shapes, inputs):
    """Refuse shapes or values that name nothing in the model (UsageError, listing the real names);
    return the given values as arrays."""
    from .checks.inputs import load_input_values, split_shapes
    split_shapes(model, shapes)
    return load_input_values(model, inputs) or None


def _freeze(model: onnx.ModelProto, freeze, check: str, shapes, given, seed: int, static_shapes=None):
    """Specialize the frozen inputs (and pin the static shapes); return (record, the model fed with
    the values, the specialized model, shapes and values without the frozen inputs). The later
    checks compare with the fed model."""
    from .checks.inputs import dim_symbols, graph_inputs
    from .checks.structural import check_rewrite
    from .freeze import feed_as_constant, freeze_inputs, frozen_values, input_changes, pin_shapes
    t0 = time.perf_counter()
    pinned: List[dict] = []
    unpinned = model
    if static_shapes:   # the reference stays unpinned (its dead branches may not take those sizes), run at them
        model, pinned = pin_shapes(model, static_shapes)
        shapes = {**static_shapes, **(shapes or {})}
    values = frozen_values(model, freeze)
    fed = feed_as_constant(unpinned, values)
    kept = {i.name for i in graph_inputs(fed)} | set(dim_symbols(fed))
    shapes = {k: v for k, v in (shapes or {}).items() if k in kept} or None
    given = {k: v for k, v in (given or {}).items() if k not in values} or None
    rec = PassReport(FREEZE, APPLIED)
    try:
        frozen, rec.changes = freeze_inputs(model, values)
    except Exception as exc:   # inlining failed: the inputs are still frozen, as asked
        rec.status, rec.error = FAILED, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}; inputs " \
                                        "frozen without inlining"
        frozen, rec.changes, pinned = fed, input_changes(values), []
    rec.changes = pinned + rec.changes
    problems = check_rewrite(fed, frozen)
    if not problems and check in ("ort", "trt") and frozen is not fed:
        from .checks.ort import compare_models
        eq = compare_models(fed, frozen, seed=seed, shapes=shapes, inputs=given)
        rec.check = {"kind": "ort", **eq.to_json()}
        if eq.unchecked:
            rec.warnings.append(f"not checked in ONNX Runtime: {eq.error}")
        elif not eq.passed:
            problems.append(f"ONNX Runtime outputs differ from the model fed with the values: {eq.worst()}")
    if problems:
        rec.status, rec.error = ROLLED_BACK, "; ".join(problems) + "; inputs frozen without inlining" + \
            ("; sizes not pinned" if pinned else "")
        frozen, rec.changes = fed, input_changes(values)
    pinned_now = sum(c["action"] == "static-shape" for c in rec.changes)   # counted after any rollback
    rec.counts = {"inputs_frozen": len(values), "ifs_inlined": sum(c["action"] == "inline-if" for c in rec.changes),
                  **({"inputs_pinned": pinned_now} if pinned_now else {})}
    rec.seconds = time.perf_counter() - t0
    return rec, fed, frozen, shapes, given


def _unchecked(choice) -> bool:
    """The original loads in ONNX Runtime but runs on none of the inputs tried: nothing can be compared."""
    return choice is not None and choice.loadable and not choice.runnable


def _names_run(report: Report) -> List[str]:
    return [p.name for p in report.passes if p.status != SKIPPED]


def _sort_records(report: Report) -> None:
    order = {FREEZE: -1, **{cls.info.name: i for i, cls in enumerate(ordered_passes())}}
    report.passes.sort(key=lambda p: order.get(p.name, len(order)))


def _run_one(cls, ctx: PassContext, state: ModelState, check: str, shapes, seed: int,
             ran_before: List[str], choice=None, given=None) -> Tuple[PassReport, ModelState]:
    """Run one pass on the state; return its record and the state after it (the same state when it
    changed nothing, failed or was rolled back). ``state`` may also be a bare ModelProto."""
    if not isinstance(state, ModelState):
        state = ModelState(state)
    model = state.model
    info = cls.info
    missing = [m for m in info.needs if not _importable(m)]
    if missing:
        return PassReport(info.name, SKIPPED, error=f"needs {', '.join(missing)}, not installed"), state
    t0 = time.perf_counter()
    rec = PassReport(info.name, UNCHANGED)
    try:
        graph = state.take_graph()
        ctx.model = model
        result = cls(ctx).run(graph)
        rec.counts, rec.warnings = dict(sorted(result.counts.items())), list(result.warnings)
        rec.changes = [c.to_json() for c in result.changes]
        if not result.modified:   # the graph is as it was (the pass contract): keep it
            state.unread()
            rec.seconds = time.perf_counter() - t0
            return rec, state
        state.drop_graph()        # changed: it belongs to the next state, or is thrown away
        undo, before = None, model
        if check == "none" and big_bytes(model) >= IN_PLACE_BYTES:   # nothing compares two models
            new_model, undo, before = export_in_place(model, lambda place: to_model(graph, model, place))
        else:
            new_model = to_model(graph, model)
    except Exception as exc:  # a pass bug must not end the run: roll back, report, go on
        state.drop_graph()        # whatever it did to the graph is dropped: imported again when needed
        rec.status = FAILED
        rec.error = (f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]} "
                     f"(passes run before it: {', '.join(ran_before) or 'none'}); "
                     f"at {_where(exc)}")
        rec.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        rec.seconds = time.perf_counter() - t0
        return rec, state
    new_state = ModelState(new_model, graph)
    problems = _structural_problems(info, ctx, rec, state, before, new_state)
    if not problems and info.ort_checkable and check in ("ort", "trt") and _unchecked(choice):
        # the original does not run in ONNX Runtime: the pass is neither confirmed nor blamed
        rec.check = {"kind": "ort", "passed": None, "unchecked": True, "error": choice.explain(), "outputs": []}
        rec.warnings.append("not checked in ONNX Runtime: the original model does not run on the inputs tried "
                            "(see the report's inputs)")
    elif not problems and info.ort_checkable and check in ("ort", "trt"):
        from .checks.ort import compare_models
        progress("%s: checking the rewrite in ONNX Runtime", info.name)
        feeds = choice.feeds if choice is not None and choice.runnable else None
        eq = compare_models(model, new_model, seed=seed, shapes=shapes, tolerance=result.tolerance,
                            inputs=given, feeds=feeds, known={"reference": state.run} if state.run else None)
        if feeds is not None:     # each state runs once: its outputs serve the next comparison
            state.run = state.run or eq.runs.get("reference")
            new_state.run = eq.runs.get("candidate")
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
        if undo:
            state.model = undo()
        return rec, state
    rec.status = APPLIED
    return rec, new_state


def _structural_problems(info, ctx: PassContext, rec: PassReport, state: ModelState, before: onnx.ModelProto,
                         new_state: ModelState) -> List[str]:
    """check_rewrite for passes ONNX's checker can judge (each state validated once: what the checker
    and shape inference said of a state is kept with it), _light_problems for the others."""
    if not info.ort_checkable:
        return _light_problems(before, new_state.model, ctx, rec.changes)
    from .checks.structural import validity_problems
    new_state.problems = validity_problems(new_state.model)
    if new_state.problems and state.problems is None:
        state.problems = validity_problems(before)
    io_declared = any(c.get("action") == "change-io-type" for c in rec.changes)   # asked for (--no-keep-io-types)
    return check_rewrite(before, new_state.model, allow_io_change=ctx.int32_io or io_declared,
                         found=new_state.problems, already=state.problems)


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


def _whole_model_check(original, final, shapes, seed, tolerance=None, choice=None, given=None,
                       states: Optional[Tuple[ModelState, ModelState]] = None) -> dict:
    """The original against the final model in ONNX Runtime. ``states``: (original's, final's) model
    states, whose outputs on the choice's feeds, where known, are reused instead of running again."""
    from .checks.input_search import choose_inputs
    from .checks.ort import compare_models
    if choice is None:
        choice = choose_inputs(original, shapes=shapes, values=given, seed=seed)
    if _unchecked(choice):   # not a pass: "passed" stays None and the verdict says UNCHECKED
        return {"kind": "ort", "passed": None, "unchecked": True, "error": choice.explain(), "outputs": [],
                "detail": choice.explain()}
    feeds = choice.feeds if choice is not None and choice.runnable else None
    known = {side: s.run for side, s in zip(("reference", "candidate"), states or ()) if feeds and s.run}
    eq = compare_models(original, final, seed=seed, shapes=shapes, tolerance=tolerance, inputs=given, feeds=feeds,
                        known=known)
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


def _checker_check(model: onnx.ModelProto, problems: Optional[dict] = None) -> dict:
    """ONNX's checker on the result, whether or not a pass changed it: "done" needs a model that
    the checker or ONNX Runtime accepts. Failed when both refuse it (an op no schema knows, an
    unknown attribute); "unchecked" when only the checker does (a deprecated op such as
    GroupNormalization-18 that ONNX Runtime and TensorRT still run). Ops of custom domains
    (TensorRT plugins) have no schema; the checker lets them through. ``problems``: the model's
    validity_problems where a pass's check found them already (the checker is not run again when
    it passed)."""
    if problems is not None and "onnx.checker" not in problems:
        return {"kind": "onnx-checker", "passed": True}
    from .model_io import over_protobuf_limit
    from .weights import weightless_model
    model = weightless_model(model)   # the checker reads types and dims, not weight bytes
    if over_protobuf_limit(model):
        return {"kind": "onnx-checker", "passed": None, "skipped": True,
                "detail": "unchecked: the checker takes models under 2 GiB only"}
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        from .checks.ort import ort_can_load, runnable_copy
        message = " ".join(str(exc).split())[:400]
        if ort_can_load(runnable_copy(model)):
            return {"kind": "onnx-checker", "passed": None, "skipped": True,
                    "detail": f"unchecked: ONNX's checker rejects the model, ONNX Runtime loads it: {message}"}
        return {"kind": "onnx-checker", "passed": False,
                "detail": f"neither ONNX's checker nor ONNX Runtime accepts the model: {message}"}
    return {"kind": "onnx-checker", "passed": True}


def _loadable_check(model: onnx.ModelProto) -> dict:
    """No pass changed the model, so there is nothing to compare: say whether ONNX Runtime loads it.
    A model it cannot load is "unchecked", not failed: ONNX Runtime is the reference, not the judge
    of validity (ONNX's checker is), and plugin ops are meant for TensorRT."""
    from .checks.ort import load_error, runnable_copy
    error = load_error(runnable_copy(model))
    if error is None:
        return {"kind": "ort", "passed": True, "detail": "nothing changed; ONNX Runtime loads the model"}
    custom = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node
                     if n.domain not in ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")})
    why = (f"custom-domain ops ({', '.join(custom[:3])}) that only TensorRT (plugins) runs" if custom
           else f"ONNX Runtime cannot load the model: {error}")
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

