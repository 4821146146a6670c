"""`graphfix fix --until-parses`: let TensorRT's parser choose the passes.

Each round parses the current model with TensorRT (in a child process, graphfix.checks.tensorrt.trt), maps
every parser error to the passes that fix it (the table of remedies, graphfix.remedies: the ops a
pass rewrites away, then the parser-message patterns the passes declare; errors that map to nothing
bring in the passes `graphfix check` proposes for the model's problems), runs those passes with
graphfix.pipeline.fix, and parses again. A parser crash (8.6 segfaults on dynamo opset-18 exports)
is treated like an error without a cause: the passes `graphfix check` proposes run, and the loop
goes on. It stops when the model parses, when the parser crashes with nothing left to try or again
after the passes, when no pass maps to the remaining errors, when the mapped passes change nothing,
when the errors are the same after a change, or after MAX_ROUNDS rounds. The report keeps every round.
"""
from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .errors import UsageError
from .report import Report, input_facts, model_differences, model_summary

MAX_ROUNDS = 5

_OP_IN_TEXT = (re.compile(r"No importer registered for op: (\w+)"),
               re.compile(r"could not find plugin:? (\w+)", re.IGNORECASE))


# Warnings are only read where a remedy row says so (8.6's INT64 notice, which comes before the
# errors it causes). 8.6 also prints it for models with no INT64 tensor (Slice's shape arithmetic goes
# through the same conversion, seen on the rig); int64-to-int32 then changes nothing: no progress.


def _op_of(error: Dict[str, Optional[str]]) -> Optional[str]:
    if error.get("op"):
        return error["op"]
    for pattern in _OP_IN_TEXT:
        m = pattern.search(error.get("message") or "")
        if m:
            return m.group(1)
    return None


def _is_standard_op(op: Optional[str]) -> bool:
    import onnx
    try:
        return op is not None and onnx.defs.has(op)
    except Exception:
        return False


def passes_for_error(error: Dict[str, Optional[str]]) -> List[str]:
    """The passes that fix one parser error ({"node", "op", "message"}), in pipeline order.

    An op that a rewrite rule starts from goes to that rule's pass (RoiAlign -> plugins, FastGelu ->
    decompose-contrib), whatever the message says: the parser reports both as a missing plugin.
    Otherwise the message decides (graphfix.remedies parser-error rows), joined by expand-functions
    where ONNX defines the op as a function (NegativeLogLikelihoodLoss: its body)."""
    from .remedies import conditional_fallbacks_for_missing_op, passes_for_message, passes_for_missing_op
    from .registry import PIPELINE_ORDER
    message, op = error.get("message") or "", _op_of(error)
    by_rule = passes_for_missing_op(op, error.get("domain"), fallbacks=False) if op else []
    if by_rule:
        return by_rule
    names = set(passes_for_message(message, None if op is None else _is_standard_op(op)))
    if op and _is_standard_op(op):
        names.update(conditional_fallbacks_for_missing_op(op, error.get("domain")))
    return [p for p in PIPELINE_ORDER if p in names]


@dataclass
class Plan:
    passes: List[str] = field(default_factory=list)              # pipeline order
    reasons: Dict[str, List[str]] = field(default_factory=dict)  # pass -> messages that call for it
    unmapped: List[Dict[str, Optional[str]]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"passes": self.passes, "reasons": self.reasons, "unmapped": self.unmapped}

    def order(self) -> None:
        """passes = the passes with reasons, their prerequisites added, in pipeline order."""
        from .registry import PIPELINE_ORDER
        from .remedies import prerequisites
        for name, (needed, why) in prerequisites().items():
            if name in self.reasons and needed not in self.reasons:
                self.reasons[needed] = [why]
        self.passes = [p for p in PIPELINE_ORDER if p in self.reasons]


