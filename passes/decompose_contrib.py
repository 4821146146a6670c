"""Rewrite ONNX Runtime contrib ops (com.microsoft) that TensorRT cannot import into standard ONNX ops.

SkipLayerNormalization, EmbedLayerNormalization, Gelu, BiasGelu and FastGelu (what the ONNX Runtime
transformers optimizer writes) become Add/Gather/LayerNormalization/Erf/Tanh chains, which TensorRT
imports natively and fuses; ONNX Runtime checks the rewrite. With
``PassContext.options["contrib_plugins"]`` the ops that have a TensorRT plugin are left to the
``plugins`` pass instead (see graphfix.plugin_rules.contrib for the choice).
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.plugin_rules import DECOMPOSE, registered_rules
from graphfix.plugin_rules.engine import apply_rules
from graphfix.registry import register_pass


@register_pass
class DecomposeContrib(Pass):
    info = PassInfo(
        name="decompose-contrib",
        summary="ONNX Runtime contrib ops (SkipLayerNormalization, Gelu, ...) -> standard ONNX ops",
        fixes="No importer registered for op: SkipLayerNormalization (com.microsoft ops; the parser then "
              "looks for a plugin of that name and finds none)",
        after=("fold-constants",),
        before=("target-opset",),
        remedies=(),   # each of its rules declares the ops and findings it fixes (graphfix.remedies)
    )

    def run(self, graph: gs.Graph) -> PassResult:
        result = PassResult()
        apply_rules(graph, registered_rules(kind=DECOMPOSE, family="contrib"), self.context, result,
                    prefix="decompose-contrib", action="decompose")
        return result
