"""Hardmax (no TensorRT importer) -> float ops that pick the first maximum, as ONNX does.

Along the axis: m = ReduceMax(x); the candidates are the positions where x == m; the first of them is
ReduceMin(Where(x == m, iota, size)) over a constant iota 0..size-1; the output is Cast(iota == first).
Exact: comparisons and small integers held in the input's float type. Ties go to the first index
without relying on ArgMax/TopK's tie order. Opset 13 Hardmax works along one axis; the older form
flattens the dims from `axis` on, which equals the one-axis form only for the last axis (rewritten);
other axes of the older form are refused, as are dynamic axis sizes.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from .build import remove_nodes
from .ops_base import OpsDecompose, reduce
from .patterns import dtype_of, static_dims
from .registry import register_rule
from .rule import Match, NearMiss

EXACT_INTEGERS = {np.dtype(np.float32): 1 << 24, np.dtype(np.float16): 1 << 11}   # iota held exactly below these


@register_rule
class HardmaxDecompose(OpsDecompose):
    name = "hardmax"
    summary = "Hardmax -> ReduceMax, Equal, first maximum by ReduceMin over a constant iota, Equal, Cast (exact)"
    anchor_ops = ("Hardmax",)

    def match_node(self, graph, node, ctx):
        dtype = dtype_of(node.inputs[0])
        if dtype not in EXACT_INTEGERS:
            return NearMiss(node.name, f"Hardmax on {dtype}: FLOAT/FLOAT16 only")
        dims = static_dims(node.inputs[0])
        if not dims:
            return NearMiss(node.name, "the input's rank is unknown")
        rank, opset = len(dims), int(graph.opset)
        axis = int(node.attrs.get("axis", -1 if opset >= 13 else 1))
        if not -rank <= axis < rank:
            return NearMiss(node.name, f"axis {axis} out of range for rank {rank}")
        axis %= rank
        if opset < 13 and axis != rank - 1:
            return NearMiss(node.name, f"Hardmax-{opset} flattens the dims from axis {axis} on; "
                                       "only the last axis is rewritten")
        size = dims[axis]
        if size is None:
            return NearMiss(node.name, "the size along the axis must be static")
        if size >= EXACT_INTEGERS[dtype]:
            return NearMiss(node.name, f"{size} positions do not fit exactly in {dtype}")
        return Match(anchor=node.name, nodes=[node], inputs=[node.inputs[0]], outputs=[node.outputs[0]],
                     details={"axis": axis}, data={"axis": axis, "size": size, "rank": rank, "dtype": dtype})

    def rewrite(self, graph, match, build):
        d = match.data
        x, out, dtype, axis = match.inputs[0], match.outputs[0], d["dtype"], d["axis"]
        remove_nodes(graph, match.nodes)
        shape = [1] * d["rank"]
        shape[axis] = d["size"]
        iota = build.const(np.arange(d["size"], dtype=dtype).reshape(shape), "iota")
        biggest = reduce(build, graph, "ReduceMax", x, [axis], dtype=dtype)
        is_max = build.op("Equal", x, biggest, dtype=np.bool_)
        candidates = build.op("Where", is_max, iota, build.const(np.asarray(d["size"], dtype), "past_end"), dtype=dtype)
        first = reduce(build, graph, "ReduceMin", candidates, [axis], dtype=dtype)
        hit = build.op("Equal", iota, first, dtype=np.bool_)
        build.node("Cast", [hit], outputs=[out], attrs={"to": helper.np_dtype_to_tensor_dtype(dtype)})
        return {}
