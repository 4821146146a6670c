"""Run bool tensors through data-movement ops (and ops that refuse bool) as INT32 instead.

TensorRT's Myelin backend cannot take bool I/O in data-movement ops ("Slice_79 requires bool I/O
but node can not be handled by Myelin."; the same for Expand, Gather, Concat, Reshape, Tile,
Transpose, Squeeze, Unsqueeze), and TensorRT 8.6's Equal refuses bool inputs. Which ops are
affected comes from the target's profile (``myelin_bool_unsafe_ops``, ``bool_rejecting_ops``).

A chain is a connected group of bool tensors joined by such ops through a shared ONNX type
variable (Slice's data and output, Concat's inputs and output, Equal's two inputs). The whole
chain becomes INT32 at once: bool constants feeding it are retyped in place, every other entry
gets one Cast to INT32, and one Cast back to BOOL is added per tensor that a consumer reads as
bool (Where's condition, Not/And/Or, graph outputs, unknown ops). Consumers that do not care about
the element type (Shape, Size, Cast to a non-string type) read the INT32 tensor directly.
All these ops only move, copy or compare values, so 0/1 in INT32 gives the same results as bool.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto

from graphfix.graph_utils import NameMaker
from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.profiles import load_profile
from graphfix.registry import register_pass
from graphfix.remedies import fixes_finding, fixes_parser_error

from ._type_islands import Retyper, SlotType, TypeVarAnalysis, Use, infer_elem_types, node_slots

# Reads whose result does not depend on the element type: they may read the INT32 version.
_TYPE_BLIND = {"Shape", "Size"}


def _reads_either(use: Use) -> bool:
    if use.nested or (use.node.domain or "") not in ("", "ai.onnx"):
        return False
    if use.node.op in _TYPE_BLIND:
        return True
    return use.node.op == "Cast" and use.node.attrs.get("to") != TensorProto.STRING


@register_pass
class CastBool(Pass):
    info = PassInfo(
        name="cast-bool",
        summary="Move bool tensors that flow through data-movement ops (and ops that refuse bool) "
                "to INT32: one Cast in per chain entry, one Cast back per bool consumer",
        fixes="Slice_79 requires bool I/O but node can not be handled by Myelin.",
        after=("int64-to-int32",),
        remedies=(
            fixes_finding("myelin-bool", why="bool data through ops Myelin rejects for bool goes as INT32"),
            fixes_finding("dtype", applies=lambda site: site.params.get("dtype") == "BOOL"
                          and site.ref.node.op_type in site.profile.bool_rejecting_ops,
                          why="bool inputs of ops that refuse bool go as INT32"),
            fixes_parser_error(r"requires bool I/O|\bBOOL\b",
                               why="a TensorRT region (Myelin) cannot take or give BOOL tensors"),
        ),
    )

    def run(self, graph: gs.Graph) -> PassResult:
        result = PassResult()
        profile = load_profile(self.context.target)
        affected = set(profile.myelin_bool_unsafe_ops) | set(profile.bool_rejecting_ops)
        if not affected or not any(node.op in affected for node in graph.nodes):
            return result
        types = infer_elem_types(graph)
        members = _chain_members(graph, affected, types)   # node indices
        if not members:
            return result

        def binds(index: int, node: gs.Node, slot: SlotType) -> bool:
            return index in members and TensorProto.BOOL in slot.allowed and TensorProto.INT32 in slot.allowed

        analysis = TypeVarAnalysis(graph, binds)
        retyper = Retyper(graph, analysis, NameMaker(graph, "cast-bool"), result,
                          TensorProto.BOOL, TensorProto.INT32, either_ok=_reads_either)
        bool_tensors = [name for name, elem in types.items() if elem == TensorProto.BOOL]
        for chain in analysis.islands(bool_tensors):
            if not chain.bound:
                continue
            if any(types.get(n, TensorProto.BOOL) != TensorProto.BOOL for n in chain.tensors):
                result.warn(f"{chain.anchor}: bool chain not moved to INT32, it mixes element types")
                continue
            stats = retyper.retype(chain, lambda name, values: np.asarray(values).astype(np.int32))
            ops = sorted({u.node.op for n in chain.tensors for u in analysis.uses.get(n, []) if u.bound})
            result.change("retype", chain.anchor, {
                "from": "BOOL", "to": "INT32", "tensors": stats.tensors, "casts": len(stats.casts),
                "constant_copies": len(stats.copies), "ops": ops})
            result.count("chains")
            result.count("tensors_retyped", stats.tensors)
            result.count("casts_inserted", len(stats.casts))
            result.count("constants_copied", len(stats.copies))
        retyper.finish()
        return result


def _chain_members(graph: gs.Graph, affected: set, types) -> set:
    """Indices of the nodes of an affected op with a bool tensor on a position typed by a bool/INT32 variable."""
    opset = int(graph.opset)
    members = set()
    for index, node in enumerate(graph.nodes):
        if node.op not in affected:
            continue
        slots = node_slots(node, opset)
        if slots is None:
            continue
        for tensor, slot in list(zip(node.inputs, slots[0])) + list(zip(node.outputs, slots[1])):
            if slot is None or slot.var is None or tensor.is_empty():
                continue
            if TensorProto.BOOL in slot.allowed and TensorProto.INT32 in slot.allowed \
                    and types.get(tensor.name) == TensorProto.BOOL:
                members.add(index)
                break
    return members
