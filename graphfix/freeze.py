"""Input specialization (`--freeze NAME=VALUE`): a configuration input becomes a constant.

A model that takes, say, a sample rate (8000 or 16000) branches on it with If nodes. Freezing the
input to one value makes it an initializer of that name, evaluates each If condition that now
depends on constants only, and puts the taken branch's nodes in place of the If (repeatedly: a
nested If whose condition the outer branch decides goes too). The frozen inputs leave the graph's
inputs, as asked; nothing else in the signature changes.

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
from onnx import AttributeProto, helper, numpy_helper

from .checks.inputs import declared_dims_text, graph_inputs
from .errors import UsageError

MAX_ROUNDS = 16          # nested Ifs inlined per round; a bound, not a limit reached in practice
MAX_CONE = 64            # nodes evaluated to decide one condition


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
    """(specialized model, changes as report records). Ifs whose condition the frozen values decide
    are replaced by their taken branch, nested ones included."""
    fed = feed_as_constant(model, values)
    changes = input_changes(values)
    out = onnx.ModelProto()
    out.CopyFrom(fed)
    counter = [0]
    taken = {n.name for n in out.graph.node if n.name}   # node names stay unique (the checker wants it)
    for _ in range(MAX_ROUNDS):
        decided = _decided_conditions(out)
        if not decided:
            break
        nodes: List[onnx.NodeProto] = []
        for node in out.graph.node:
            if node.op_type == "If" and node.input[0] in decided:
                branch = "then_branch" if decided[node.input[0]] else "else_branch"
                body = next(a.g for a in node.attribute if a.name == branch)
                inlined, inits = _inline(node, body, counter, taken)
                nodes.extend(inlined)
                out.graph.initializer.extend(inits)
                changes.append({"action": "inline-if", "target": node.name or node.output[0],
                                "details": {"condition": node.input[0], "branch": branch, "nodes": len(inlined)}})
            else:
                nodes.append(node)
        del out.graph.node[:]
        out.graph.node.extend(nodes)
    return out, changes


def input_changes(values: Mapping[str, np.ndarray]) -> List[dict]:
    return [{"action": "freeze-input", "target": name, "details": {"value": v.tolist(), "dtype": str(v.dtype)}}
            for name, v in sorted(values.items())]


def _decided_conditions(model: onnx.ModelProto) -> Dict[str, bool]:
    """If conditions of the main graph computable from initializers and the shapes of static
    inputs alone -> their value."""
    g = model.graph
    producers = {o: n for n in g.node for o in n.output if o}
    consts = {t.name for t in g.initializer}
    static = _static_input_dims(model)
    wanted = [n.input[0] for n in g.node if n.op_type == "If" and n.input and n.input[0]]
    decided: Dict[str, bool] = {}
    for cond in dict.fromkeys(wanted):
        cone = _constant_cone(cond, producers, consts, static)
        if cone is None:
            continue
        value = _evaluate(model, cond, cone, static)
        if value is not None and value.size == 1:
            decided[cond] = bool(value.reshape(-1)[0])
    return decided


def _static_input_dims(model: onnx.ModelProto) -> Dict[str, List[int]]:
    """Graph inputs whose dims are all static (after --static-shapes) -> their dims."""
    out = {}
    for vi in graph_inputs(model):
        t = vi.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            out[vi.name] = [d.dim_value for d in t.shape.dim]
    return out


def _constant_cone(name: str, producers, consts, static) -> Optional[List[onnx.NodeProto]]:
    """Nodes computing `name` from initializers and Shapes of static inputs only (in graph order),
    or None."""
    seen, order, stack = set(), [], [name]
    while stack:
        t = stack.pop()
        if t in consts or t in seen:
            continue
        seen.add(t)
        node = producers.get(t)
        if node is not None and node.op_type == "Shape" and node.input[0] in static:
            order.append(node)       # a leaf: its value is known (see _evaluate)
            continue
        if node is None or any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute) \
                or node.op_type.startswith("Random") or len(order) >= MAX_CONE:
            return None        # a graph input, a subgraph, randomness: not decided here
        order.append(node)
        stack.extend(i for i in node.input if i)
    position = {id(n): i for i, n in enumerate(producers.values())}
    return sorted({id(n): n for n in order}.values(), key=lambda n: position.get(id(n), 0))


def _evaluate(model: onnx.ModelProto, name: str, cone: List[onnx.NodeProto], static) -> Optional[np.ndarray]:
    from .checks.ort import run_ort
    from .graph_utils import OUTPUT_IR_VERSION
    cone = [_shape_as_constant(n, static) if n.op_type == "Shape" and n.input[0] in static else n for n in cone]
    needed = {i for n in cone for i in n.input}
    inits = [t for t in model.graph.initializer if t.name in needed or t.name == name]
    if not cone:   # the condition is an initializer itself
        t = next((t for t in inits if t.name == name), None)
        from .mapped_data import values
        return values(t) if t is not None else None
    graph = helper.make_graph(cone, "cond", [], [helper.make_tensor_value_info(name, onnx.TensorProto.BOOL, None)],
                              inits)
    mini = helper.make_model(graph, opset_imports=list(model.opset_import))
    mini.ir_version = min(model.ir_version or OUTPUT_IR_VERSION, OUTPUT_IR_VERSION)
    try:
        return np.asarray(run_ort(mini, {})[name])
    except Exception:
        return None    # ONNX Runtime cannot decide it: the If stays


def _shape_as_constant(node: onnx.NodeProto, static) -> onnx.NodeProto:
    """Shape(x) of a static input as the Constant it is (start/end as in Shape-15)."""
    attrs = {a.name: a.i for a in node.attribute}
    dims = np.array(static[node.input[0]], np.int64)[attrs.get("start", 0):attrs.get("end", None)]
    return helper.make_node("Constant", [], [node.output[0]], value=numpy_helper.from_array(dims, "value"))


def _inline(node: onnx.NodeProto, body: onnx.GraphProto, counter,
            taken: set) -> Tuple[List[onnx.NodeProto], List[onnx.TensorProto]]:
    """The branch's nodes and initializers in place of the If: names made unique (node names
    against `taken`, which grows), its outputs written to the If's outputs."""
    counter[0] += 1
    prefix = f"gf.freeze.{counter[0]}."
    produced = {o for n in body.node for o in n.output if o}
    local = produced | {t.name for t in body.initializer}
    rename: Dict[str, str] = {name: prefix + name for name in sorted(local)}
    extra: List[onnx.NodeProto] = []
    mapped = set()
    for branch_out, if_out in zip(body.output, node.output):
        src = branch_out.name
        if src in produced and src not in mapped:
            mapped.add(src)
            rename[src] = if_out                       # the producing node writes the If's output
        else:                                          # an outer or repeated value: copy it
            extra.append(helper.make_node("Identity", [rename.get(src, src)], [if_out],
                                          name=f"{node.name or 'if'}/{prefix}out.{len(extra)}"))
    nodes = []
    for n in body.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        copy.name = _unique(f"{node.name or 'if'}/{n.name or n.op_type}", taken)
        _rename_refs(copy, rename)
        nodes.append(copy)
    inits = []
    for t in body.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(t)
        copy.name = rename[t.name]
        inits.append(copy)
    return nodes + extra, inits


