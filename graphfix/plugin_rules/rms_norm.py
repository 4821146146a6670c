"""RMSNormalization (opset 23) -> Mul/ReduceMean/Add/Sqrt/Reciprocal/Mul/Mul, in the model's opset form.

No importer before TensorRT 10.15 (profiles). This rule is its one decomposition: it runs before
target-opset on every target that lacks it (10.11-10.14 parse opset 23 as it is, and target-opset has
no RMSNormalization lowering of its own).
Semantics: the ONNX function body and onnx.reference: over axes [axis, rank),
y = Cast_back(x_s * 1 / sqrt(mean(x_s^2) + epsilon)) * scale, where x_s is x in the stash type
(stash_type = 1: FLOAT; a FLOAT16/BFLOAT16 input is cast up and the normalized value cast back
before the scale, as the function body's CastLike does).
"""
from __future__ import annotations

import numpy as np
import onnx

from .build import remove_nodes
from .ops_base import OpsDecompose, dtype_or_float, reduce
from .patterns import static_dims
from .registry import register_rule
from .rule import Match, NearMiss


@register_rule
class RMSNormalizationDecompose(OpsDecompose):
    name = "rms-normalization"
    summary = "RMSNormalization (opset 23) -> Mul/ReduceMean/Add/Sqrt/Reciprocal/Mul (stash_type honoured)"
    anchor_ops = ("RMSNormalization",)

    def match_node(self, graph, node, ctx):
        dtype = dtype_or_float(node.inputs[0])
        stash = int(node.attrs.get("stash_type", 1))
        try:
            compute = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(stash))
        except (KeyError, ValueError, TypeError):
            return NearMiss(node.name, f"stash_type {stash} is not a known type")
        if compute == np.float64 or (compute != dtype and compute != np.float32):
            return NearMiss(node.name, f"stash_type {stash} ({compute}) is not FLOAT or the input type")
        axis = int(node.attrs.get("axis", -1))
        if axis < 0:
            axes = list(range(axis, 0))        # [axis, rank) without knowing the rank
        else:
            dims = static_dims(node.inputs[0])
            if dims is None:
                return NearMiss(node.name, f"axis {axis} >= 0 needs the input's rank, which is unknown")
            if axis >= len(dims):
                return NearMiss(node.name, f"axis {axis} is out of range for rank {len(dims)}")
            axes = list(range(axis, len(dims)))
        up = compute if compute != dtype else None
        return Match(anchor=node.name, nodes=[node], inputs=list(node.inputs[:2]), outputs=[node.outputs[0]],
                     details={"axes": axes, "compute": str(compute)},
                     data={"axes": axes, "eps": float(node.attrs.get("epsilon", 1e-5)), "dtype": dtype,
                           "up": up})

    def rewrite(self, graph, match, build):
        d = match.data
        x, scale = match.inputs
        out, dtype = match.outputs[0], d["dtype"]
        ct = d["up"] or dtype
        remove_nodes(graph, match.nodes)
        if d["up"] is not None:
            x = build.op("Cast", x, attrs={"to": onnx.helper.np_dtype_to_tensor_dtype(ct)}, dtype=ct)
        mean = reduce(build, graph, "ReduceMean", build.op("Mul", x, x, dtype=ct), d["axes"], keepdims=1, dtype=ct)
        rms = build.op("Sqrt", build.op("Add", mean, build.const(np.asarray(d["eps"], ct), "epsilon"), dtype=ct),
                       dtype=ct)
        normed = build.op("Mul", x, build.op("Reciprocal", rms, dtype=ct), dtype=ct)
        if d["up"] is not None:
            normed = build.op("Cast", normed, attrs={"to": onnx.helper.np_dtype_to_tensor_dtype(dtype)},
                              dtype=dtype)
        build.node("Mul", [normed, scale], outputs=[out])
        return {}
