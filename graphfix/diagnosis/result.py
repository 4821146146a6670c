"""What `graphfix check` returns: findings, the result, its JSON form (``graphfix check --json``).

JSON schema::

    {"schema": "graphfix.check/1", "model": str, "target": {"version": str, "source": str},
     "profile": {"line": str, "version": str}, "clean": bool,
     "counts": {"error": int, "wrong-result": int, "warning": int},
     "findings": [{"node": str|null, "op": str|null, "severity": "error"|"wrong-result"|"warning",
                   "reason": str, "fix_pass": str|null, "source": str, "rule": str}],
     "real_parser": null | {"available": bool, "reason": str, "parsed": bool, "crashed": bool,
                            "errors": [{"node": str|null, "op": str|null, "message": str}],
                            # with the TensorRT-RTX backend (profiles with "real_backend": "rtx"):
                            "backend": "rtx", "label": str, "built": bool}}

Findings have a severity:
  error         the parser or builder rejects the node (or the engine cannot run);
  wrong-result  TensorRT builds and runs the node but computes something else than ONNX;
  warning       works, with a caveat (precision risk, narrowed types, nondeterminism).
A model is clean when no finding is an error or a wrong result. ``fix_pass`` is the graphfix pass
that fixes the finding (from the table of remedies, graphfix.remedies), or null ("no automatic fix").
``node`` is null for model-level findings. ``source`` is the citation the fact comes from. ``rule``
is the finding's kind: a profile check name or a checker finding such as ``int64-weights``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..profiles import SEVERITY_ORDER, Profile  # noqa: F401  (SEVERITY_ORDER: part of this module's API)
from ..target import Target

SCHEMA = "graphfix.check/1"
PROBLEM_SEVERITIES = ("error", "wrong-result")


@dataclass(frozen=True)
class Finding:
    node: Optional[str]
    op: Optional[str]
    severity: str
    reason: str
    fix_pass: Optional[str]
    source: str
    rule: str
    flag: Optional[str] = None      # the `graphfix fix` flag fix_pass needs here (a conditional row's)

    def to_json(self) -> dict:
        out = {"node": self.node, "op": self.op, "severity": self.severity, "reason": self.reason,
               "fix_pass": self.fix_pass, "source": self.source, "rule": self.rule}
        if self.flag:
            out["flag"] = self.flag
        return out


@dataclass
class CheckResult:
    model: str
    target: Target
    profile: Profile
    findings: List[Finding] = field(default_factory=list)
    real_parser: Optional[dict] = None

    @property
    def clean(self) -> bool:
        return not any(f.severity in PROBLEM_SEVERITIES for f in self.findings)

    @property
    def exit_code(self) -> int:
        return 0 if self.clean else 1

    def counts(self) -> Dict[str, int]:
        out = {"error": 0, "wrong-result": 0, "warning": 0}
        for f in self.findings:
            out[f.severity] = out.get(f.severity, 0) + 1
        return out

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "model": self.model, "target": self.target.to_json(),
                "profile": {"line": self.profile.line, "version": str(self.profile.version)},
                "clean": self.clean, "counts": self.counts(),
                "findings": [f.to_json() for f in self.findings], "real_parser": self.real_parser}

    def table(self) -> str:
        return format_table(self)


def format_table(result: CheckResult, width: int = 100, verbosity: int = 0) -> str:
    """The terminal rendering (graphfix.check_render)."""
    from ..check_render import render_check
    return render_check(result, width=width, verbosity=verbosity)
