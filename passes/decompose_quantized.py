"""Rewrite integer / dynamically quantized ops that TensorRT cannot import into float ops.

ConvInteger, MatMulInteger, DynamicQuantizeLinear and ONNX Runtime's DynamicQuantizeMatMul /
DynamicQuantizeLSTM (what ``quantize_dynamic`` writes) become float Conv/MatMul/LSTM with
dequantized weights. ``PassContext.options["dequantize"]``: "exact" (default: the dynamic activation
quantization is kept as float ops; same results as ONNX Runtime on the original) or "float"
(activations stay float: results move by the activation quantization error, toward the float
model). DynamicQuantizeLSTM is always float; inexact rewrites declare their check tolerance.
See graphfix.plugin_rules.quantized.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.plugin_rules import DECOMPOSE, registered_rules
from graphfix.plugin_rules.engine import apply_rules
from graphfix.plugin_rules.quantized import quantization_tolerance
from graphfix.registry import register_pass


@register_pass
class DecomposeQuantized(Pass):
    info = PassInfo(
        name="decompose-quantized",
        summary="ConvInteger/MatMulInteger/DynamicQuantize* -> float ops with dequantized weights",
        fixes="No importer registered for op: MatMulInteger / ConvInteger / DynamicQuantizeLinear "
              "(TensorRT's INT8 path takes Q/DQ with static scales only)",
        after=("fold-constants",),
        before=("target-opset",),
        remedies=(),   # each of its rules declares the ops and findings it fixes (graphfix.remedies)
    )

    def run(self, graph: gs.Graph) -> PassResult:
        result = PassResult()
        apply_rules(graph, registered_rules(kind=DECOMPOSE, family="quantized"), self.context, result,
                    prefix="decompose-quantized", action="dequantize")
        if any(not c.details.get("exact", True) for c in result.changes):
            result.tolerance = quantization_tolerance()
        return result
