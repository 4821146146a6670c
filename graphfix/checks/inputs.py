"""Seeded input data that respects each input's dtype and plausible value range.

Integer inputs that index something (Gather indices from a constant table: token ids) stay within
the table; inputs named like masks, and bool inputs, are 0/1; floats are drawn from [-1, 1].
Dynamic dims get one consistent value per symbol (1 for the leading batch axis, 4 elsewhere)
unless the caller gives shapes: per input (``{"input_ids": [1, 128]}``) or per dim symbol
(``{"seq": 128}``). A dim symbol that is an expression of others (``past + 1``, ``2*s0``) is
computed from them. Given input values (an .npz) replace the generated ones and fix the symbols
their shapes carry. graphfix.checks.input_search chooses sizes that let the model run.
"""
from __future__ import annotations

import ast
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto

from ..errors import InputError, UsageError

FLOAT_RANGE = (-1.0, 1.0)
DEFAULT_INT_RANGE = (0, 1)


def graph_inputs(model: onnx.ModelProto):
    init_names = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in init_names]


def dim_symbols(model: onnx.ModelProto) -> List[str]:
    """The dim symbols of the graph inputs, in order of first appearance (expressions included)."""
    out: Dict[str, None] = {}
    for inp in graph_inputs(model):
        for d in inp.type.tensor_type.shape.dim:
            if not (d.HasField("dim_value") and d.dim_value > 0) and d.dim_param:
                out.setdefault(d.dim_param)
    return list(out)


def declared_dims_text(dims) -> str:
    """A tensor type's dims (DimProtos) as text: 1xseqx768, '?' for an anonymous dynamic dim."""
    return "x".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims) or "scalar"


def split_shapes(model: onnx.ModelProto, shapes: Optional[Mapping[str, object]], flag: str = "--shapes"
                 ) -> Tuple[Dict[str, Tuple[int, ...]], Dict[str, int]]:
    """User shapes -> (dims per input, size per dim symbol). A sequence value names an input, an int
    a dim symbol. Raises UsageError for a name that is neither, listing the real ones."""
    per_input: Dict[str, Tuple[int, ...]] = {}
    per_symbol: Dict[str, int] = {}
    inputs = [i.name for i in graph_inputs(model)]
    symbols = dim_symbols(model)
    for name, value in (shapes or {}).items():
        if isinstance(value, (int, np.integer)):
            if name not in symbols:
                raise UsageError(f"{flag}: no dim symbol named {name} (symbols: {', '.join(symbols) or 'none'};"
                                 f" inputs take NAME:1x128: {', '.join(inputs)})")
            per_symbol[name] = int(value)
        else:
            if name not in inputs:
                hint = f"; '{name}=' sets a dim symbol" if name in symbols else ""
                raise UsageError(f"{flag}: no model input named {name} (inputs: {', '.join(inputs)}; "
                                 f"dim symbols: {', '.join(symbols) or 'none'}){hint}")
            per_input[name] = tuple(int(d) for d in value)
    return per_input, per_symbol


