"""Rewrite standard ONNX ops that the target TensorRT lacks or computes wrong into ops it computes right.

ScatterElements/ScatterND with a reduction (TensorRT 8.6 overwrites instead of reducing), Einsum
with ellipsis, diagonals or broadcasting (wrong results on 8.6), UINT8 Mod (integer Mod is imported on
INT32 only), bitwise ops, CenterCropPad, Col2Im, Hardmax, LpPool (p > 2) and dilated pooling, and the opset-23 RotaryEmbedding / Attention / RMSNormalization
become ops the target computes right. Which node needs it comes from the target's profile (graphfix.plugin_rules.
ops_base); ONNX Runtime checks the result.

It runs before target-opset: the opset-23 ops it removes have no older form, so target-opset could
not bring such a model down to the target's opset while they are in it, and the ops it emits are
written in the model's opset form, which target-opset then lowers. Parts of a rewrite that depend
only on constants (constant scatter indices, position ids, masks) are computed here
(ops_base.fold_own_constants): fold-constants ran before this pass.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.plugin_rules import DECOMPOSE, registered_rules
from graphfix.plugin_rules.engine import anchors, apply_rules
from graphfix.plugin_rules.ops_base import OPS_FAMILY, fold_own_constants, profile_findings
from graphfix.registry import register_pass


@register_pass
class DecomposeOps(Pass):
    info = PassInfo(
        name="decompose-ops",
        summary="Standard ops the target lacks or computes wrong (Scatter reductions, Einsum, Mod, ...) "
                "-> ops it computes right",
        fixes="the reduction attribute is ignored (ScatterElements/ScatterND); Einsum ellipsis/diagonal; "
              "No importer registered for op: BitwiseAnd / CenterCropPad / Col2Im / Hardmax / Attention / RotaryEmbedding / "
              "RMSNormalization; Mod: Found invalid input type of UINT8",
        after=("fold-constants",),
        before=("target-opset",),
        remedies=(),   # each of its rules declares the ops and findings it fixes (graphfix.remedies)
    )

    def run(self, graph: gs.Graph) -> PassResult:
        result = PassResult()
        rules = registered_rules(kind=DECOMPOSE, family=OPS_FAMILY)
        if not any(r.wanted(self.context)[0] and anchors(graph, r) for r in rules):
            return result
        with profile_findings(graph, self.context.target):
            changed = apply_rules(graph, rules, self.context, result, prefix="decompose-ops", action="decompose")
        if changed:
            folded = fold_own_constants(graph, "gf.decompose-ops.", int(self.context.fold_size_limit))
            if folded:
                result.count("constants_folded", folded)
        return result
