"""The run report: JSON with a documented schema (README, "Report schema") and a terminal summary."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import onnx

SCHEMA = "graphfix.report/1"

# Pass statuses
APPLIED = "applied"          # changed the graph, checks passed (or were not requested)
UNCHANGED = "unchanged"      # ran, nothing to do
ROLLED_BACK = "rolled-back"  # changed the graph but a check failed: its changes were undone
FAILED = "failed"            # raised; its changes were undone
SKIPPED = "skipped"          # not run (target does not need it, or a dependency is missing)


def model_summary(model: onnx.ModelProto, path: Optional[str] = None) -> Dict[str, Any]:
    from collections import Counter
    ops = Counter(n.op_type if not n.domain or n.domain == "ai.onnx" else f"{n.domain}::{n.op_type}"
                  for n in model.graph.node)
    return {
        "path": path,
        "nodes": len(model.graph.node),
        "initializers": len(model.graph.initializer),
        "ir_version": model.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "inputs": [_io(v) for v in model.graph.input if v.name not in {i.name for i in model.graph.initializer}],
        "outputs": [_io(v) for v in model.graph.output],
        "op_counts": dict(sorted(ops.items())),
    }


def _io(value_info) -> Dict[str, Any]:
    t = value_info.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    return {"name": value_info.name, "dtype": onnx.TensorProto.DataType.Name(t.elem_type), "shape": dims}


@dataclass
class PassReport:
    name: str
    status: str
    seconds: float = 0.0
    counts: Dict[str, int] = field(default_factory=dict)
    changes: List[dict] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    check: Optional[dict] = None     # ONNX Runtime equivalence vs the model before this pass
    error: Optional[str] = None      # why it failed, rolled back or was skipped

    def to_json(self) -> dict:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 4),
                "counts": self.counts, "changes": self.changes, "warnings": self.warnings,
                "check": self.check, "error": self.error}


@dataclass
class Report:
    input: Dict[str, Any]
    target: Dict[str, str]
    output: Optional[Dict[str, Any]] = None
    passes: List[PassReport] = field(default_factory=list)
    checks: List[dict] = field(default_factory=list)   # whole-model checks: {"kind", "passed", ...}
    seconds: float = 0.0
    inputs: Optional[dict] = None    # the inputs the ONNX Runtime checks used (checks.input_search)

    @property
    def ok(self) -> bool:
        """True when no pass failed or was rolled back and every whole-model check passed."""
        return (all(p.status not in (FAILED, ROLLED_BACK) for p in self.passes)
                and all(c.get("passed") or c.get("skipped") for c in self.checks))

    @property
    def verdict(self) -> str:
        """'ok', 'UNCHECKED' (nothing failed, but ONNX Runtime could not run the original) or 'NOT OK'."""
        if self.ok:
            return "ok"
        import copy
        if not any(c.get("unchecked") and c.get("passed") is None for c in self.checks):
            return "NOT OK"
        # would it be ok if the checks ONNX Runtime could not run were not counted? (subclasses too)
        other = copy.copy(self)
        other.checks = [dict(c, skipped=True) if c.get("unchecked") and c.get("passed") is None else c
                        for c in self.checks]
        return "UNCHECKED" if other.ok else "NOT OK"

    @property
    def changed(self) -> bool:
        return any(p.status == APPLIED for p in self.passes)

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "ok": self.ok, "changed": self.changed, "target": self.target,
                "input": self.input, "output": self.output, "seconds": round(self.seconds, 4),
                "passes": [p.to_json() for p in self.passes], "checks": self.checks, "inputs": self.inputs}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False)

    def summary(self, verbose: bool = False, report_path: Optional[str] = None) -> str:
        """The terminal summary (graphfix.render.fix_summary)."""
        from .render import fix_summary
        return fix_summary(self, verbose=verbose, report_path=report_path)
