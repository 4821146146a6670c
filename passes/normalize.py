"""Put the graph in a canonical, well-formed state before any other pass looks at it.

- nodes in topological order;
- every node named, names unique (empty or repeated names get ``gf.normalize.<n>``);
- dead nodes (nothing they produce reaches a graph output) removed;
- initializers that no node reads dropped, and initializers listed as graph inputs (old IR style)
  taken out of the input list;
- an IR version that the installed ONNX Runtime accepts (at most graph_utils.OUTPUT_IR_VERSION);
- an attribute left at its ONNX default written out where the target's importer assumes another
  default (the profile's ``attr_missing`` rules: 8.6 reads a Trilu without ``upper`` as lower).

Graph inputs that no node reads are kept (dropping them would change the model's signature and
break callers that feed them) and reported as a warning.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from graphfix.graph_utils import OUTPUT_IR_VERSION, NameMaker, remove_dead_nodes, toposort_if_needed
from graphfix.opset import is_default_domain
from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.registry import register_pass
from graphfix.remedies import fixes_finding


@register_pass
class Normalize(Pass):
    info = PassInfo(
        name="normalize",
        summary="Toposort, unique node names, drop dead nodes and unused initializers, pin the IR version",
        fixes="Nodes not topologically sorted / duplicate node names / Unsupported model IR version",
        before=("fold-constants",),
        remedies=(fixes_finding("attr_missing", why="writes the attribute's ONNX default out"),),
    )

    def run(self, graph: gs.Graph) -> PassResult:
        result = PassResult()
        model = self.context.model
        if model is not None:
            self._model_level(model, result)
        self._remove_dead_nodes(graph, result)
        self._toposort(graph, result)
        self._name_nodes(graph, result)
        self._spell_out_defaults(graph, result)
        for inp in sorted(graph.inputs, key=lambda t: t.name):
            if not inp.outputs:
                result.warn(f"graph input '{inp.name}' is read by no node (kept: removing it would "
                            "change the model's inputs)")
        return result

    @staticmethod
    def _model_level(model, result: PassResult) -> None:
        if model.ir_version > OUTPUT_IR_VERSION:
            result.change("set-ir-version", "model", {"from": model.ir_version, "to": OUTPUT_IR_VERSION})
        used = {name for node in model.graph.node for name in node.input}
        used |= {o.name for o in model.graph.output}
        used |= _names_read_by_subgraphs(model.graph)
        for init in sorted(model.graph.initializer, key=lambda t: t.name):
            if init.name not in used:
                result.change("remove-initializer", init.name, {"reason": "read by no node"})
        inits = {t.name for t in model.graph.initializer}
        for inp in model.graph.input:
            if inp.name in inits:
                result.change("remove-input", inp.name, {"reason": "initializer listed as a graph input"})

    def _spell_out_defaults(self, graph: gs.Graph, result: PassResult) -> None:
        from graphfix.profiles import load_profile
        profile = load_profile(self.context.target)
        for node in (n for n in graph.nodes if is_default_domain(n)):
            for rule in (profile.op(node.op) or {}).get("rules", []):
                if rule.get("check") == "attr_missing" and rule["attr"] not in node.attrs:
                    node.attrs[rule["attr"]] = rule["onnx_default"]
                    result.change("write-default", node.name, {"attribute": rule["attr"], "value": rule["onnx_default"],
                                                                "why": rule["reason"]})
                    result.count("defaults_written")

    @staticmethod
    def _remove_dead_nodes(graph: gs.Graph, result: PassResult) -> None:
        removed = remove_dead_nodes(graph)
        for name in removed:
            result.change("remove-node", name, {"reason": "output reaches no graph output"})
        if removed:
            result.count("dead_nodes", len(removed))

    @staticmethod
    def _toposort(graph: gs.Graph, result: PassResult) -> None:
        if toposort_if_needed(graph):
            result.change("toposort", "graph", {"nodes": len(graph.nodes)})

    @staticmethod
    def _name_nodes(graph: gs.Graph, result: PassResult) -> None:
        names = NameMaker(graph, "normalize")
        seen = set()
        for node in graph.nodes:
            if node.name and node.name not in seen:
                seen.add(node.name)
                continue
            old = node.name
            node.name = names(node.op)
            seen.add(node.name)
            result.change("rename-node", node.name, {"from": old, "reason": "duplicate" if old else "unnamed"})


def _names_read_by_subgraphs(graph) -> set:
    """Names read inside If/Loop/Scan bodies, nested ones too (they may refer to outer-scope
    initializers); iterative, so nesting depth cannot exhaust the stack."""
    import onnx
    names = set()
    todo = [graph]
    while todo:
        for node in todo.pop().node:
            for attr in node.attribute:
                bodies = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
                for body in bodies:
                    names |= {i for n in body.node for i in n.input}
                    todo.append(body)
    return names
