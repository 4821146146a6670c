"""ScatterElements / ScatterND with reduction = add / mul / max / min -> one-hot Where + Reduce*.

TensorRT 8.6 ignores the reduction attribute (it overwrites, so duplicate indices lose updates).
The rewrite builds, for every update, a one-hot row over the positions of the scattered axis
(ScatterElements) or of the flattened indexed dims (ScatterND), puts the update where the row is
true and the reduction's neutral element elsewhere, reduces over the updates, and combines the
result with the data by the reduction itself:

    ScatterElements(data, idx, upd, axis=a):  hit[p, n] = (idx[p] mod-normalized == n)
        S = Reduce_a(Where(hit, upd[..., None], neutral)) moved to axis a, padded to data's shape
    ScatterND(data, idx[Q, k], upd):           flat[q] = sum_j idx[q, j] * stride_j
        S = Reduce_0(Where(flat[:, None] == arange(P), upd[q], neutral)) reshaped to data's shape
    out = data (+ | * | max | min) S

Duplicates are reduced by Reduce* (any order: for float add/mul the rounding can differ from a
sequential loop by an ulp or so; integers are exact). Neutral elements: 0, 1, -inf, +inf, so
positions nothing hits keep data. Limits (refused with a note): data and indices shapes must be
static; the one-hot intermediate must hold at most ops_base.MAX_ONE_HOT_ELEMENTS elements;
integer mul/max/min are refused (ReduceProd/Max/Min there would run on integer data, which the
8.6 profile lists as float-only), integer add is exact through ReduceSum.
"""
from __future__ import annotations

import numpy as np

from .build import remove_nodes
from .ops_base import (MAX_ONE_HOT_ELEMENTS, OpsDecompose, dtype_or_float, prod, reduce, static_shape,
                       unsqueeze)
from .patterns import const, dtype_of
from .registry import register_rule
from .rule import Match, NearMiss

REDUCE_OP = {"add": "ReduceSum", "mul": "ReduceProd", "max": "ReduceMax", "min": "ReduceMin"}
COMBINE_OP = {"add": "Add", "mul": "Mul", "max": "Max", "min": "Min"}


def neutral(reduction: str, dtype: np.dtype):
    if reduction == "add":
        return np.zeros((), dtype)
    if reduction == "mul":
        return np.ones((), dtype)
    if np.issubdtype(dtype, np.floating):
        return np.asarray(-np.inf if reduction == "max" else np.inf, dtype)
    info = np.iinfo(dtype)
    return np.asarray(info.min if reduction == "max" else info.max, dtype)


class _ScatterReduce(OpsDecompose):
    fixes_checks = ("attr_in",)

    def common(self, node):
        reduction = node.attrs.get("reduction", "none")
        if reduction == "none":
            return None, None
        if reduction not in REDUCE_OP:
            return None, NearMiss(node.name, f"unknown reduction '{reduction}'")
        data, indices = node.inputs[0], node.inputs[1]
        dshape, ishape = static_shape(data), static_shape(indices)
        if dshape is None or ishape is None:
            return None, NearMiss(node.name, "data and indices need static shapes")
        dtype = dtype_of(data)
        if dtype is None or dtype_of(indices) is None:
            return None, NearMiss(node.name, "data or indices type unknown")
        if not np.issubdtype(dtype, np.floating) and reduction != "add":
            return None, NearMiss(node.name, f"integer data with reduction='{reduction}' (only add is exact "
                                             "without an integer ReduceProd/Max/Min)")
        return (reduction, dshape, ishape, dtype), None


