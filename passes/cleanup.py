"""Last pass: remove what earlier rewrites left behind and re-sort the graph.

Dead nodes, Identity nodes that only rename a tensor (when neither side is a graph output), and
unused initializers go; nodes are topologically sorted.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from graphfix.graph_utils import remove_dead_nodes, toposort_if_needed
from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.registry import register_pass


@register_pass
class Cleanup(Pass):
    info = PassInfo(
        name="cleanup",
        summary="Remove dead nodes and pass-through Identity nodes, toposort",
        fixes="(housekeeping after rewrites: dead subgraphs TensorRT would still parse)",
        after=("normalize",),
        remedies=(),   # housekeeping after rewrites: no `check` finding or parser error maps to it
    )

    def run(self, graph: gs.Graph) -> PassResult:
        result = PassResult()
        outputs = {t.name for t in graph.outputs}
        for node in sorted((n for n in graph.nodes if n.op == "Identity"), key=lambda n: n.name):
            src, dst = node.inputs[0], node.outputs[0]
            if dst.name in outputs or src.name in outputs or src in graph.inputs and dst in graph.outputs:
                continue
            for consumer in list(dst.outputs):
                for i, t in enumerate(consumer.inputs):
                    if t is dst:
                        consumer.inputs[i] = src
            node.outputs.clear()
            node.inputs.clear()
            result.change("remove-identity", node.name, {"tensor": dst.name, "now": src.name})
        removed_identities = {c.target for c in result.changes}
        for name in remove_dead_nodes(graph):
            if name not in removed_identities:
                result.change("remove-node", name, {"reason": "output reaches no graph output"})
        if toposort_if_needed(graph):
            result.change("toposort", "graph", {"nodes": len(graph.nodes)})
        return result
