"""`graphfix check`: predict, without a GPU, which nodes a TensorRT version will reject or mishandle.

The facts come from the version profile (graphfix/profiles) and the model; the fixes from the table
of remedies (graphfix.remedies), which the passes and rewrite rules declare. Modules, by job:

    facts.py        what the model is: dtypes, shapes, constants, foldable tensors, consumers
    predicates.py   what a profile check (``"check": "const_input"``, ...) means on a node
    checker.py      evaluates the profile on the facts; each finding's fix from the remedies
    result.py       Finding, CheckResult and the JSON schema (``graphfix check --json``)
    real_parser.py  the real parser's verdict beside the prediction (TensorRT or TensorRT-RTX)
    graphfix/check_render.py renders the terminal table.
"""
from __future__ import annotations

from typing import Dict, List, Set

import onnx

from ..model_io import load_model
from ..profiles import Profile, load_profile
from ..target import resolve_target
from .checker import KNOWN_TRT_PLUGINS, Checker
from .facts import ModelFacts, NodeRef
from .predicates import PREDICATES
from .real_parser import run_backend_parser, run_real_parser, run_rtx_parser
from .result import PROBLEM_SEVERITIES, SCHEMA, SEVERITY_ORDER, CheckResult, Finding, format_table


def static_findings(model: onnx.ModelProto, profile: Profile, fp16: bool = False) -> List[Finding]:
    """The findings of `profile` on `model`, in the checker's order (no loading, no validation)."""
    return Checker(model, profile, fp16=fp16).run()


def flagged_checks(model: onnx.ModelProto, profile: Profile) -> Dict[str, Set[str]]:
    """node display name -> the checks whose error or wrong-result findings name it (what the
    rewrite passes act on: decompose-ops' rules, expand-functions)."""
    out: Dict[str, Set[str]] = {}
    for f in static_findings(model, profile):
        if f.node is not None and f.severity in PROBLEM_SEVERITIES:
            out.setdefault(f.node, set()).add(f.rule)
    return out


def check_model(src, trt=None, real_parser: bool = False, fp16: bool = False) -> CheckResult:
    """Check a model (path, bytes or ModelProto) against a TensorRT version (default: resolve_target).
    ``fp16``: an FP16 engine is wanted (strongly typed targets need the precision in the ONNX)."""
    from ..checks.structural import validate_input
    loaded = load_model(src)
    validate_input(loaded.model, loaded.source)   # the same refusals as `fix` (exit 2)
    target = resolve_target(trt)
    profile = load_profile(target.version)
    findings = static_findings(loaded.model, profile, fp16=fp16)
    findings.sort(key=lambda x: (x.node is not None, SEVERITY_ORDER.get(x.severity, 9)))
    result = CheckResult(loaded.source, target, profile, findings)
    if real_parser:
        result.real_parser = run_backend_parser(profile, loaded.path, loaded.model)
    return result


__all__ = ["Finding", "CheckResult", "ModelFacts", "NodeRef", "Checker", "check_model", "static_findings",
           "flagged_checks",
           "run_real_parser", "run_rtx_parser", "format_table", "PREDICATES", "SCHEMA", "PROBLEM_SEVERITIES",
           "SEVERITY_ORDER", "KNOWN_TRT_PLUGINS"]
