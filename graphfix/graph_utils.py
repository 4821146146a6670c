"""Small helpers over onnx_graphsurgeon graphs shared by several passes."""
from __future__ import annotations

from typing import Dict, Iterable, List

import numpy as np
import onnx
import onnx_graphsurgeon as gs

# The IR version we stamp at most: ONNX Runtime >= 1.17 accepts it (the rig has 1.19, CI the newest).
OUTPUT_IR_VERSION = 10


def to_graph(model: onnx.ModelProto) -> gs.Graph:
    return gs.import_onnx(model)


def to_model(graph: gs.Graph, template: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """Export a graph; keeps the template's producer/metadata, pins a conservative IR version."""
    model = gs.export_onnx(graph, do_type_check=True)
    if template is not None:
        model.producer_name = template.producer_name
        model.producer_version = template.producer_version
        model.doc_string = template.doc_string
        model.model_version = template.model_version
        del model.metadata_props[:]
        model.metadata_props.extend(template.metadata_props)
        model.ir_version = min(template.ir_version, OUTPUT_IR_VERSION) if template.ir_version else OUTPUT_IR_VERSION
    model.ir_version = min(model.ir_version, OUTPUT_IR_VERSION)
    return model


class NameMaker:
    """Counter-based unique names (``gf.<pass>.<n>``), never id()-based, so output is deterministic."""

    def __init__(self, graph: gs.Graph, prefix: str):
        self.prefix = prefix
        self.taken = {n.name for n in graph.nodes} | set(graph.tensors().keys())
        self.n = 0

    def __call__(self, hint: str = "") -> str:
        while True:
            name = f"gf.{self.prefix}.{self.n}" + (f".{hint}" if hint else "")
            self.n += 1
            if name not in self.taken:
                self.taken.add(name)
                return name


def default_opset(graph: gs.Graph) -> int:
    return int(graph.opset)


def constant_value(tensor) -> np.ndarray | None:
    """Value of a gs.Constant, or of a Variable produced by a Constant node with a `value` attr."""
    if isinstance(tensor, gs.Constant):
        return tensor.values
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        attrs = tensor.inputs[0].attrs
        if "value" in attrs and isinstance(attrs["value"], gs.Constant):
            return attrs["value"].values
    return None


def consumers(tensor) -> List[gs.Node]:
    return list(tensor.outputs)


def producer(tensor):
    return tensor.inputs[0] if tensor.inputs else None


def graph_io_names(graph: gs.Graph) -> set:
    return {t.name for t in graph.inputs} | {t.name for t in graph.outputs}


def sorted_nodes(nodes: Iterable[gs.Node]) -> List[gs.Node]:
    return sorted(nodes, key=lambda n: n.name)


def tensor_map(graph: gs.Graph) -> Dict[str, gs.Tensor]:
    return graph.tensors()


def is_topologically_sorted(graph: gs.Graph) -> bool:
    """Whether every node comes after the producers of its inputs (outer-scope names aside)."""
    produced = set()
    producers = {id(t) for n in graph.nodes for t in n.outputs}
    for node in graph.nodes:
        for t in node.inputs:
            if id(t) in producers and id(t) not in produced:
                return False
        produced.update(id(t) for t in node.outputs)
    return True


def toposort_if_needed(graph: gs.Graph) -> bool:
    """Sort only a graph that is not already in a valid order (gs reorders sorted graphs too)."""
    if is_topologically_sorted(graph):
        return False
    graph.toposort()
    return True