def _unique(name: str, taken: set) -> str:
    """`name`, or `name.2`, `name.3`, ... when taken (unnamed nodes of one op in a branch, nested Ifs)."""
    out, k = name, 1
    while out in taken:
        k += 1
        out = f"{name}.{k}"
    taken.add(out)
    return out


def _rename_refs(node: onnx.NodeProto, rename: Mapping[str, str]) -> None:
    """Rename a node's inputs and outputs, and what its subgraphs read from the outer scope."""
    for i, name in enumerate(node.input):
        node.input[i] = rename.get(name, name)
    for i, name in enumerate(node.output):
        node.output[i] = rename.get(name, name)
    for attr in node.attribute:
        for g in ([attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)):
            _rename_outer(g, rename)


def _rename_outer(g: onnx.GraphProto, rename: Mapping[str, str]) -> None:
    own = {o for n in g.node for o in n.output} | {t.name for t in g.initializer} | {i.name for i in g.input}
    outer = {k: v for k, v in rename.items() if k not in own}
    for n in g.node:
        for i, name in enumerate(n.input):
            n.input[i] = outer.get(name, name)
        for attr in n.attribute:
            for sub in ([attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)):
                _rename_outer(sub, outer)
    for o in g.output:
        o.name = outer.get(o.name, o.name)
