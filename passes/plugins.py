"""Replace subgraphs TensorRT cannot import or run by TensorRT plugin nodes, by the rules the target needs.

The rules live in graphfix.plugin_rules (built-in: EfficientNMS_TRT, ROIAlign_TRT,
GroupNormalizationPlugin, and -- when asked -- the BERT plugins for ONNX Runtime contrib ops; user
rules through ``register_rule`` or ``--plugin-rules FILE``). Each rule states the TensorRT versions
that need it and those that ship its plugin; options in PassContext.options ask for a rule on any
target ("nms", "roi_align", "group_norm", "contrib_plugins") or emit each plugin as an ONNX local
function whose body is the original subgraph ("plugin_as_function", TensorRT >= 10.7).
ONNX Runtime cannot run plugin nodes, so this pass runs last but cleanup.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.plugin_rules import PLUGIN, registered_rules
from graphfix.plugin_rules.engine import apply_rules
from graphfix.registry import register_pass
from graphfix.remedies import OTHER_OP, PLUGIN_LOOKUP_FAILED, fixes_parser_error


@register_pass
class Plugins(Pass):
    info = PassInfo(
        name="plugins",
        summary="Replace subgraphs by TensorRT plugins where the target needs them (NMS, RoiAlign, GroupNorm, ...)",
        fixes="e.g. 8.6 RoiAlign: 'Could not load library libnvinfer_vc_plugin.so.8'; NonMaxSuppression "
              "(on request): 'Invalid Context' when creating the execution context",
        ort_checkable=False,
        after=("fuse-layernorm",),
        before=("cleanup",),
        # and, from each plugin rule, the ops it replaces (graphfix.remedies.rule_rows)
        remedies=(fixes_parser_error(PLUGIN_LOOKUP_FAILED, op_kind=OTHER_OP, exclusive=True,
                                     why="the op needs a TensorRT plugin"),),
    )

    def run(self, graph: gs.Graph) -> PassResult:
        result = PassResult()
        apply_rules(graph, registered_rules(kind=PLUGIN), self.context, result, prefix="plugins",
                    action="replace-with-plugin")
        return result
