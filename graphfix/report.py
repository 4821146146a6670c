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


def input_facts(model: onnx.ModelProto) -> Dict[str, Any]:
    """What model_differences needs of the input, taken before any pass runs (a large model's
    passes may rewrite it in place)."""
    return {"ir_version": model.ir_version, "unused_initializers": _unused_initializers(model)}


def model_differences(before: Dict[str, Any], after: onnx.ModelProto, passes=()) -> Dict[str, Any]:
    """What differs between the input (its ``input_facts``) and the output that no pass records as a
    change of its own: the IR version (the export stamps at most graph_utils.OUTPUT_IR_VERSION) and
    initializers no node read, which the export drops (those a record in ``passes`` names as its
    change target aside). Empty when nothing of the kind differs."""
    diff: Dict[str, Any] = {}
    if before["ir_version"] != after.ir_version:
        diff["ir_version"] = {"from": before["ir_version"], "to": after.ir_version}
    if before["unused_initializers"]:
        kept = {t.name for t in after.graph.initializer}
        recorded = {c.get("target") for p in passes if p.status == APPLIED for c in p.changes}
        dropped = sorted(n for n in before["unused_initializers"] - recorded if n not in kept)
        if dropped:
            diff["dropped_unused_initializers"] = dropped
    return diff


def _unused_initializers(model: onnx.ModelProto) -> set:
    """Initializers that no node (subgraphs included) and no graph output reads."""
    names = {t.name for t in model.graph.initializer}
    if not names:
        return set()
    read = {o.name for o in model.graph.output}
    stack = [model.graph]
    while stack:
        g = stack.pop()
        for node in g.node:
            read.update(node.input)
            for attr in node.attribute:
                stack.extend([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs))
    return names - read


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
    traceback: Optional[str] = None  # a failed pass: the full Python traceback

    def to_json(self) -> dict:
        doc = {"name": self.name, "status": self.status, "seconds": round(self.seconds, 4),
               "counts": self.counts, "changes": self.changes, "warnings": self.warnings,
               "check": self.check, "error": self.error}
        if self.traceback:
            doc["traceback"] = self.traceback
        return doc


@dataclass
class Report:
    input: Dict[str, Any]
    target: Dict[str, str]
    output: Optional[Dict[str, Any]] = None
    passes: List[PassReport] = field(default_factory=list)
    checks: List[dict] = field(default_factory=list)   # whole-model checks: {"kind", "passed", ...}
    seconds: float = 0.0
    inputs: Optional[dict] = None    # the inputs the ONNX Runtime checks used (checks.input_search)
    differences: Dict[str, Any] = field(default_factory=dict)   # input vs output beyond the passes' changes

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
                "passes": [p.to_json() for p in self.passes], "checks": self.checks, "inputs": self.inputs,
                "differences": self.differences}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False)

    def summary(self, verbose: bool = False, report_path: Optional[str] = None) -> str:
        """The terminal summary (graphfix.render.fix_summary)."""
        from .render import fix_summary
        return fix_summary(self, verbose=verbose, report_path=report_path)