def plan_passes(errors: Sequence[Dict[str, Optional[str]]], warnings: Sequence[str] = ()) -> Plan:
    plan = Plan()
    for error in errors:
        names = passes_for_error(error)
        if not names:
            plan.unmapped.append({k: v for k, v in error.items() if k != "domain"})
        for name in names:
            plan.reasons.setdefault(name, []).append(_short(error))
    from .remedies import parser_rows
    for warning in warnings:
        for row in parser_rows(warnings=True):
            if row.matches_message(warning, None):
                plan.reasons.setdefault(row.pass_name, []).append(f"warning: {warning}"[:300])
    plan.order()
    return plan


def with_domains(errors: Sequence[Dict[str, Optional[str]]], model) -> List[Dict[str, Optional[str]]]:
    """The errors, each with its node's domain where the node is found in the main graph (the parser
    names nodes, not domains: com.microsoft Gelu and ONNX Gelu-20 need different passes)."""
    domains = {n.name: n.domain for n in model.graph.node if n.name}
    return [{**e, "domain": domains[e["node"]]} if e.get("node") in domains else dict(e) for e in errors]


def add_static_findings(plan: Plan, model, trt: str) -> None:
    """Some parser errors name no node or no fixable cause (8.6: "Failed to sort the model
    topologically" for a contrib op's empty optional outputs; "Unable to open library" for RoiAlign).
    For those, the passes `graphfix check` proposes for its error and wrong-result findings join
    the plan, each with the finding as its reason."""
    from .diagnosis import PROBLEM_SEVERITIES, check_model
    for finding in check_model(model, trt=trt).findings:
        if finding.severity in PROBLEM_SEVERITIES and finding.fix_pass:
            where = finding.node or "model"
            plan.reasons.setdefault(finding.fix_pass, []).append(f"check: {where}: {finding.reason}"[:300])
    plan.order()


def _short(error: Dict[str, Optional[str]]) -> str:
    where = error.get("node") or error.get("op")
    text = f"{where}: {error.get('message')}" if where else str(error.get("message"))
    return text[:300]


@dataclass
class LoopReport(Report):
    """A pipeline report with the parser rounds; ok only when the final model parses."""
    rounds: List[dict] = field(default_factory=list)
    parses: bool = False

    @property
    def ok(self) -> bool:
        return Report.ok.fget(self) and self.parses

    def to_json(self) -> dict:
        out = super().to_json()
        out["parses"] = self.parses
        out["rounds"] = self.rounds
        return out

    def summary(self, **kw) -> str:
        lines = super().summary(**kw).splitlines()
        extra = []
        for rnd in self.rounds:
            parse = rnd["parse"]
            head = "parses" if parse["parsed"] and not parse["errors"] else \
                ("parser CRASHED" if parse["crashed"] else f"{len(parse['errors'])} parser error(s)")
            ran = ", ".join(f"{p['name']} {p['status']}" for p in rnd.get("passes", []))
            extra.append(f"  round {rnd['round']}: {head}" + (f" -> {ran}" if ran else "")
                         + (f"; stop: {rnd['stop']}" if rnd.get("stop") else ""))
            for e in parse["errors"][:3]:
                extra.append(f"      {_short(e)}")
        return "\n".join(lines[:-1] + extra + lines[-1:])


def trt_parser(plugins: Sequence[str] = (), timeout: Optional[float] = None) -> Callable:
    """parse(model) -> ParseOutcome, by TensorRT in a child process."""
    from .checks.tensorrt.trt import parse_in_subprocess
    from .model_io import save_model

    def parse(model):
        with tempfile.TemporaryDirectory(prefix="graphfix-loop-") as workdir:
            path = os.path.join(workdir, "model.onnx")
            save_model(model, path)
            return parse_in_subprocess(path, plugins, timeout=timeout, progress=True)
    return parse


def _allowed(passes, skip) -> List[str]:
    """The passes the loop may choose (graphfix.registry.allowed_passes)."""
    from .registry import allowed_passes
    return allowed_passes(passes, skip)


