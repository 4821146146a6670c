"""expand-functions: ops the target cannot import, replaced by the function body ONNX defines for them.

The ONNX spec defines many ops as graphs of simpler ops (graphfix.onnx_functions). Where the target's
parser has no importer for such an op and no other pass rewrites it away (NegativeLogLikelihoodLoss,
SoftmaxCrossEntropyLoss, AffineGrid on 8.6), or where the target imports it only in part
(LayerNormalization whose Mean / InvStdDev outputs are used: 8.6 and 10.x produce only Y), the node
becomes its body, inlined by onnx with the opset converted to the model's; function ops inside a body
that the target lacks as well are inlined in turn. The body is ONNX's definition of the op, so the
meaning is kept by construction; ONNX Runtime checks it anyway.

It runs after fold-constants, so that the ranks of computed tensors are known (a body needs them: its
axes come from its inputs' ranks), folds the bodies' shape arithmetic itself (Shape, Size,
ConstantOfShape over static dims) with fold-constants, and runs before the passes that fix what remains
in them (unify-if for the constant Ifs of AffineGrid's body, target-opset, int64-to-int32, ...). Ops with a dedicated rewrite (decompose-ops' Attention, CenterCropPad, ...) are
left to it where its match takes the node; where that match refuses it (an Attention with a sliding
window, a CenterCropPad with a computed shape), this pass inlines the body instead: its missing-op
rows are the table of remedies' fallbacks.
"""
from __future__ import annotations

from typing import Set

import onnx
import onnx_graphsurgeon as gs

from graphfix.graph_utils import NameMaker, nodes_deep
from graphfix.opset import is_default_domain
from graphfix.onnx_functions import NoFunctionBody, expanded_model, function_ops, has_function_body, value_types
from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.registry import register_pass
from graphfix.remedies import fixes_finding, fixes_missing_op

PASS_NAME = "expand-functions"
# profile checks that say the target imports the op only in part; the body has no such limit
PARTIAL_IMPORT_CHECKS = {"max_used_outputs": ("LayerNormalization",)}


@register_pass
class ExpandFunctions(Pass):
    info = PassInfo(
        name=PASS_NAME,
        summary="Ops the target cannot import -> the function body ONNX defines for them "
                "(NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss, AffineGrid, ...)",
        fixes="No importer registered for op: NegativeLogLikelihoodLoss / SoftmaxCrossEntropyLoss / AffineGrid; "
              "LayerNormalization with its Mean / InvStdDev outputs used",
        after=("fold-constants",),
        before=("unify-if",),
        remedies=(fixes_missing_op(function_ops(), fallback=True, applies=lambda site: _ranks_known(site),
                                   ops_label="the ops the installed onnx defines as functions of other ops",
                                   why="inlines the op's ONNX function body"),
                  *(fixes_finding(check, ops=ops, applies=lambda site: _ranks_known(site),
                                  why="inlines the op's ONNX function body (all outputs)")
                    for check, ops in PARTIAL_IMPORT_CHECKS.items())),
    )

    def run(self, graph: gs.Graph) -> PassResult:
        result = PassResult()
        opset = int(graph.opset)
        from graphfix.profiles import load_profile
        profile = load_profile(self.context.target)
        candidates = [n for n in graph.nodes if is_default_domain(n)
                      and self._lacks(n.op, profile) is not None and has_function_body(n.op, opset)]
        if not candidates:
            return result
        from graphfix.diagnosis import flagged_checks
        from graphfix.plugin_rules.ops_base import refusals
        model = gs.export_onnx(graph, do_type_check=False)
        flagged = flagged_checks(model, profile)
        refused = refusals(model, self.context.target) \
            if any(self._lacks(n.op, profile) == "owned" for n in candidates) else {}
        types = value_types(model)
        protos = {n.name: n for n in model.graph.node}
        names = NameMaker(graph, PASS_NAME)
        also_expand = lambda n: self._lacks(n.op_type, profile) == "missing" and has_function_body(n.op_type, opset)  # noqa: E731
        for node in candidates:
            why = self._lacks(node.op, profile)
            if why == "partial" and not flagged.get(node.name, set()) & set(PARTIAL_IMPORT_CHECKS):
                continue
            if why == "owned" and node.name not in refused:   # the dedicated rewrite takes it
                continue
            unranked = [t.name for t in node.inputs if t.name and not _has_rank(types.get(t.name))]
            if unranked:
                result.warn(f"{node.name} ({node.op}) not expanded: the rank of {', '.join(unranked)} is unknown "
                            "(a body computes its axes from it, at run time then)")
                result.count("near_misses")
                continue
            try:
                body = expanded_model(protos[node.name], types, opset, also_expand)
            except NoFunctionBody as exc:
                result.warn(f"{node.name} ({node.op}) not expanded: {exc}")
                result.count("near_misses")
                continue
            count = _splice(graph, node, body, names)
            result.change("expand", node.name, {"op": node.op, "nodes": count, "why": {
                "missing": "no importer", "partial": "the target imports it only in part",
                "owned": f"no importer, and its dedicated rewrite refuses it: {refused.get(node.name)}"}[why]})
            result.count("functions_expanded")
        if result.modified:
            graph.cleanup().toposort()
            from graphfix.passes.fold_constants import refold
            refold(graph, self.context, result)   # the bodies' shape arithmetic (Shape, Size, ConstantOfShape)
        return result

    def _lacks(self, op: str, profile):
        """'missing': no importer and no other pass rewrites it; 'owned': no importer, and another
        pass's rule rewrites it where its match takes the node; 'partial': imported with limits this
        pass lifts; None: nothing to do."""
        from graphfix.remedies import passes_for_missing_op
        if not profile.imports(op):
            others = [p for p in passes_for_missing_op(op, "", self.context.target) if p != PASS_NAME]
            return "owned" if others else "missing"
        return "partial" if any(op in ops for ops in PARTIAL_IMPORT_CHECKS.values()) else None


def _has_rank(value_type) -> bool:
    return value_type is not None and value_type.tensor_type.HasField("shape")


def _ranks_known(site) -> bool:
    """The bodies compute axes and sizes from their inputs' ranks: with every rank known, fold-constants
    makes them constants; without, they stay run-time values the target may refuse."""
    return all(site.facts.rank(name) is not None for name in site.ref.node.input if name)


def _splice(graph: gs.Graph, node: gs.Node, body: onnx.ModelProto, names: NameMaker) -> int:
    """Replace `node` by the nodes of `body` (whose inputs and outputs carry the node's tensor names);
    every other tensor and node of the body, in its subgraphs too, gets a fresh name. Returns how many
    top-level nodes went in."""
    inner = gs.import_onnx(body)
    outer = {t.name: t for t in list(node.inputs) + list(node.outputs) if t.name}
    node.inputs.clear()
    node.outputs.clear()
    renamed: Set[int] = set()
    for n in nodes_deep(inner):
        n.name = names(n.op)
        for wires in (n.inputs, n.outputs):
            for i, t in enumerate(wires):
                if t.name in outer:
                    wires[i] = outer[t.name]
                elif t.name and id(t) not in renamed:
                    t.name = names("c" if isinstance(t, gs.Constant) else "t")
                    renamed.add(id(t))
    graph.nodes.extend(inner.nodes)
    return len(inner.nodes)