def _expression_value(text: str, values: Mapping[str, int]) -> Optional[int]:
    """The value of a dim expression such as 'past_sequence_length + 1' or '2*s0', or None."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None

    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            return values.get(node.id)
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            if a is None or b is None:
                return None
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.FloorDiv: lambda: a // b if b else None, ast.Div: lambda: a // b if b else None}
            fn = ops.get(type(node.op))
            return fn() if fn else None
        return None

    if isinstance(tree, ast.Name):
        return None   # a plain symbol, not an expression
    return ev(tree)


def default_size(axis: int) -> int:
    return 1 if axis == 0 else 4


def concrete_shapes(model: onnx.ModelProto, shapes: Optional[Mapping[str, object]] = None,
                    symbols: Optional[Mapping[str, int]] = None) -> Dict[str, Tuple[int, ...]]:
    """Concrete dims per input: the user's per-input shapes, else per axis the static size, the
    symbol's value (``symbols``, or an int entry in ``shapes``), an expression of other symbols,
    else 1 for a leading batch axis and 4 elsewhere. Names are not validated here (split_shapes)."""
    shapes = dict(shapes or {})
    symbol_values: Dict[str, int] = {k: int(v) for k, v in shapes.items() if isinstance(v, (int, np.integer))}
    symbol_values.update({k: int(v) for k, v in (symbols or {}).items()})
    per_input = {k: v for k, v in shapes.items() if not isinstance(v, (int, np.integer))}
    # symbols fixed by the user's per-input shapes hold for every input that carries them
    for inp in graph_inputs(model):
        if inp.name in per_input:
            for d, size in zip(inp.type.tensor_type.shape.dim, per_input[inp.name]):
                if d.dim_param and not d.HasField("dim_value"):
                    symbol_values.setdefault(d.dim_param, int(size))
    expressions = [s for s in dim_symbols(model) if s not in symbol_values and not s.isidentifier()]
    out: Dict[str, Tuple[int, ...]] = {}
    pending: List[Tuple[str, int, str]] = []
    for inp in graph_inputs(model):
        if inp.name in per_input:
            out[inp.name] = tuple(int(d) for d in per_input[inp.name])
            continue
        dims = []
        for axis, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(d.dim_value)
                continue
            key = d.dim_param or f"{inp.name}:{axis}"
            if key in expressions:
                pending.append((inp.name, axis, key))
                dims.append(0)
                continue
            dims.append(symbol_values.setdefault(key, default_size(axis)))
        out[inp.name] = tuple(dims)
    for name, axis, key in pending:   # expressions, once every plain symbol has its value
        value = _expression_value(key, symbol_values)
        if value is None or value < 0:
            value = symbol_values.setdefault(key, default_size(axis))
        dims = list(out[name])
        dims[axis] = value
        out[name] = tuple(dims)
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
               shapes: Optional[Mapping[str, object]] = None, symbols: Optional[Mapping[str, int]] = None):
    """A Polygraphy DataLoader for the model's inputs (seeded, ranged, concrete shapes)."""
    from polygraphy.comparator import DataLoader
    from polygraphy.common import TensorMetadata
    from onnx.helper import tensor_dtype_to_np_dtype

    meta = TensorMetadata()
    dims = concrete_shapes(model, shapes, symbols)
    for inp in graph_inputs(model):
        meta.add(inp.name, tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type), dims[inp.name])
    return DataLoader(seed=seed, iterations=iterations, input_metadata=meta, val_range=value_ranges(model))


InputValues = Union[str, "os.PathLike[str]", Mapping[str, np.ndarray]]


def load_input_values(model: onnx.ModelProto, values: Optional[InputValues], flag: str = "--inputs"
                      ) -> Dict[str, np.ndarray]:
    """Given input values (an .npz path, or name -> array), checked against the model's inputs:
    known names, the input's dtype, its rank and static dims. Raises InputError/UsageError."""
    if values is None:
        return {}
    from onnx.helper import tensor_dtype_to_np_dtype
    source = "input values"
    if isinstance(values, (str, os.PathLike)):
        source = os.fspath(values)
        try:
            with np.load(source, allow_pickle=False) as npz:
                values = {k: npz[k] for k in npz.files}
        except FileNotFoundError:
            raise InputError(source, "no such file") from None
        except Exception as exc:
            raise InputError(source, f"not a NumPy .npz file ({' '.join(str(exc).split())[:200]})") from None
    inputs = {i.name: i for i in graph_inputs(model)}
    out: Dict[str, np.ndarray] = {}
    for name, array in values.items():
        if name not in inputs:
            raise UsageError(f"{flag} {source}: no model input named '{name}' (inputs: {', '.join(inputs)})")
        array = np.asarray(array)
        t = inputs[name].type.tensor_type
        want = np.dtype(tensor_dtype_to_np_dtype(t.elem_type))
        if array.dtype != want:
            raise UsageError(f"{flag} {source}: '{name}' is {array.dtype}, the input is {want}")
        if t.HasField("shape"):
            dims = list(t.shape.dim)
            bad = len(dims) != array.ndim or any(d.HasField("dim_value") and d.dim_value > 0
                                                 and d.dim_value != n for d, n in zip(dims, array.shape))
            if bad:
                raise UsageError(f"{flag} {source}: '{name}' has shape {'x'.join(map(str, array.shape)) or 'scalar'}, "
                                 f"the input is {declared_dims_text(dims)}")
        out[name] = array
    return out


def shapes_of_values(values: Mapping[str, np.ndarray]) -> Dict[str, Tuple[int, ...]]:
    return {k: tuple(int(n) for n in np.shape(v)) for k, v in values.items()}
