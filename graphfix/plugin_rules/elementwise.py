"""BitwiseAnd/Or/Xor/Not in ops TensorRT 8.6 imports, exactly.

Bitwise ops (no 8.6 importer): two's complement arithmetic on INT32, exact over the whole range
  without overflow. A value splits into its sign (x < 0) and its low 31 bits (x - INT32_MIN for
  negative x, computed as (x + INT32_MAX) + 1 from a negative operand only); the low bits come from
  integer division by powers of two (trunc = floor on non-negative values), combine per bit
  (and: p*q, or: p+q-p*q, xor: p+q-2*p*q), sum back with ReduceSum; the sign combines the same way.
  Not is -1 - x (exact for every INT32; for unsigned types max - x). INT8/INT16/UINT8/UINT16 go
  through INT32 (Cast; bitwise ops commute with sign/zero extension). INT64/UINT32/UINT64 are refused:
  they need more than INT32's bits, which 8.6 does not have.
"""
from __future__ import annotations

import numpy as np

from .build import remove_nodes
from .ops_base import OpsDecompose, reduce, unsqueeze
from .patterns import dtype_of
from .registry import register_rule
from .rule import Match, NearMiss

INT32_MIN, INT32_MAX = np.iinfo(np.int32).min, np.iinfo(np.int32).max
VIA_INT32 = (np.int8, np.int16, np.int32, np.uint8, np.uint16)


BIT_COMBINE = {"BitwiseAnd": "and", "BitwiseOr": "or", "BitwiseXor": "xor"}


@register_rule
class BitwiseDecompose(OpsDecompose):
    name = "bitwise"
    summary = "BitwiseAnd/Or/Xor/Not on integers up to 32 bits -> exact INT32 arithmetic"
    anchor_ops = ("BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot")

    def match_node(self, graph, node, ctx):
        dtype = dtype_of(node.inputs[0])
        if dtype is None:
            return NearMiss(node.name, "input type unknown")
        if dtype.type not in VIA_INT32:
            return NearMiss(node.name, f"{dtype} needs more bits than TensorRT's INT32 holds exactly")
        return Match(anchor=node.name, nodes=[node], inputs=list(node.inputs), outputs=[node.outputs[0]],
                     details={"dtype": str(dtype)}, data={"dtype": dtype})

    def rewrite(self, graph, match, build):
        node = match.nodes[0]
        op, dtype, out = node.op, match.data["dtype"], match.outputs[0]
        remove_nodes(graph, match.nodes)
        xs = [x if dtype == np.int32 else build.op("Cast", x, attrs={"to": 6}, dtype=np.int32)
              for x in match.inputs]
        i32 = lambda v, hint="c": build.const(np.asarray(v, np.int32), hint)  # noqa: E731
        if op == "BitwiseNot":
            top = np.iinfo(dtype).max if np.issubdtype(dtype, np.unsignedinteger) else -1
            y = build.op("Sub", i32(top, "top"), xs[0], dtype=np.int32)
        else:
            (sa, la), (sb, lb) = [_split(build, x, i32) for x in xs]
            powers = i32(2 ** np.arange(31, dtype=np.int64), "powers")
            pa, pb = [_bits(build, graph, lx, powers, i32) for lx in (la, lb)]
            how = BIT_COMBINE[op]
            bits = _combine(build, pa, pb, how)
            low = reduce(build, graph, "ReduceSum", build.op("Mul", bits, powers, dtype=np.int32), [-1],
                         keepdims=0, dtype=np.int32)
            sign = _combine(build, sa, sb, how)
            negative = build.op("Equal", sign, i32(1, "one"), dtype=np.bool_)
            y = build.op("Where", negative, build.op("Add", low, i32(INT32_MIN, "int32_min"), dtype=np.int32),
                         low, dtype=np.int32)
        if dtype == np.int32:
            build.node("Identity", [y], outputs=[out])
        else:
            to = {np.int8: 3, np.int16: 5, np.uint8: 2, np.uint16: 4}[dtype.type]
            build.node("Cast", [y], outputs=[out], attrs={"to": to})
        return {}


def _split(build, x, i32):
    """(sign as 0/1, low 31 bits as a non-negative INT32) of an INT32 tensor, without overflow."""
    neg = build.op("Less", x, i32(0, "zero"), dtype=np.bool_)
    sign = build.op("Where", neg, i32(1, "one"), i32(0, "zero"), dtype=np.int32)
    only_neg = build.op("Where", neg, x, i32(-1, "minus_one"), dtype=np.int32)
    low_neg = build.op("Add", build.op("Add", only_neg, i32(INT32_MAX, "int32_max"), dtype=np.int32),
                       i32(1, "one"), dtype=np.int32)
    return sign, build.op("Where", neg, low_neg, x, dtype=np.int32)


def _bits(build, graph, low, powers, i32):
    """[..., 31] bits (0/1) of non-negative INT32 values: (x / 2^k) - 2 * (x / 2^(k+1))."""
    q = build.op("Div", unsqueeze(build, graph, low, [-1], dtype=np.int32), powers, dtype=np.int32)
    half = build.op("Div", q, i32(2, "two"), dtype=np.int32)
    return build.op("Sub", q, build.op("Mul", half, i32(2, "two"), dtype=np.int32), dtype=np.int32)


def _combine(build, p, q, how: str):
    pq = build.op("Mul", p, q, dtype=np.int32)
    if how == "and":
        return pq
    s = build.op("Add", p, q, dtype=np.int32)
    if how == "or":
        return build.op("Sub", s, pq, dtype=np.int32)
    return build.op("Sub", s, build.op("Add", pq, pq, dtype=np.int32), dtype=np.int32)
