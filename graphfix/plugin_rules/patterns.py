"""Small questions rules ask about a gs.Graph: who consumes a tensor, is it a constant, of what value."""
from __future__ import annotations

import contextlib
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx_graphsurgeon as gs

from ..graph_utils import constant_value

# name -> (numpy dtype or None, shape or None) from ONNX shape inference, for tensors the graph
# carries no shape for (intermediate tensors of exported models usually have no value_info)
_INFERRED: Dict[str, Tuple[object, Optional[list]]] = {}


@contextlib.contextmanager
def inferred_shapes(graph: gs.Graph):
    """Within the block, static_dims()/dtype_of() fall back to ONNX shape inference of `graph`."""
    import onnx
    _INFERRED.clear()
    try:
        model = gs.export_onnx(graph, do_type_check=False)
        try:   # with data propagation, as fold-constants infers: a rule sees the shapes it would fold
            model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
            t = v.type.tensor_type
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type) if t.elem_type else None
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim] \
                if t.HasField("shape") else None
            _INFERRED[v.name] = (dtype, shape)
    except Exception:   # inference is a help, not a requirement: rules then see unknown shapes
        pass
    try:
        yield
    finally:
        _INFERRED.clear()


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


def static_dims(tensor) -> Optional[List[Optional[int]]]:
    """Dims of a tensor (None for a dynamic dim), from the graph or shape inference; None if rank unknown."""
    shape = getattr(tensor, "shape", None)
    if shape is None and tensor is not None:
        shape = _INFERRED.get(tensor.name, (None, None))[1]
    if shape is None:
        return None
    return [d if isinstance(d, int) and d >= 0 else None for d in shape]


def inferred_dims(tensor) -> Optional[list]:
    """The shape ONNX shape inference gave `tensor` at the start of the pass (None when it gave none)."""
    return None if tensor is None else _INFERRED.get(tensor.name, (None, None))[1]


def dtype_of(tensor):
    """Numpy dtype of a tensor from the graph or shape inference; None when unknown."""
    if tensor is None:
        return None
    if getattr(tensor, "dtype", None) is not None:
        return np.dtype(tensor.dtype)
    dt = _INFERRED.get(tensor.name, (None, None))[0]
    return np.dtype(dt) if dt is not None else None
