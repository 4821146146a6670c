"""Input specialization (`--freeze NAME=VALUE`): a configuration input becomes a constant.

A model that takes, say, a sample rate (8000 or 16000) branches on it with If nodes. Freezing the
input to one value makes it an initializer of that name, evaluates each If condition that now
depends on constants only, and puts the taken branch's nodes in place of the If (repeatedly: a
nested If whose condition the outer branch decides goes too, and one inside a branch that stays;
graphfix.if_inlining, which unify-if uses too). The frozen inputs leave the graph's inputs, as
asked; nothing else in the signature changes.

The result is checked against the model *fed* with the value: the same model with the input turned
into an initializer and nothing else changed (``feed_as_constant``), which needs no proof.

`--static-shapes` pins dynamic input dims the same way (``pin_shapes``): the Ifs a model takes on
its input sizes (PyTorch's squeeze of a dim that may be 1, RNN rank tests) become decidable, and
fold-constants and unify-if remove them. The model is then only valid for those sizes, as asked.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .checks.inputs import declared_dims_text, graph_inputs
from .errors import UsageError
from .graph_utils import NameMaker, graph_protos, to_graph, to_model
from .if_inlining import ShapeFacts, inline_decided

MAX_ROUNDS = 16          # rounds of inlining (a nested If waits for the next); a bound, not a limit reached


def parse_freeze(items) -> Optional[Dict[str, object]]:
    """CLI text ('sr=16000', 'mode=[1,2]'; a list or comma-separated) -> {name: value}."""
    if not items:
        return None
    if isinstance(items, str):
        items = [items]
    out: Dict[str, object] = {}
    for text in items:
        for item in _split_top_level(text):
            name, eq, value = item.partition("=")
            if not eq or not name.strip():
                raise UsageError(f"bad --freeze entry '{item}' (expected NAME=VALUE, e.g. sr=16000)")
            try:
                out[name.strip()] = json.loads(value.strip().lower() if value.strip().lower() in ("true", "false")
                                               else value.strip())
            except ValueError:
                raise UsageError(f"bad --freeze value '{value}' for '{name}' (a number, true/false or a "
                                 "JSON list)") from None
    return out


def _split_top_level(text: str) -> List[str]:
    """Split at commas outside brackets: 'a=1,b=[1,2]' -> ['a=1', 'b=[1,2]']."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in parts + [cur] if p.strip()]


def frozen_values(model: onnx.ModelProto, freeze: Mapping[str, object]) -> Dict[str, np.ndarray]:
    """The values as arrays of each input's dtype and shape; UsageError for unknown names or values
    that do not fit."""
    inputs = {i.name: i for i in graph_inputs(model)}
    out: Dict[str, np.ndarray] = {}
    for name, value in freeze.items():
        if name not in inputs:
            raise UsageError(f"--freeze: no model input named {name} (inputs: {', '.join(inputs)})")
        t = inputs[name].type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
        array = np.asarray(value)
        cast = array.astype(dtype)
        if not np.array_equal(cast.astype(np.float64), array.astype(np.float64)):
            raise UsageError(f"--freeze: {name}={value} does not fit the input's type {np.dtype(dtype)}")
        dims = list(t.shape.dim) if t.HasField("shape") else None
        if dims is not None and (len(dims) != cast.ndim or any(
                d.HasField("dim_value") and d.dim_value != n for d, n in zip(dims, cast.shape))):
            raise UsageError(f"--freeze: {name} has shape {declared_dims_text(dims)}; the value has shape "
                             f"{'x'.join(map(str, cast.shape)) or 'scalar'}")
        out[name] = cast
    return out


def pin_shapes(model: onnx.ModelProto, static_shapes: Mapping[str, object]) -> Tuple[onnx.ModelProto, List[dict]]:
    """(a copy of the model whose inputs have the given static dims, report records). Sizes per
    input ({"x": [1, 576]}) or per dim symbol ({"seq": 128}, also in the outputs); UsageError for
    unknown names, a wrong rank or a size that contradicts a static dim."""
    from .checks.inputs import split_shapes
    per_input, per_symbol = split_shapes(model, static_shapes, flag="--static-shapes")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    changes = []
    for vi in graph_inputs(out):
        dims = vi.type.tensor_type.shape.dim
        before = declared_dims_text(dims)
        wanted = per_input.get(vi.name)
        if wanted is not None and len(wanted) != len(dims):
            raise UsageError(f"--static-shapes: {vi.name} has rank {len(dims)} ({before}); got {len(wanted)} dims")
        for k, d in enumerate(dims):
            size = wanted[k] if wanted is not None else per_symbol.get(d.dim_param) if d.dim_param else None
            if size is None:
                continue
            if d.HasField("dim_value") and d.dim_value != size:
                raise UsageError(f"--static-shapes: dim {k} of {vi.name} is {d.dim_value}, not {size}")
            d.dim_value = int(size)
        if declared_dims_text(dims) != before:
            changes.append({"action": "static-shape", "target": vi.name,
                            "details": {"from": before, "to": declared_dims_text(dims)}})
    for vi in out.graph.output:     # a symbol given a size is that size everywhere
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param in per_symbol:
                d.dim_value = per_symbol[d.dim_param]
    return out, changes


def feed_as_constant(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """The model with each input in `values` turned into an initializer of the same name."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [i for i in out.graph.input if i.name not in values]
    del out.graph.input[:]
    out.graph.input.extend(kept)
    out.graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in sorted(values.items()))
    return out


@contextlib.contextmanager
def fed_reference(model_path: str, freeze, inputs=None):
    """(path, input values) for comparing a frozen output with its original in another process
    (the TensorRT check): the original fed with the frozen values, and the given values without
    them. Without ``freeze``: the model and values as they are."""
    if not freeze:
        yield model_path, inputs
        return
    from .checks.inputs import load_input_values
    from .model_io import load_model, save_model
    original = load_model(model_path).model
    values = frozen_values(original, freeze)
    given = {k: v for k, v in load_input_values(original, inputs).items() if k not in values} or None
    with tempfile.TemporaryDirectory(prefix="graphfix-freeze-") as tmp:
        path = os.path.join(tmp, "fed.onnx")
        save_model(feed_as_constant(original, values), path)
        yield path, given


def freeze_inputs(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> Tuple[onnx.ModelProto, List[dict]]:
    """(specialized model, changes as report records). Ifs whose condition the frozen values (or
    static input dims) decide are replaced by their taken branch, nested ones included, also inside
    branches that stay (graphfix.if_inlining, which unify-if uses too)."""
    fed = feed_as_constant(model, values)
    changes = input_changes(values)
    if not any(n.op_type == "If" for g in graph_protos(fed.graph) for n in g.node):
        return fed, changes
    graph = to_graph(fed)
    names = NameMaker(graph, "freeze")
    inlined = []
    for _ in range(MAX_ROUNDS):
        done = inline_decided(graph, ShapeFacts.of(graph), names)
        if not done:
            break
        inlined.extend(done)
    if not inlined:
        return fed, changes
    changes.extend({"action": "inline-if", "target": d.target,
                    "details": {"condition": d.condition, "branch": d.branch, "nodes": d.nodes,
                                **({"inside": d.scope} if d.scope else {})}} for d in inlined)
    return to_model(graph, fed), changes


def input_changes(values: Mapping[str, np.ndarray]) -> List[dict]:
    return [{"action": "freeze-input", "target": name, "details": {"value": v.tolist(), "dtype": str(v.dtype)}}
            for name, v in sorted(values.items())]