@register_rule
class ScatterElementsReduce(_ScatterReduce):
    name = "scatter-elements-reduction"
    summary = "ScatterElements with reduction -> one-hot Where + Reduce* + Add/Mul/Max/Min"
    anchor_ops = ("ScatterElements",)

    def match_node(self, graph, node, ctx):
        facts, miss = self.common(node)
        if facts is None:
            return miss
        reduction, dshape, ishape, _ = facts
        axis = int(node.attrs.get("axis", 0)) % len(dshape)
        size = prod(ishape) * dshape[axis]
        if size > MAX_ONE_HOT_ELEMENTS:
            return NearMiss(node.name, f"one-hot intermediate of {size} elements (limit {MAX_ONE_HOT_ELEMENTS})")
        return Match(anchor=node.name, nodes=[node], inputs=list(node.inputs), outputs=[node.outputs[0]],
                     details={"reduction": reduction, "axis": axis},
                     data={"dshape": dshape, "ishape": ishape, "axis": axis, "reduction": reduction})

    def rewrite(self, graph, match, build):
        data, indices, updates = match.inputs
        out = match.outputs[0]
        d = match.data
        dshape, ishape, axis, reduction = d["dshape"], d["ishape"], d["axis"], d["reduction"]
        dtype, itype = dtype_or_float(data), dtype_of(indices)
        rank, n = len(dshape), dshape[axis]
        remove_nodes(graph, match.nodes)
        idx = normalized_indices(build, indices, np.asarray(n, itype), itype)
        rng = build.const(np.arange(n, dtype=itype).reshape([1] * rank + [n]), "positions")
        hit = build.op("Equal", unsqueeze(build, graph, idx, [rank], dtype=itype), rng, dtype=np.bool_)
        upd = unsqueeze(build, graph, updates, [rank], dtype=dtype)
        spread = build.op("Where", hit, upd, build.const(neutral(reduction, dtype), "neutral"), dtype=dtype)
        summed = reduce(build, graph, REDUCE_OP[reduction], spread, [axis], keepdims=0, dtype=dtype)
        perm = [j if j < axis else j - 1 for j in range(rank)]
        perm[axis] = rank - 1
        placed = build.op("Transpose", summed, attrs={"perm": perm}, dtype=dtype)
        pads = [0] * rank + [dshape[k] - (n if k == axis else ishape[k]) for k in range(rank)]
        if any(pads):
            placed = build.op("Pad", placed, build.const(np.asarray(pads, np.int64), "pads"),
                              build.const(neutral(reduction, dtype), "neutral"), dtype=dtype)
        build.node(COMBINE_OP[reduction], [data, placed], outputs=[out])
        return {}


@register_rule
class ScatterNDReduce(_ScatterReduce):
    name = "scatter-nd-reduction"
    summary = "ScatterND with reduction -> flattened one-hot Where + Reduce* + Add/Mul/Max/Min"
    anchor_ops = ("ScatterND",)

    def match_node(self, graph, node, ctx):
        facts, miss = self.common(node)
        if facts is None:
            return miss
        reduction, dshape, ishape, _ = facts
        k = ishape[-1]
        if not 1 <= k <= len(dshape):
            return NearMiss(node.name, f"indices' last dim {k} outside [1, rank(data)]")
        size = prod(ishape[:-1]) * prod(dshape)
        if size > MAX_ONE_HOT_ELEMENTS:
            return NearMiss(node.name, f"one-hot intermediate of {size} elements (limit {MAX_ONE_HOT_ELEMENTS})")
        return Match(anchor=node.name, nodes=[node], inputs=list(node.inputs), outputs=[node.outputs[0]],
                     details={"reduction": reduction, "index_depth": k},
                     data={"dshape": dshape, "ishape": ishape, "reduction": reduction})

    def rewrite(self, graph, match, build):
        data, indices, updates = match.inputs
        out = match.outputs[0]
        dshape, ishape, reduction = match.data["dshape"], match.data["ishape"], match.data["reduction"]
        dtype, itype = dtype_or_float(data), dtype_of(indices)
        k = ishape[-1]
        positions, rest, count = prod(dshape[:k]), prod(dshape[k:]), prod(ishape[:-1])
        strides = [prod(dshape[j + 1:k]) for j in range(k)]
        remove_nodes(graph, match.nodes)
        idx = normalized_indices(build, indices, np.asarray(dshape[:k], itype), itype)
        flat = reduce(build, graph, "ReduceSum",
                      build.op("Mul", idx, build.const(np.asarray(strides, itype), "strides"), dtype=itype),
                      [len(ishape) - 1], keepdims=0, dtype=itype)
        column = build.op("Reshape", flat, build.const(np.asarray([count, 1, 1], np.int64), "shape"), dtype=itype)
        rng = build.const(np.arange(positions, dtype=itype).reshape(1, positions, 1), "positions")
        hit = build.op("Equal", column, rng, dtype=np.bool_)
        upd = build.op("Reshape", updates, build.const(np.asarray([count, 1, rest], np.int64), "shape"),
                       dtype=dtype)
        spread = build.op("Where", hit, upd, build.const(neutral(reduction, dtype), "neutral"), dtype=dtype)
        summed = reduce(build, graph, REDUCE_OP[reduction], spread, [0], keepdims=0, dtype=dtype)
        placed = build.op("Reshape", summed, build.const(np.asarray(dshape, np.int64), "shape"), dtype=dtype)
        build.node(COMBINE_OP[reduction], [data, placed], outputs=[out])
        return {}


def normalized_indices(build, indices, size: np.ndarray, itype):
    """indices + size where indices < 0 (ONNX allows negative scatter indices); computed here when
    the indices are constant (fold-constants ran before this pass)."""
    known = const(indices)
    if known is not None:
        return build.const(np.where(known < 0, known + size, known).astype(itype), "indices")
    negative = build.op("Less", indices, build.const(np.zeros((), itype), "zero"), dtype=np.bool_)
    shifted = build.op("Add", indices, build.const(size, "size"), dtype=itype)
    return build.op("Where", negative, shifted, indices, dtype=itype)
