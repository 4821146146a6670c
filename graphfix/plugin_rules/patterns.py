"""Small questions rules ask about a gs.Graph: who consumes a tensor, is it a constant, of what value."""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import onnx_graphsurgeon as gs

from ..graph_utils import constant_value


def consumers(tensor) -> List[gs.Node]:
    return list(tensor.outputs)


def only_consumer(tensor) -> Optional[gs.Node]:
    """The one node reading `tensor`, or None when zero or several read it."""
    outs = list(tensor.outputs)
    return outs[0] if len(outs) == 1 else None


def producer(tensor) -> Optional[gs.Node]:
    return tensor.inputs[0] if tensor.inputs else None


def is_graph_output(graph: gs.Graph, tensor) -> bool:
    return any(t is tensor for t in graph.outputs)


def const(tensor) -> Optional[np.ndarray]:
    """Value of a constant input (initializer or Constant node), None for a computed tensor."""
    if tensor is None or (isinstance(tensor, gs.Variable) and tensor.name == ""):
        return None
    return constant_value(tensor)


def const_scalar(tensor) -> Optional[float]:
    v = const(tensor)
    if v is None or v.size != 1:
        return None
    return v.reshape(()).item()


def optional_input(node: gs.Node, i: int):
    """Input i of a node, None when absent or given as the empty name."""
    if i >= len(node.inputs):
        return None
    t = node.inputs[i]
    return None if t.name == "" else t


def optional_output(node: gs.Node, i: int):
    if i >= len(node.outputs):
        return None
    t = node.outputs[i]
    return None if t.name == "" else t


def used(graph: gs.Graph, tensor) -> bool:
    """Whether a tensor is read by a node or is a graph output."""
    return tensor is not None and (bool(tensor.outputs) or is_graph_output(graph, tensor))


def static_dims(tensor) -> Optional[List[int]]:
    shape = getattr(tensor, "shape", None)
    if shape is None:
        return None
    return [d if isinstance(d, int) and d >= 0 else None for d in shape]