def fix_until_parses(model, trt=None, passes=None, skip=None, check: str = "ort", *, context=None,
                     shapes=None, inputs=None, seed: int = 1, plugins: Sequence[str] = (), timeout: Optional[float] = None,
                     max_rounds: int = MAX_ROUNDS, parse: Optional[Callable] = None,
                     fix_fn: Optional[Callable] = None) -> Tuple["object", LoopReport]:
    """Parse, run the passes the parser's errors call for, parse again; return (model, LoopReport).

    ``passes``/``skip`` limit which passes the loop may choose. ``parse`` (model -> ParseOutcome)
    and ``fix_fn`` (graphfix.pipeline.fix's signature) are for tests; by default TensorRT parses.
    """
    from .checks.tensorrt.env import trt_unavailable_reason
    from .console import progress
    from .model_io import load_model
    from .pass_api import PassContext
    from .model_state import ModelState
    from .pipeline import finish, fix as pipeline_fix
    from .target import resolve_target

    started = time.perf_counter()
    allowed = _allowed(passes, skip)
    if parse is None:
        reason = trt_unavailable_reason()
        if reason is not None:
            raise UsageError(f"--until-parses needs TensorRT: {reason} (README: 'Installing TensorRT')")
        parse = trt_parser(plugins, timeout)
    fix_fn = fix_fn or pipeline_fix
    from .checks.structural import validate_input
    loaded = load_model(model)
    validate_input(loaded.model, loaded.source)   # the same refusals as the pipeline, before parsing
    target = resolve_target(trt)
    context = context or PassContext()
    report = LoopReport(input=model_summary(loaded.model, loaded.path), target=target.to_json())
    original = current = loaded.model
    previous: Optional[List[str]] = None
    for n in range(max_rounds + 1):
        progress("round %d: parsing with TensorRT", n)
        outcome = parse(current)
        rnd: dict = {"round": n, "parse": outcome.to_json()}
        report.rounds.append(rnd)
        if outcome.parsed and not outcome.errors:
            report.parses = True
            rnd["stop"] = "parses"
            break
        signature = sorted(f"{e.get('node')}|{e.get('message')}" for e in outcome.errors)
        if signature == previous:
            rnd["stop"] = ("the parser crashed" if outcome.crashed else
                           "no progress: the same parser errors after the passes")
            break
        if n == max_rounds:
            rnd["stop"] = f"round limit ({max_rounds}) reached"
            break
        if outcome.crashed:  # a crash says nothing about its cause: the static check proposes
            plan = Plan(unmapped=[dict(e) for e in outcome.errors])
        else:
            plan = plan_passes(with_domains(outcome.errors, current), outcome.warnings)
        if plan.unmapped:
            add_static_findings(plan, current, str(target.version))
        chosen = [p for p in plan.passes if p in allowed]
        rnd["plan"] = {**plan.to_json(), "not_allowed_or_unavailable": [p for p in plan.passes if p not in allowed]}
        if not chosen:
            rnd["stop"] = "the parser crashed" if outcome.crashed else "no pass maps to the parser's errors"
            break
        fixed, round_report = fix_fn(current, trt=str(target.version), passes=chosen, check=check,
                                     context=context, shapes=shapes, seed=seed, inputs=inputs)
        rnd["passes"] = [{"name": p.name, "status": p.status, "changes": len(p.changes), "error": p.error}
                         for p in round_report.passes]
        report.passes.extend(round_report.passes)
        if not round_report.changed:
            rnd["stop"] = "no progress: the passes changed nothing"
            break
        current, previous = fixed, signature
    # the same whole-model checks as graphfix fix (the tolerance the applied passes declared included)
    finish(report, ModelState(original), ModelState(current), target, check, shapes=shapes, seed=seed, given=inputs)
    report.differences = model_differences(input_facts(loaded.model), current, report.passes)
    report.seconds = time.perf_counter() - started
    return current, report
