"""The profile checks' vocabulary: what a profile rule's ``check`` name means on a node.

A profile (graphfix/profiles) lists, per op, rules such as ``{"check": "const_input", "input": 1, ...}``;
each check name is a predicate here. A predicate returns None (the rule does not hold on this node)
or a detail string ("" for none) that goes into the finding's reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Set

import numpy as np
from ..profiles import Profile
from .facts import ModelFacts, NodeRef, dtype_name, has_attr, input_at, node_attr

PredicateFn = Callable[["Ctx", NodeRef, dict], Optional[str]]
PREDICATES: Dict[str, PredicateFn] = {}


def predicate(name: str):
    def register(fn: PredicateFn) -> PredicateFn:
        PREDICATES[name] = fn
        return fn
    return register


@dataclass
class Ctx:
    facts: ModelFacts
    profile: Profile


@predicate("always")
def _always(ctx, ref, r):
    return ""


@predicate("attr_in")
def _attr_in(ctx, ref, r):
    value = node_attr(ref.node, r["attr"], r.get("default"))
    if value is None or value in r["values"]:
        return None
    return f"{r['attr']} = {value!r}"


@predicate("attr_absent")
def _attr_absent(ctx, ref, r):
    present = [a for a in r["attrs"] if has_attr(ref.node, a)]
    return f"has {', '.join(present)}" if present else None


@predicate("attr_present")
def _attr_present(ctx, ref, r):
    return f"{r['attr']} = {node_attr(ref.node, r['attr'])!r}" if has_attr(ref.node, r["attr"]) else None


@predicate("attr_all_equal")
def _attr_all_equal(ctx, ref, r):
    values = node_attr(ref.node, r["attr"])
    if not values or all(v == r["value"] for v in values):
        return None
    return f"{r['attr']} = {list(values)}"


@predicate("shape_slice")
def _shape_slice(ctx, ref, r):
    """Shape with start/end that select less than the whole shape."""
    node = ref.node
    if not (has_attr(node, "start") or has_attr(node, "end")):
        return None
    start, end = node_attr(node, "start", 0), node_attr(node, "end")
    rank = ctx.facts.rank(node.input[0])
    if rank is None:
        return None if start == 0 and end is None else f"start = {start}, end = {end}"
    start_n = min(max(start + rank if start < 0 else start, 0), rank)
    end_n = rank if end is None else min(max(end + rank if end < 0 else end, 0), rank)
    return None if (start_n, end_n) == (0, rank) else f"start = {start}, end = {end}, rank {rank}"


@predicate("reduce_axes_ignored")
def _reduce_axes_ignored(ctx, ref, r):
    """An axes input that an importer ignores (it reduces over every axis) matters unless the result is
    the same: the axes name every axis, or are empty (= every axis), or every axis they leave out has
    size 1 and keepdims = 1 (measured: such LayerNorm/RMSNorm expansions matched on 8.6.0)."""
    node = ref.node
    axes = input_at(node, 1)
    if axes is None:
        return None
    shape = ctx.facts.shape(node.input[0])
    value = ctx.facts.axes_value(axes)
    if value is not None and shape is not None:
        rank = len(shape)
        if not value.size:
            if node_attr(node, "noop_with_empty_axes", 0) == 0:
                return None
        elif rank:
            named = {int(a) % rank for a in value.reshape(-1)}
            if named == set(range(rank)):
                return None
            if node_attr(node, "keepdims", 1) and all(d == 1 for i, d in enumerate(shape) if i not in named):
                return None
    return f"axes input '{axes}'"


@predicate("float_shape_input")
def _float_shape_input(ctx, ref, r):
    """Inputs whose values become an output shape must not be FLOAT values known only at run time.
    ``int_cast_ok``: a FLOAT made by a Cast from an integer tensor is accepted (the parser follows the
    integer shape values through the Cast; measured on TensorRT-RTX 1.7)."""
    for index in r["inputs"]:
        name = input_at(ref.node, index)
        if name is None or name in ctx.facts.foldable:
            continue
        if ctx.facts.dtype(name) in ("FLOAT", "FLOAT16", "DOUBLE", "BFLOAT16"):
            producer = ctx.facts.producers.get(name)
            if (r.get("int_cast_ok") and producer is not None and producer.node.op_type == "Cast"
                    and (ctx.facts.dtype(producer.node.input[0]) or "").startswith(("INT", "UINT"))):
                continue
            return f"'{name}' is a run-time {ctx.facts.dtype(name)} tensor"
    return None


@predicate("inputs_same_shape")
def _inputs_same_shape(ctx, ref, r):
    """The listed inputs must have equal shapes (where both are known)."""
    names = [input_at(ref.node, i) for i in r["inputs"]]
    shapes = [ctx.facts.shape(n) if n else None for n in names]
    if any(s is None for s in shapes):
        return None
    first = shapes[0]
    for name, shape in zip(names[1:], shapes[1:]):
        if len(shape) != len(first) or any(a is not None and b is not None and a != b for a, b in zip(first, shape)):
            return f"'{names[0]}' {first} vs '{name}' {shape}"
    return None


@predicate("loop_scan_without_trip_count")
def _loop_scan_without_trip_count(ctx, ref, r):
    node = ref.node
    carried = max(len(node.input) - 2, 0)
    scans = [o for o in node.output[carried:] if o]
    if not scans:
        return None
    trip = input_at(node, 0)
    if trip is not None:
        value = ctx.facts.value(trip) if ctx.facts.is_weights(trip) else None
        if value is None or int(value.reshape(-1)[0]) < np.iinfo(np.int32).max:
            return None
    return f"{len(scans)} scan output(s), no trip count"


@predicate("input_absent")
def _input_absent(ctx, ref, r):
    name = input_at(ref.node, r["input"])
    return f"input {r['input']} ('{name}') is set" if name else None


@predicate("input_empty")
def _input_empty(ctx, ref, r):
    """An optional input written as an empty name ('') rather than left out."""
    idx = r["input"]
    return f"input {idx} is ''" if idx < len(ref.node.input) and not ref.node.input[idx] else None


@predicate("input_required")
def _input_required(ctx, ref, r):
    return None if input_at(ref.node, r["input"]) else f"input {r['input']} is missing"


@predicate("const_input")
def _const_input(ctx, ref, r):
    name = input_at(ref.node, r["input"])
    if name is None or ctx.facts.is_weights(name):
        return None
    if name in ctx.facts.graph_inputs:
        return f"'{name}' is a graph input"
    return f"'{name}' is computed at run time"


@predicate("const_input_false")
def _const_input_false(ctx, ref, r):
    name = input_at(ref.node, r["input"])
    if name is None or not ctx.facts.is_weights(name):
        return None
    value = ctx.facts.value(name)
    return "training_mode is true" if value is not None and bool(np.any(value)) else None


@predicate("max_used_outputs")
def _max_used_outputs(ctx, ref, r):
    extra = [o for o in ref.node.output[r["count"]:] if o and ctx.facts.used(o)]
    return f"uses output(s) {', '.join(extra)}" if extra else None


@predicate("rank_in")
def _rank_in(ctx, ref, r):
    name = input_at(ref.node, r["input"])
    rank = ctx.facts.rank(name) if name else None
    return None if rank is None or rank in r["ranks"] else f"input rank {rank}"


@predicate("min_rank")
def _min_rank(ctx, ref, r):
    name = input_at(ref.node, r["input"])
    rank = ctx.facts.rank(name) if name else None
    return None if rank is None or rank >= r["rank"] else f"input rank {rank}"


@predicate("static_shape")
def _static_shape(ctx, ref, r):
    name = input_at(ref.node, r["input"])
    if name is None or ctx.facts.shape(name) is None or ctx.facts.static(name):
        return None
    return f"'{name}' has dynamic dimensions"


@predicate("einsum_chars")
def _einsum_chars(ctx, ref, r):
    equation = node_attr(ref.node, "equation", "") or ""
    bad = sorted({c for c in equation if not ("a" <= c <= "z") and c not in "->., "})
    return f"equation {equation!r} has {''.join(bad)!r}" if bad else None


@predicate("einsum_features")
def _einsum_features(ctx, ref, r):
    equation = (node_attr(ref.node, "equation", "") or "").replace(" ", "")
    lhs = equation.split("->")[0]
    operands = lhs.split(",")
    found = []
    if "..." in equation:
        found.append("ellipsis")
    if any(len(set(op.replace(".", ""))) != len(op.replace(".", "")) for op in operands):
        found.append("diagonal (repeated subscript)")
    dims: Dict[str, Set[int]] = {}
    for op_labels, name in zip(operands, ref.node.input):
        shape = ctx.facts.shape(name) if name else None
        if shape is None or "..." in op_labels or len(shape) != len(op_labels):
            continue
        for label, dim in zip(op_labels, shape):
            if dim is not None:
                dims.setdefault(label, set()).add(dim)
    if any(len(v) > 1 and 1 in v for v in dims.values()):
        found.append("broadcasting")
    return f"equation {equation!r}: {', '.join(found)}" if found else None


@predicate("cast_to_supported")
def _cast_to_supported(ctx, ref, r):
    to = dtype_name(node_attr(ref.node, "to", 0))
    if to is None:
        return None
    eff = ctx.profile.effective_dtype(to)
    p = ctx.profile
    if eff in p.native_dtypes or eff in p.io_only_dtypes or eff in p.quantized_only_dtypes:
        return None
    return f"to = {to}"


@predicate("int_input_max")
def _int_input_max(ctx, ref, r):
    name = input_at(ref.node, r["input"])
    value = ctx.facts.value(name) if name and ctx.facts.is_weights(name) else None
    if value is None or value.size == 0:
        return None
    top = int(np.max(value))
    return f"{top} > {r['max']}" if top > r["max"] else None


@predicate("noop_empty_axes")
def _noop_empty_axes(ctx, ref, r):
    node = ref.node
    if node_attr(node, "noop_with_empty_axes", 0) != 1 or node_attr(node, "axes"):
        return None
    axes = input_at(node, 1)
    if axes is not None and r.get("axes_input_read"):   # the importer reduces over exactly these axes
        return None
    if axes is not None:
        value = ctx.facts.axes_value(axes)
        if value is None or value.size:
            return None
    return "noop_with_empty_axes = 1 without axes"


@predicate("split_uneven")
def _split_uneven(ctx, ref, r):
    node = ref.node
    n = node_attr(node, "num_outputs")
    if n is None or input_at(node, 1):
        return None
    shape = ctx.facts.shape(node.input[0])
    axis = node_attr(node, "axis", 0)
    if shape is None or not -len(shape) <= axis < len(shape) or shape[axis] is None:
        return None
    dim = shape[axis]
    return f"dimension {dim} split into {n}" if dim % n else None


@predicate("opset_at_least")
def _opset_at_least(ctx, ref, r):
    return f"model opset {ctx.facts.opset}" if ctx.facts.opset >= r["opset"] else None


@predicate("squeeze_needs_axes")
def _squeeze_needs_axes(ctx, ref, r):
    node = ref.node
    if node_attr(node, "axes") or input_at(node, 1):
        return None
    if ctx.facts.shape(node.input[0]) is None or ctx.facts.static(node.input[0]):
        return None
    return "no axes and a dynamic input shape"


@predicate("zero_point_zero")
def _zero_point_zero(ctx, ref, r):
    name = input_at(ref.node, r["input"])
    if name is None:
        return None
    if not ctx.facts.is_weights(name):
        return f"zero point '{name}' is not a constant"
    value = ctx.facts.value(name)
    if value is None:
        return None
    return "non-zero zero point" if np.any(value.astype(np.float64) != 0) else None


@predicate("mod_float_fmod0")
def _mod_float_fmod0(ctx, ref, r):
    if node_attr(ref.node, "fmod", 0) != 0:
        return None
    dt = ctx.facts.dtype(ref.node.input[0])
    return f"{dt} inputs" if dt in ("FLOAT", "FLOAT16", "DOUBLE", "BFLOAT16") else None


@predicate("rnn_directions_match")
def _rnn_directions_match(ctx, ref, r):
    node = ref.node
    if node_attr(node, "direction", "forward") != "bidirectional":
        return None
    for name in ("activations", "activation_alpha", "activation_beta"):
        values = list(node_attr(node, name, []) or [])
        half = len(values) // 2
        if values and values[:half] != values[half:]:
            return f"{name} = {values}"
    return None


@predicate("attr_missing")
def _attr_missing(ctx, ref, r):
    """An attribute the importer defaults differently from ONNX: right only when written out."""
    if has_attr(ref.node, r["attr"]):
        return None
    return f"no '{r['attr']}' attribute; ONNX default {r['onnx_default']!r}"


@predicate("dim_equals")
def _dim_equals(ctx, ref, r):
    """A static dimension of an input that must have one value (an unknown dimension is not flagged)."""
    name = input_at(ref.node, r["input"])
    shape = ctx.facts.shape(name) if name else None
    axis = r["axis"]
    if shape is None or not -len(shape) <= axis < len(shape) or shape[axis] is None:
        return None
    return None if shape[axis] == r["value"] else f"dimension {axis} of '{name}' is {shape[axis]}"


@predicate("if_branch_shapes")
def _if_branch_shapes(ctx, ref, r):
    """An If whose branches return different shapes under a computed condition (passes/unify_if.py
    knows which ones unify-if removes; derived once per model as "if_shape_problems").
    `ranks_unresolved`: only ranks that differ and that no rewrite resolves (a parser that takes one
    rank with different dims, and resolves conditions that static shapes decide)."""
    from ..passes.unify_if import if_shape_problems
    from ..target import TrtVersion
    problems = ctx.facts.derived("if_shape_problems", lambda: if_shape_problems(
        ctx.facts.model, TrtVersion.parse(ctx.profile.version)))
    found = problems.get(ref.node.output[0]) if ref.node.output else None
    if found is None or (r.get("ranks_unresolved") and (found[0] or found[2] != "rank")):
        return None
    return found[1]


@predicate("topk_k_counted")
def _topk_k_counted(ctx, ref, r):
    """A TopK whose K is counted from NMS/NonZero results (passes/bound_topk.py decides; derived once per
    model as "topk_problems")."""
    from ..passes.bound_topk import topk_problems
    problems = ctx.facts.derived("topk_problems", lambda: topk_problems(ctx.facts.model))
    found = problems.get(ref.node.output[0]) if ref.node.output and not ref.graph_path else None
    return None if found is None else found[1]


@predicate("pool_ceil_last_window")
def _pool_ceil_last_window(ctx, ref, r):
    """ceil_mode = 1 where the last window would start in the right padding: opset 22 drops that
    window, a parser computing the output size with the older formula keeps it (one more position)."""
    node = ref.node
    if node_attr(node, "ceil_mode", 0) != 1:
        return None
    auto_pad = node_attr(node, "auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):   # SAME_*: the size comes from the stride alone
        return None
    shape = ctx.facts.shape(node.input[0]) if node.input else None
    kernel = list(node_attr(node, "kernel_shape", []) or [])
    if shape is None or len(shape) < 3 or len(kernel) != len(shape) - 2:
        return None
    n = len(kernel)
    strides = list(node_attr(node, "strides", []) or [1] * n)
    dilations = list(node_attr(node, "dilations", []) or [1] * n)
    pads = list(node_attr(node, "pads", []) or [0] * 2 * n) if auto_pad == "NOTSET" else [0] * 2 * n
    changed = []
    for i, size in enumerate(shape[2:]):
        if size is None:
            continue
        room = size + pads[i] + pads[i + n] - ((kernel[i] - 1) * dilations[i] + 1)
        if room < 0:
            continue
        out = -(-room // strides[i]) + 1
        if (out - 1) * strides[i] >= size + pads[i]:
            changed.append(f"spatial dim {i}: {out} instead of {out - 1}")
    return "; ".join(changed) if changed else None


# Ops that carry a value unchanged or by arithmetic: a shape value computed through them from a network
# input makes that input a shape tensor in TensorRT.
SHAPE_VALUE_OPS = frozenset({"Cast", "Identity", "Add", "Sub", "Mul", "Div", "Ceil", "Floor", "Round", "Relu",
                             "Neg", "Abs", "Max", "Min", "Clip", "Concat", "Gather"})
SHAPE_VALUE_DATA_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Slice", "Flatten"})   # input 0 only
FLOAT_DTYPES = ("FLOAT", "FLOAT16", "DOUBLE", "BFLOAT16")


@predicate("float_input_to_shape")
def _float_input_to_shape(ctx, ref, r):
    """A value TensorRT takes as a shape tensor, computed at run time from a floating-point graph input:
    that network input would have to be a shape tensor, and those must be INT32 (INT64 from 10.0)."""
    f = ctx.facts
    for index in r["inputs"]:
        name = input_at(ref.node, index)
        if name is None or name in f.foldable:
            continue
        stack, seen = [name], set()
        while stack:
            t = stack.pop()
            if t in seen or t in f.foldable:
                continue
            seen.add(t)
            if t in f.graph_inputs:
                if f.dtype(t) in FLOAT_DTYPES:
                    return f"'{name}' is computed from the {f.dtype(t)} graph input '{t}'"
                continue
            producer = f.producers.get(t)
            if producer is None:
                continue
            if producer.node.op_type in SHAPE_VALUE_OPS:
                stack.extend(i for i in producer.node.input if i)
            elif producer.node.op_type in SHAPE_VALUE_DATA_OPS and producer.node.input:
                stack.append(producer.node.input[0])
    return None


@predicate("input_dtype")
def _input_dtype(ctx, ref, r):
    name = input_at(ref.node, r["input"])
    dt = ctx.facts.dtype(name) if name else None
    return None if dt is None or dt in r["dtypes"] else f"'{name}' is {dt}"


def when_holds(ctx: Ctx, ref: NodeRef, when: Optional[dict]) -> bool:
    """A profile rule's ``when``: opset bounds, attribute values, an input present."""
    if not when:
        return True
    if "opset_ge" in when and ctx.facts.opset < when["opset_ge"]:
        return False
    if "opset_lt" in when and ctx.facts.opset >= when["opset_lt"]:
        return False
    for name, value in (when.get("attrs") or {}).items():
        if node_attr(ref.node, name) != value:
            return False
    if "input_present" in when and input_at(ref.node, when["input_present"]) is None:
        return False
    return True
