"""Seeded input data that respects each input's dtype and plausible value range.

Integer inputs that index something (Gather indices from a constant table: token ids) stay within
the table; inputs named like masks, and bool inputs, are 0/1; floats are drawn from [-1, 1].
Dynamic dims get one consistent value per symbol (1 for the leading batch axis, 4 elsewhere)
unless the caller gives shapes.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto

FLOAT_RANGE = (-1.0, 1.0)
DEFAULT_INT_RANGE = (0, 1)


def graph_inputs(model: onnx.ModelProto):
    init_names = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in init_names]


def concrete_shapes(model: onnx.ModelProto, shapes: Optional[Dict[str, Sequence[int]]] = None
                    ) -> Dict[str, Tuple[int, ...]]:
    shapes = dict(shapes or {})
    symbol_values: Dict[str, int] = {}
    out: Dict[str, Tuple[int, ...]] = {}
    for inp in graph_inputs(model):
        if inp.name in shapes:
            out[inp.name] = tuple(int(d) for d in shapes[inp.name])
            continue
        dims = []
        for axis, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(d.dim_value)
                continue
            default = 1 if axis == 0 else 4
            key = d.dim_param or f"{inp.name}:{axis}"
            dims.append(symbol_values.setdefault(key, default))
        out[inp.name] = tuple(dims)
    return out


def value_ranges(model: onnx.ModelProto) -> Dict[str, Tuple[float, float]]:
    """Per-input (low, high) ranges inferred from how each integer input is consumed."""
    inits = {t.name: t for t in model.graph.initializer}
    const_shapes = dict((name, tuple(t.dims)) for name, t in inits.items())
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    const_shapes[node.output[0]] = tuple(a.t.dims)
    ranges: Dict[str, Tuple[float, float]] = {}
    for inp in graph_inputs(model):
        elem = inp.type.tensor_type.elem_type
        lname = inp.name.lower()
        if elem == TensorProto.BOOL or "mask" in lname:
            ranges[inp.name] = (0, 1)
        elif elem in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16):
            ranges[inp.name] = FLOAT_RANGE
        else:
            ranges[inp.name] = DEFAULT_INT_RANGE
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in ranges \
                and node.input[0] in const_shapes:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            table = const_shapes[node.input[0]]
            if table:
                ranges[node.input[1]] = (0, table[axis] - 1)
    return ranges


def make_feeds(model: onnx.ModelProto, *, seed: int = 1, iterations: int = 1,
               shapes: Optional[Dict[str, Sequence[int]]] = None):
    """A Polygraphy DataLoader for the model's inputs (seeded, ranged, concrete shapes)."""
    from polygraphy.comparator import DataLoader
    from polygraphy.common import TensorMetadata
    from onnx.helper import tensor_dtype_to_np_dtype

    meta = TensorMetadata()
    dims = concrete_shapes(model, shapes)
    for inp in graph_inputs(model):
        meta.add(inp.name, tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type), dims[inp.name])
    return DataLoader(seed=seed, iterations=iterations, input_metadata=meta, val_range=value_ranges(model))
