"""Pooling the target cannot import -> a depthwise Conv with a kernel of ones (window sums).

TensorRT 8.6 pools without dilations and computes LpPool for p = 1 or 2 only. A window sum is a
Conv with a kernel of ones, one group per channel, the pooling's strides, dilations and pads (zero
padding adds nothing), so:
- LpPool(p):           Pow(Conv(Pow(Abs(x), p)), 1 / p);
- AveragePool:         Conv(x) / count, where count is the kernel size with count_include_pad = 1,
                       and the number of input (not pad) positions in each window otherwise: a
                       constant computed here per output position (the windows are static).
auto_pad becomes the explicit pads ONNX defines for it. Needs a static channel dim (the kernel's
groups), static spatial dims for AveragePool without count_include_pad, and ceil_mode = 0 (a ceil
window running past the pads has its own divisor rules). Sums are exact up to float summation order.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from .build import remove_nodes
from .ops_base import OpsDecompose, prod
from .patterns import dtype_of, static_dims
from .registry import register_rule
from .rule import Match, NearMiss

FLOAT_TYPES = (np.dtype(np.float32), np.dtype(np.float16))


def explicit_pads(auto_pad: str, sizes, kernel, strides, dilations, pads) -> Optional[List[int]]:
    """The begin..., end... pads ONNX defines for `auto_pad` (None where a spatial size is unknown)."""
    rank = len(kernel)
    if auto_pad in ("", "NOTSET"):
        return list(pads) if pads else [0] * (2 * rank)
    if auto_pad == "VALID":
        return [0] * (2 * rank)
    if any(s is None for s in sizes):
        return None
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else total - small)
        ends.append(total - begins[-1])
    return begins + ends


def window_counts(sizes, kernel, strides, dilations, pads) -> np.ndarray:
    """How many input positions (not pads) each output window covers, [1, 1, *out]."""
    rank = len(kernel)
    per_axis = []
    for i, (size, k, s, d) in enumerate(zip(sizes, kernel, strides, dilations)):
        out = (size + pads[i] + pads[rank + i] - (k - 1) * d - 1) // s + 1
        starts = np.arange(out) * s - pads[i]
        taps = starts[:, None] + np.arange(k)[None, :] * d
        per_axis.append(((taps >= 0) & (taps < size)).sum(axis=1))
    counts = per_axis[0]
    for axis_counts in per_axis[1:]:
        counts = np.multiply.outer(counts, axis_counts)
    return counts.reshape([1, 1, *counts.shape])


@register_rule
class PoolViaConv(OpsDecompose):
    name = "pool-via-conv"
    summary = "LpPool (p other than 1, 2; dilations) and dilated AveragePool -> depthwise Conv with a kernel of ones"
    anchor_ops = ("LpPool", "AveragePool")
    fixes_checks = ("attr_in", "attr_all_equal")

    def match_node(self, graph, node, ctx):
        dtype = dtype_of(node.inputs[0])
        if dtype not in FLOAT_TYPES:
            return NearMiss(node.name, f"{node.op} on {dtype}: FLOAT/FLOAT16 only")
        dims = static_dims(node.inputs[0])
        if not dims or dims[1] is None:
            return NearMiss(node.name, "the input needs a known rank and a static channel dim")
        kernel = [int(k) for k in node.attrs["kernel_shape"]]
        rank = len(kernel)
        if int(node.attrs.get("ceil_mode", 0)):
            return NearMiss(node.name, "ceil_mode = 1 (a last window past the pads) is not rewritten")
        strides = [int(s) for s in node.attrs.get("strides", [1] * rank)]
        dilations = [int(d) for d in node.attrs.get("dilations", [1] * rank)]
        auto_pad = node.attrs.get("auto_pad", "NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        pads = explicit_pads(auto_pad, dims[2:], kernel, strides, dilations, node.attrs.get("pads"))
        if pads is None:
            return NearMiss(node.name, f"auto_pad={auto_pad} on dynamic spatial dims")
        data = {"dtype": dtype, "channels": dims[1], "kernel": kernel, "strides": strides,
                "dilations": dilations, "pads": [int(p) for p in pads]}
        if node.op == "LpPool":
            data["p"] = int(node.attrs.get("p", 2))
        elif not int(node.attrs.get("count_include_pad", 0)) and any(data["pads"]):
            if any(d is None for d in dims[2:]):
                return NearMiss(node.name, "count_include_pad = 0 with pads needs static spatial dims")
            data["counts"] = window_counts(dims[2:], kernel, strides, dilations, data["pads"])
        else:
            data["counts"] = np.asarray(prod(kernel))
        return Match(anchor=node.name, nodes=[node], inputs=[node.inputs[0]], outputs=[node.outputs[0]],
                     details={"op": node.op, "kernel_shape": kernel, "dilations": dilations}, data=data)

    def rewrite(self, graph, match, build):
        d = match.data
        x, out, dtype = match.inputs[0], match.outputs[0], d["dtype"]
        remove_nodes(graph, match.nodes)
        if "p" in d:
            x = build.op("Pow", build.op("Abs", x, dtype=dtype), build.const(np.asarray(d["p"], dtype), "p"),
                         dtype=dtype)
        ones = build.const(np.ones([d["channels"], 1, *d["kernel"]], dtype), "ones")
        sums = build.op("Conv", x, ones, attrs={"group": d["channels"], "kernel_shape": d["kernel"],
                                                "strides": d["strides"], "dilations": d["dilations"],
                                                "pads": d["pads"]}, dtype=dtype)
        if "p" in d:
            build.node("Pow", [sums, build.const(np.asarray(1.0 / d["p"], dtype), "inverse_p")], outputs=[out])
        else:
            build.node("Div", [sums, build.const(np.asarray(d["counts"], dtype), "window_counts")], outputs=[out])
        return {}
