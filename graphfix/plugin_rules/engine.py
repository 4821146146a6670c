"""Apply a set of rules to a graph: select by target/options, match at each anchor, rewrite, record."""
from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, List, Sequence

import onnx_graphsurgeon as gs

from ..graph_utils import NameMaker, toposort_if_needed
from .build import Builder, FieldError
from .patterns import inferred_shapes
from .rule import NearMiss, Rule

if TYPE_CHECKING:  # pragma: no cover
    from ..pass_api import PassContext, PassResult

CHANGE_OUTPUTS = "change-outputs"   # a recorded change that the pipeline accepts as an I/O change
_ONNX_DOMAINS = ("", "ai.onnx")


def count_key(rule_name: str) -> str:
    """A rule's count key: its name in snake_case, as every pass's counts are ("fast-gelu" -> "fast_gelu")."""
    return re.sub(r"[^0-9a-z]+", "_", rule_name.lower()).strip("_")


def domain_matches(node_domain, wanted: str) -> bool:
    node_domain = node_domain or ""
    if wanted in _ONNX_DOMAINS:
        return node_domain in _ONNX_DOMAINS
    return node_domain == wanted


def anchors(graph: gs.Graph, rule: Rule) -> List[gs.Node]:
    return [n for n in graph.nodes if n.op in rule.anchor_ops and domain_matches(n.domain, rule.anchor_domain)]


def apply_rules(graph: gs.Graph, rules: Sequence[Rule], ctx: "PassContext", result: "PassResult",
                prefix: str, action: str) -> bool:
    """Run each wanted rule at each of its anchors, in graph order; returns whether anything changed."""
    wanted_rules = [r for r in rules if r.wanted(ctx)[0] and anchors(graph, r)]
    with inferred_shapes(graph) if wanted_rules else contextlib.nullcontext():
        return _apply(graph, rules, ctx, result, prefix, action)


def _apply(graph, rules, ctx, result, prefix, action) -> bool:
    build = Builder(graph, NameMaker(graph, prefix), ctx)
    changed = False
    for rule in rules:
        wanted, why_not = rule.wanted(ctx)
        if not wanted:
            if why_not and anchors(graph, rule):
                result.warn(why_not)
            continue
        for node in anchors(graph, rule):
            if not node.outputs:          # consumed by an earlier match of this pass
                continue
            try:
                found = rule.match(graph, node, ctx)
            except FieldError as exc:
                found = NearMiss(node.name, str(exc))
            if found is None:
                continue
            if isinstance(found, NearMiss):
                result.warn(f"{rule.name}: {found.anchor} not rewritten: {found.reason}")
                result.count(f"near_miss_{count_key(rule.name)}")
                continue
            extra = rule.rewrite(graph, found, build) or {}
            details = {"rule": rule.name, "replaced": sorted(n.op for n in found.nodes)}
            if rule.plugin is not None and rule.kind == "plugin":
                details["plugin"] = f"{rule.plugin.name} v{rule.plugin.version}"
            details.update(found.details)
            details.update(extra)
            result.change(action, found.anchor, details)
            if rule.changes_outputs:
                result.change(CHANGE_OUTPUTS, found.anchor, {
                    "rule": rule.name, "removed": found.data.get("removed_outputs", []),
                    "added": [t.name for t in found.outputs]})
            result.count(count_key(rule.name))
            changed = True
        for warning in build.warnings:
            result.warn(warning)
        build.warnings.clear()
    if changed:
        toposort_if_needed(graph)
    return changed
