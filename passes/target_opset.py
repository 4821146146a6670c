"""Bring the default-domain opset down to what the target TensorRT parses, node by node.

torch.onnx's dynamo exporter writes opset 18 and above; TensorRT 8.6 parses opset 17 at most and
reads opset-18 forms with its opset-17 code (Reduce axes as an input, Split num_outputs, Pad axes,
Resize axes ...). Every node whose operator version is newer than the target gets a rule: the form
that changed is rewritten (checked against the target's schema), ops that did not exist yet are
decomposed (Gelu, GroupNormalization, Mish, Swish; RMSNormalization is decompose-ops' rule, which runs
before this pass), and anything else is reported
with the model left at its opset. onnx.version_converter is not used: its downgrade adapters are
missing (Split 18->17, Pad 18->17, GroupNormalization, Gelu; on onnx 1.19 every 19->18 one) or wrong
(Reduce 18->17 ignores noop_with_empty_axes; AveragePool 19->18 and Pad 19->18 accept dilations and
mode='wrap' silently), and it fails the whole model on the first node it cannot convert.

Everything is decided from the target's profile (graphfix/profiles): max_opset, and the rules
that say a parser reads a newer form with older code. TensorRT 9.x parses opset 19 but ignores the
opset-18 Reduce axes input, so a model using it goes down to 17 there too. Three exporter idioms are
fixed at any opset where the profile says so:
- Shape(start, end) (opset 15; rule `shape_slice`, 8.6 and 9.x): the importer ignores start/end and
  returns the whole shape, so Squeeze/Slice/Concat built on it fail ("The shape of input ends
  misaligns with the shape of input axes", "node_cat: error while computing output extent")
  -> Shape + Slice;
- CastLike (opset 15, `type_as`; no importer in 8.6) -> Cast with the known target type;
- DequantizeLinear without a zero point (rule `input_required`, 8.6) -> an explicit INT8 zero.
- DequantizeLinear with an empty-named zero point (rule `input_empty`, 11.x) -> the input left out.
Deprecated operator versions (GroupNormalization-18, Scatter) are rewritten for every target.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphfix.graph_utils import NameMaker
from graphfix.opset import (POOL_LAST_WINDOW, Facts, NodeChange, OpsetChange, Step, Unconvertible,
                            drop_orphan_constant, generic_rule, graph_opset, input_at, is_default_domain,
                            const_value, pool_ceil_problem, walk)
from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.profiles import load_profile
from graphfix.registry import register_pass
from graphfix.remedies import (NOT_CUSTOM, PLUGIN_LOOKUP_FAILED, STANDARD_OP, fixes_finding, fixes_missing_op,
                               fixes_parser_error)
from graphfix.target import TrtRange

INT64_MAX = np.iinfo(np.int64).max

# Profile rules (graphfix/profiles/trt-*.json) saying the parser reads a newer form with older code:
# a model using that form must go down to the opset before the form, whatever max_opset says
# (TensorRT 9.x parses opset 19 but ignores the opset-18 Reduce axes input and reduces everything).
FORM_LIMITS = {"reduce_axes_ignored": 17, "split_uneven": 17}

REDUCE_AXES_INPUT_OPS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                         "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSumSquare")


def _label(node: gs.Node) -> str:
    return node.name or f"<unnamed {node.op}>"


def _np_dtype(change: NodeChange, tensor) -> np.dtype:
    elem = change.facts.elem_type(tensor)
    if not elem:
        raise Unconvertible(f"element type of '{tensor.name}' is unknown")
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))


def _constant(tensor, what: str) -> np.ndarray:
    value = const_value(tensor)
    if value is None:
        raise Unconvertible(f"{what} '{tensor.name}' is computed at run time; it must be a constant")
    return value


# ----------------------------------------------------------------------------------------------
# Forms that changed
# ----------------------------------------------------------------------------------------------

def lower_reduce(node: gs.Node, change: NodeChange) -> Optional[Step]:
    """Reduce* 18: `axes` became an input, with noop_with_empty_axes -> back to an attribute."""
    if not change.crosses(18):
        return generic_rule(node, change)
    attrs = dict(node.attrs)
    noop = int(attrs.pop("noop_with_empty_axes", 0))
    axes_tensor = input_at(node, 1)
    axes = [] if axes_tensor is None else [int(a) for a in _constant(axes_tensor, "axes").ravel()]
    x = node.inputs[0]
    if not axes and noop:  # opset 17 reads "no axes" as "all axes"; here it means "reduce nothing"
        return change.replace(lambda outs: _elementwise_part(change, node.op, x, outs),
                              "empty axes with noop_with_empty_axes=1 -> its elementwise part")
    if axes:
        attrs["axes"] = axes
    how = "" if axes_tensor is None else "axes input -> attribute" if axes else "empty axes input dropped (all axes)"
    return change.reform([x], attrs, how)


def _elementwise_part(change: NodeChange, op: str, x, outputs) -> List[gs.Node]:
    """A reduction over no axes still applies its elementwise steps (ReduceSumSquare squares)."""
    if op == "ReduceSumSquare":
        return [change.make("Mul", [x, x], outputs)]
    if op in ("ReduceL1", "ReduceL2"):
        return [change.make("Abs", [x], outputs)]
    if op == "ReduceLogSum":
        return [change.make("Log", [x], outputs)]
    return [change.make("Identity", [x], outputs)]  # Mean/Max/Min/Prod/LogSumExp of one element


def lower_split(node: gs.Node, change: NodeChange) -> Optional[Step]:
    """Split 18 added num_outputs (last chunk smaller when uneven) -> explicit split sizes."""
    if not change.crosses(18):
        return generic_rule(node, change)
    attrs = dict(node.attrs)
    n = attrs.pop("num_outputs", None)
    x, split = node.inputs[0], input_at(node, 1)
    if n is None or split is not None:
        return change.reform([x] + ([split] if split is not None else []), attrs,
                             "" if n is None else "dropped num_outputs (split sizes given)")
    n = int(n)
    if n != len(node.outputs):
        raise Unconvertible(f"num_outputs={n} but the node has {len(node.outputs)} outputs")
    axis = int(attrs.get("axis", 0))
    shape = change.dims(x)
    dim = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
    if n == 1 or (dim is not None and dim % n == 0):
        return change.reform([x], attrs, f"num_outputs={n} -> equal split")
    if dim is not None:
        chunk = -(-dim // n)
        sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
        if sizes[-1] < 0:
            raise Unconvertible(f"axis of size {dim} cannot be split into {n} chunks of {chunk}")
        return change.reform([x, change.const(sizes, np.int64, "split")], attrs,
                             f"num_outputs={n} -> split sizes {sizes}")
    change.reform([x, change.const([1] * n, np.int64, "split")], attrs, "")  # validates the form

    def build(outputs) -> List[gs.Node]:
        # chunk = ceil(d / n); sizes = [chunk] * (n - 1) + [d - chunk * (n - 1)], at run time
        v = {k: change.var(k) for k in ("dim_plus", "chunk", "head", "last", "chunks", "sizes")}
        c = {k: change.const([val], np.int64, k) for k, val in (("n_minus_1", n - 1), ("n", n))}
        dim, dim_nodes = change.shape_of(x, axis)   # [d]: Shape -> Slice (the axis is dynamic)
        return dim_nodes + [
                change.make("Add", [dim, c["n_minus_1"]], [v["dim_plus"]]),
                change.make("Div", [v["dim_plus"], c["n"]], [v["chunk"]]),
                change.make("Mul", [v["chunk"], c["n_minus_1"]], [v["head"]]),
                change.make("Sub", [dim, v["head"]], [v["last"]]),
                change.make("Tile", [v["chunk"], c["n_minus_1"]], [v["chunks"]]),
                change.make("Concat", [v["chunks"], v["last"]], [v["sizes"]], {"axis": 0}),
                change.make("Split", [x, v["sizes"]], outputs, attrs, name=node.name or None)]
    return change.replace(build, f"num_outputs={n} on a dynamic axis -> split sizes computed at run time")


def lower_pad(node: gs.Node, change: NodeChange) -> Optional[Step]:
    """Pad 18 added an `axes` input, 19 the 'wrap' mode."""
    attrs = dict(node.attrs)
    if attrs.get("mode", "constant") == "wrap" and change.crosses(19):
        raise Unconvertible("mode='wrap' has no equivalent before opset 19")
    inputs = list(node.inputs)
    axes_tensor = input_at(node, 3)
    if axes_tensor is None or not change.crosses(18):
        return change.reform(inputs[:3] if axes_tensor is None else inputs, attrs, "", handled=(19,))
    axes = [int(a) for a in _constant(axes_tensor, "axes").ravel()]
    pads = [int(p) for p in _constant(inputs[1], "pads").ravel()]
    rank = change.facts.rank(inputs[0])
    if rank is None:
        raise Unconvertible("input rank unknown; needed to spread the pads of `axes` over all axes")
    if len(pads) != 2 * len(axes):
        raise Unconvertible(f"{len(pads)} pads for {len(axes)} axes")
    full = np.zeros(2 * rank, np.int64)
    for i, axis in enumerate(axes):
        full[axis % rank] = pads[i]
        full[axis % rank + rank] = pads[i + len(axes)]
    new_inputs = [inputs[0], change.const(full, np.int64, "pads")] + inputs[2:3]
    return change.reform(new_inputs, attrs, f"axes {axes} folded into full-rank pads", handled=(19,))


def lower_resize(node: gs.Node, change: NodeChange) -> Optional[Step]:
    """Resize 18 added antialias/axes/keep_aspect_ratio_policy, 19 'half_pixel_symmetric'."""
    attrs = dict(node.attrs)
    if attrs.get("coordinate_transformation_mode") == "half_pixel_symmetric" and change.crosses(19):
        raise Unconvertible("coordinate_transformation_mode='half_pixel_symmetric' has no "
                            "equivalent before opset 19")
    inputs = list(node.inputs)
    how = []
    if change.crosses(18):
        if int(attrs.pop("antialias", 0)):
            raise Unconvertible("antialias=1 has no equivalent before opset 18")
        policy = attrs.pop("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            raise Unconvertible(f"keep_aspect_ratio_policy='{policy}' has no equivalent before opset 18")
        axes = attrs.pop("axes", None)
        if axes is not None:
            inputs = _resize_full_rank(node, change, [int(a) for a in axes])
            how.append(f"axes {list(axes)} expanded to every axis")
    return change.reform(inputs, attrs, ", ".join(how), handled=(19,))


def _resize_full_rank(node: gs.Node, change: NodeChange, axes: List[int]) -> list:
    x = node.inputs[0]
    shape = change.facts.shape(x)
    if shape is None:
        raise Unconvertible("input rank unknown; needed to expand Resize axes")
    rank = len(shape)
    axes = [a % rank for a in axes]
    inputs = list(node.inputs) + [gs.Variable.empty()] * (4 - len(node.inputs))
    roi, scales, sizes = (input_at(node, i) for i in (1, 2, 3))
    if roi is not None:
        value = _constant(roi, "roi").ravel()
        full = np.concatenate([np.zeros(rank), np.ones(rank)]).astype(value.dtype)
        for i, a in enumerate(axes):
            full[a], full[a + rank] = value[i], value[i + len(axes)]
        inputs[1] = change.const(full, hint="roi")
    if scales is not None:
        value = _constant(scales, "scales").ravel()
        full = np.ones(rank, value.dtype)
        full[axes] = value
        inputs[2] = change.const(full, hint="scales")
    if sizes is not None:
        value = _constant(sizes, "sizes").ravel()
        kept = [d for i, d in enumerate(shape) if i not in axes]
        if any(d is None for d in kept):
            raise Unconvertible("sizes with axes on an input whose other dims are dynamic")
        full = np.array([d if d is not None else 0 for d in shape], np.int64)
        full[axes] = value
        inputs[3] = change.const(full, np.int64, "sizes")
    while inputs and not (inputs[-1] is not None and inputs[-1].name):
        inputs.pop()
    return inputs


def lower_scatter(node: gs.Node, change: NodeChange) -> Optional[Step]:
    """ScatterND/ScatterElements 18 added reduction='max'/'min'."""
    reduction = node.attrs.get("reduction", "none")
    if reduction in ("max", "min") and change.crosses(18):
        raise Unconvertible(f"reduction='{reduction}' has no equivalent before opset 18")
    return change.reform(node.inputs, node.attrs, "", handled=(18,))


def lower_grid_sample(node: gs.Node, change: NodeChange) -> Optional[Step]:
    """GridSample 20 renamed bilinear/bicubic to linear/cubic and allowed N-D input."""
    if not change.crosses(20):
        return generic_rule(node, change)
    attrs = dict(node.attrs)
    rank = change.facts.rank(node.inputs[0])
    if rank != 4:
        raise Unconvertible("GridSample before opset 20 takes 4-D input only"
                            + (" (rank unknown)" if rank is None else f" (rank {rank})"))
    renamed = {"linear": "bilinear", "cubic": "bicubic", "nearest": "nearest"}
    if "mode" in attrs:
        attrs["mode"] = renamed[attrs["mode"]]
    return change.reform(node.inputs, attrs, "mode renamed to its opset-16 spelling", handled=(20,))


def lower_pool(node: gs.Node, change: NodeChange) -> Optional[Step]:
    """AveragePool 19 / LpPool 18 added dilations (no schema default, so generic cannot drop it);
    AveragePool/MaxPool/LpPool 22 changed the ceil_mode output size (refused where it differs)."""
    attrs = dict(node.attrs)
    target = change.require_target()
    how = ""
    if "dilations" in attrs and "dilations" not in target.attributes:
        if any(int(d) != 1 for d in attrs["dilations"]):
            raise Unconvertible(f"dilations={list(attrs['dilations'])} have no equivalent in "
                                f"{node.op}-{target.since_version}")
        del attrs["dilations"]
        how = "dropped dilations of 1"
    if change.crosses(POOL_LAST_WINDOW):
        problem = pool_ceil_problem(change, attrs)
        if problem:
            raise Unconvertible(problem)
    return change.reform(node.inputs, attrs, how, handled=(POOL_LAST_WINDOW,))


# ----------------------------------------------------------------------------------------------
# Ops that did not exist at the target: decomposed into older ops
# ----------------------------------------------------------------------------------------------

def _decompose_only_if_missing(fn):
    def rule(node: gs.Node, change: NodeChange) -> Optional[Step]:
        if change.target is not None:
            return generic_rule(node, change)
        return fn(node, change)
    rule.__doc__ = fn.__doc__
    return rule


@_decompose_only_if_missing
def lower_gelu(node: gs.Node, change: NodeChange) -> Optional[Step]:
    """Gelu (20) -> the exact erf form or the tanh approximation, as the attribute says."""
    x = node.inputs[0]
    dt = _np_dtype(change, x)
    approximate = node.attrs.get("approximate", "none")

    def c(value, hint):
        return change.const(np.array(value, dt), hint=hint)

    def build(outputs) -> List[gs.Node]:
        t = {k: change.var(k) for k in ("a", "b", "c", "d", "e", "f", "g", "h")}
        if approximate == "tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            return [change.make("Mul", [x, x], [t["a"]]),
                    change.make("Mul", [t["a"], x], [t["b"]]),
                    change.make("Mul", [t["b"], c(0.044715, "k")], [t["c"]]),
                    change.make("Add", [x, t["c"]], [t["d"]]),
                    change.make("Mul", [t["d"], c(math.sqrt(2.0 / math.pi), "sqrt_2_over_pi")], [t["e"]]),
                    change.make("Tanh", [t["e"]], [t["f"]]),
                    change.make("Add", [t["f"], c(1.0, "one")], [t["g"]]),
                    change.make("Mul", [x, t["g"]], [t["h"]]),
                    change.make("Mul", [t["h"], c(0.5, "half")], outputs)]
        return [change.make("Div", [x, c(math.sqrt(2.0), "sqrt_2")], [t["a"]]),  # 0.5 x (1 + erf(x/sqrt 2))
                change.make("Erf", [t["a"]], [t["b"]]),
                change.make("Add", [t["b"], c(1.0, "one")], [t["c"]]),
                change.make("Mul", [x, t["c"]], [t["d"]]),
                change.make("Mul", [t["d"], c(0.5, "half")], outputs)]
    return change.replace(build, f"decomposed (approximate='{approximate}')")


@_decompose_only_if_missing
def lower_mish(node: gs.Node, change: NodeChange) -> Optional[Step]:
    """Mish (18) -> x * tanh(softplus(x))."""
    x = node.inputs[0]

    def build(outputs) -> List[gs.Node]:
        sp, th = change.var("softplus"), change.var("tanh")
        return [change.make("Softplus", [x], [sp]), change.make("Tanh", [sp], [th]),
                change.make("Mul", [x, th], outputs)]
    return change.replace(build, "decomposed into Softplus/Tanh/Mul")


@_decompose_only_if_missing
def lower_swish(node: gs.Node, change: NodeChange) -> Optional[Step]:
    """Swish (24) -> x * sigmoid(alpha * x)."""
    x = node.inputs[0]
    alpha = float(node.attrs.get("alpha", 1.0))
    dt = _np_dtype(change, x) if alpha != 1.0 else None

    def build(outputs) -> List[gs.Node]:
        nodes, arg = [], x
        if alpha != 1.0:
            arg = change.var("ax")
            nodes.append(change.make("Mul", [x, change.const(np.array(alpha, dt), hint="alpha")], [arg]))
        sig = change.var("sigmoid")
        return nodes + [change.make("Sigmoid", [arg], [sig]), change.make("Mul", [x, sig], outputs)]
    return change.replace(build, "decomposed into Sigmoid/Mul")


def _compute_type(dt: np.dtype, stash_type: int):
    """Normalizations compute in float32 (stash_type=1) when the data is narrower."""
    return np.dtype(np.float32) if stash_type == 1 and dt != np.float32 else dt


def lower_group_norm(node: gs.Node, change: NodeChange) -> Optional[Step]:
    """GroupNormalization (18; 21 made scale/bias per channel) -> InstanceNormalization over groups.

    x [N, C, ...] -> Reshape [N, G, -1] -> InstanceNormalization(ones, zeros) -> Reshape back ->
    * scale[C, 1...] + bias[C, 1...]. Scale and bias must be constants (per-group ones repeated).
    """
    if change.target is not None and not change.crosses(21):
        return generic_rule(node, change)
    x, scale, bias = node.inputs[0], node.inputs[1], node.inputs[2]
    groups = int(node.attrs["num_groups"])
    eps = float(node.attrs.get("epsilon", 1e-5))
    dt = _np_dtype(change, x)
    ct = _compute_type(dt, int(node.attrs.get("stash_type", 1)))
    shape = change.facts.shape(x)
    if shape is None or len(shape) < 2 or shape[1] is None:
        raise Unconvertible("channel dimension must be static")
    channels, rank = shape[1], len(shape)
    if channels % groups:
        raise Unconvertible(f"{channels} channels do not split into {groups} groups")
    scale_v, bias_v = _constant(scale, "scale").ravel(), _constant(bias, "bias").ravel()
    per_group = change.source.since_version < 21
    if per_group:
        scale_v, bias_v = np.repeat(scale_v, channels // groups), np.repeat(bias_v, channels // groups)
    if scale_v.size != channels or bias_v.size != channels:
        raise Unconvertible(f"scale/bias of {scale_v.size}/{bias_v.size} values for {channels} channels")
    per_channel = [channels] + [1] * (rank - 2)

    def build(outputs) -> List[gs.Node]:
        t = {k: change.var(k) for k in ("grouped", "grouped_c", "normed_c", "normed", "back", "scaled")}
        nodes = [change.make("Reshape", [x, change.const([0, groups, -1], np.int64, "group_shape")], [t["grouped"]])]
        grouped = t["grouped"]
        if ct != dt:
            nodes.append(change.make("Cast", [grouped], [t["grouped_c"]], {"to": onnx.TensorProto.FLOAT}))
            grouped = t["grouped_c"]
        nodes.append(change.make("InstanceNormalization",
                                 [grouped, change.const(np.ones(groups, ct), hint="ones"),
                                  change.const(np.zeros(groups, ct), hint="zeros")],
                                 [t["normed_c"]], {"epsilon": eps}))
        normed = t["normed_c"]
        if ct != dt:
            nodes.append(change.make("Cast", [normed], [t["normed"]],
                                     {"to": onnx.helper.np_dtype_to_tensor_dtype(dt)}))
            normed = t["normed"]
        shape, shape_nodes = change.shape_of(x)
        return nodes + shape_nodes + [
            change.make("Reshape", [normed, shape], [t["back"]]),
            change.make("Mul", [t["back"], change.const(scale_v.astype(dt).reshape(per_channel), hint="scale")],
                        [t["scaled"]]),
            change.make("Add", [t["scaled"], change.const(bias_v.astype(dt).reshape(per_channel), hint="bias")],
                        outputs)]
    return change.replace(build, f"decomposed into InstanceNormalization over {groups} groups"
                          + (" (per-group scale/bias repeated per channel)" if per_group else ""))


def scatter_to_scatter_elements(node: gs.Node, change: NodeChange) -> Optional[Step]:
    """Scatter (deprecated at 11) is ScatterElements under its old name."""
    if change.target is not None:
        return generic_rule(node, change)
    x, indices, updates = node.inputs[0], node.inputs[1], node.inputs[2]
    attrs = dict(node.attrs)
    return change.replace(lambda outs: [change.make("ScatterElements", [x, indices, updates], outs, attrs)],
                          "renamed to ScatterElements")


# Deprecated operator versions onnx.checker rejects at any opset: rewritten for every target.
# GroupNormalization-18 is also ambiguous for TensorRT, whose importer broadcasts scale/bias per
# channel; the decomposition states the per-group meaning explicitly.
DEPRECATED_RULES = {"GroupNormalization": lower_group_norm, "Scatter": scatter_to_scatter_elements}

LOWER_RULES = {op: lower_reduce for op in REDUCE_AXES_INPUT_OPS}
LOWER_RULES.update({
    "Split": lower_split,
    "Pad": lower_pad,
    "Resize": lower_resize,
    "ScatterND": lower_scatter,
    "ScatterElements": lower_scatter,
    "GridSample": lower_grid_sample,
    "AveragePool": lower_pool,
    "MaxPool": lower_pool,
    "LpPool": lower_pool,
    "Gelu": lower_gelu,
    "Mish": lower_mish,
    "Swish": lower_swish,
    "GroupNormalization": lower_group_norm,
})


# Ops this pass rewrites away where the target has no importer for them: ops newer than the target's
# opset are decomposed, CastLike becomes Cast (a row of the table of remedies).
REPLACED_MISSING_OPS = frozenset(LOWER_RULES) | frozenset(DEPRECATED_RULES) | {"CastLike"}


def _axes_known(site) -> bool:
    """A Reduce axes input becomes an attribute only when it is known before run time."""
    return site.facts.axes_value(site.input(1)) is not None


def _int8_data(site) -> bool:
    """A DequantizeLinear zero point is added for INT8 data only (8.6 rejects UINT8 data anyway)."""
    return site.facts.dtype(site.ref.node.input[0]) == "INT8"


# ----------------------------------------------------------------------------------------------
# Exporter idioms the TensorRT < 10 parser mishandles
# ----------------------------------------------------------------------------------------------

def split_shape_slices(graph: gs.Graph, names: NameMaker, result: PassResult) -> None:
    """Shape(x, start, end) -> Slice(Shape(x), [start], [end]): TensorRT < 10 ignores start/end."""
    for owner, node in walk(graph):
        if node.op != "Shape" or not is_default_domain(node) or not ({"start", "end"} & set(node.attrs)):
            continue
        start = int(node.attrs.get("start", 0))
        end = node.attrs.get("end")
        if start == 0 and end is None:
            node.attrs.pop("start", None)
            result.change("drop-shape-range", _label(node), {"start": 0})
            continue
        full = gs.Variable(names("full_shape"), dtype=np.int64)
        outputs = list(node.outputs)
        node.outputs.clear()
        node.outputs.append(full)
        node.attrs.pop("start", None)
        node.attrs.pop("end", None)
        const = {k: gs.Constant(names(k), np.array([v], np.int64))
                 for k, v in (("starts", start), ("ends", INT64_MAX if end is None else int(end)), ("axes", 0))}
        slice_node = gs.Node("Slice", names("Slice"), inputs=[full, const["starts"], const["ends"], const["axes"]],
                             outputs=outputs)
        index = next(i for i, n in enumerate(owner.nodes) if n is node)
        owner.nodes.insert(index + 1, slice_node)
        result.change("shape-range-to-slice", _label(node),
                      {"start": start, "end": None if end is None else int(end), "slice": slice_node.name})
        result.count("shape_ranges_sliced")


def castlike_to_cast(graph: gs.Graph, result: PassResult) -> None:
    """CastLike(x, like) -> Cast(x, to=type of like): the TensorRT 8.6 parser has no CastLike."""
    candidates = [(o, n) for o, n in walk(graph) if n.op == "CastLike" and is_default_domain(n)]
    if not candidates:
        return
    facts = Facts(graph)
    opset = graph_opset(graph)
    for owner, node in candidates:
        like = node.inputs[1]
        elem = facts.elem_type(like)
        if not elem:
            result.warn(f"CastLike '{_label(node)}' kept: the type of '{like.name}' is unknown")
            continue
        attrs = {"to": int(elem)}
        if opset >= 19 and "saturate" in node.attrs:
            attrs["saturate"] = node.attrs["saturate"]
        x = node.inputs[0]
        node.op = "Cast"
        node.inputs.clear()
        node.inputs.append(x)
        node.attrs.clear()
        node.attrs.update(attrs)
        drop_orphan_constant(owner, like)
        result.change("castlike-to-cast", _label(node), {"to": onnx.TensorProto.DataType.Name(elem)})
        result.count("castlike_replaced")


def dequantize_zero_points(graph: gs.Graph, names: NameMaker, result: PassResult) -> None:
    """DequantizeLinear(x, scale) -> DequantizeLinear(x, scale, 0): the 8.6 importer reads the zero
    point unconditionally (without one: "vector::_M_range_check", seen on the rig). ONNX's default
    zero point is 0 of x's type, so an explicit INT8 zero of the scale's shape means the same.
    Only INT8 x: 8.6 rejects UINT8 data anyway. (QuantizeLinear without a zero point outputs UINT8,
    which an INT8 zero point would change, so it is left alone.)"""
    candidates = [n for _, n in walk(graph) if n.op == "DequantizeLinear" and is_default_domain(n)
                  and (len(n.inputs) < 3 or not n.inputs[2].name)]
    if not candidates:
        return
    facts = Facts(graph)
    for node in candidates:
        if facts.elem_type(node.inputs[0]) != onnx.TensorProto.INT8:
            continue
        shape = facts.shape(node.inputs[1])
        if shape is None or any(d is None for d in shape):
            result.warn(f"DequantizeLinear '{_label(node)}' kept without a zero point: the shape of its "
                        f"scale '{node.inputs[1].name}' is unknown")
            continue
        zero = gs.Constant(names("zero_point"), np.zeros(shape, np.int8))
        while len(node.inputs) > 2:    # an empty optional input ("") goes too
            node.inputs.pop()
        node.inputs.append(zero)
        result.change("dequantize-zero-point", _label(node), {"shape": shape})
        result.count("zero_points_added")


def drop_empty_zero_points(graph: gs.Graph, result: PassResult) -> None:
    """DequantizeLinear(x, scale, '') -> DequantizeLinear(x, scale): an empty-named optional input means
    "absent", so leaving it out means the same; the 11.x importer refuses the empty name ("Invalid Node",
    measured on TensorRT-RTX 1.7) and accepts the two-input form."""
    for _, node in walk(graph):
        if (node.op == "DequantizeLinear" and is_default_domain(node) and len(node.inputs) == 3
                and not node.inputs[2].name):
            node.inputs.pop()
            result.change("drop-empty-zero-point", _label(node), {})
            result.count("empty_zero_points_dropped")


def _op_facts(profile, op: str) -> Optional[dict]:
    facts = profile.op(op)
    return facts if facts is not None and facts.get("supported", True) else None


def _imports(profile, op: str) -> bool:
    return _op_facts(profile, op) is not None


def _has_rule(profile, op: str, check: str) -> bool:
    return any(rule.get("check") == check for rule in (_op_facts(profile, op) or {}).get("rules", []))


def form_limit(graph: gs.Graph, profile) -> Optional[Tuple[int, str]]:
    """The opset a node's form forces (FORM_LIMITS), with the reason, or None."""
    for _, node in walk(graph):
        if not is_default_domain(node):
            continue
        uses_form = {"reduce_axes_ignored": node.op in REDUCE_AXES_INPUT_OPS and input_at(node, 1) is not None,
                     "split_uneven": node.op == "Split" and "num_outputs" in node.attrs}
        for check, opset in sorted(FORM_LIMITS.items()):
            if uses_form[check] and _has_rule(profile, node.op, check):
                rule = next(r for r in _op_facts(profile, node.op)["rules"] if r.get("check") == check)
                return opset, f"{node.op} '{_label(node)}': {rule.get('reason', check)}"
    return None


@register_pass
class TargetOpset(Pass):
    info = PassInfo(
        name="target-opset",
        summary="Lower the default-domain opset to the highest the target TensorRT parses, "
                "converting every node whose form changed; fix Shape(start,end)/CastLike for TensorRT < 10 and "
                "give DequantizeLinear a zero point for 8.6",
        fixes="The shape of input ends misaligns with the shape of input axes / node_cat: error while "
              "computing output extent / parser crash on opset >= 18 models from torch.onnx's dynamo exporter "
              "/ DequantizeLinear: vector::_M_range_check",
        after=("fold-constants",),
        remedies=(
            fixes_finding("max-opset", why="lowers the opset to what the target parses"),
            fixes_finding("min-opset", why="raises an opset below 7"),
            fixes_finding("reduce_axes_ignored", applies=_axes_known, why="Reduce axes input -> attribute"),
            fixes_finding("shape_slice", ops=("Shape",), why="Shape(start, end) -> Slice(Shape)"),
            fixes_finding("split_uneven", ops=("Split",), why="Split num_outputs -> explicit sizes"),
            fixes_finding("opset_at_least", ops=("GroupNormalization",), why="GroupNormalization-21 decomposed"),
            fixes_finding("input_absent", ops=("Pad",), why="Pad axes input -> pads over every axis"),
            fixes_finding("input_required", ops=("DequantizeLinear",), applies=_int8_data,
                          why="an explicit INT8 zero point"),
            fixes_finding("input_empty", ops=("DequantizeLinear",), why="an explicit zero point"),
            fixes_finding("attr_in", ops=("GridSample",), params={"attr": "mode"}, trt=TrtRange(below="9.0"),
                          why="GridSample-20 mode names -> GridSample-16's"),
            fixes_missing_op(REPLACED_MISSING_OPS, fallback=True,
                             why="ops newer than the target's opset are decomposed, CastLike becomes Cast"),
            fixes_parser_error(PLUGIN_LOOKUP_FAILED, op_kind=STANDARD_OP, exclusive=True,
                               why="a standard op looked up as a plugin has no importer in this TensorRT"),
            fixes_parser_error(r"No importer registered for op|\bopset\b", op_kind=NOT_CUSTOM,
                               prerequisite=("fold-constants",
                                             "target-opset lowers only constant axes, pads and sizes"),
                               why="the op is in a form (opset) this TensorRT's parser does not import"),
        ),
    )

    def run(self, graph: gs.Graph) -> PassResult:
        result = PassResult()
        profile = load_profile(self.context.target)
        names = NameMaker(graph, "target-opset")
        current = graph_opset(graph)
        target, why = profile.max_opset, f"TensorRT {self.context.target} parses opset {profile.max_opset} at most"
        limit = form_limit(graph, profile)
        if limit is not None and limit[0] < target:
            target, why = limit
        if current > target:
            self._lower(graph, current, target, why, names, result)
        self._repair_deprecated(graph, names, result)
        if _has_rule(profile, "Shape", "shape_slice"):
            split_shape_slices(graph, names, result)
        if not _imports(profile, "CastLike"):
            castlike_to_cast(graph, result)
        if _has_rule(profile, "DequantizeLinear", "input_required"):
            dequantize_zero_points(graph, names, result)
        elif _has_rule(profile, "DequantizeLinear", "input_empty"):
            drop_empty_zero_points(graph, result)
        return result

    def _repair_deprecated(self, graph: gs.Graph, names: NameMaker, result: PassResult) -> None:
        change = OpsetChange(graph, graph_opset(graph), DEPRECATED_RULES, names, deprecated_only=True).plan()
        for problem in change.problems:
            result.warn(f"deprecated operator kept: {problem}")
        if not change.ok:
            return
        for step, how in change.apply():
            result.change("replace-deprecated", _label(step.node), {"op": step.op, "how": how})
            result.count("deprecated_replaced")

    def _lower(self, graph: gs.Graph, current: int, target: int, why: str, names: NameMaker,
               result: PassResult) -> None:
        change = OpsetChange(graph, target, LOWER_RULES, names).plan()
        if not change.ok:
            for problem in change.problems:
                result.warn(f"cannot lower to opset {target}: {problem}")
            result.warn(f"kept opset {current}: {len(change.problems)} node(s) have no opset-{target} form; {why}")
            result.count("nodes_unconvertible", len(change.problems))
            return
        for step, how in change.apply():
            result.change("convert", _label(step.node), {"op": step.op, "how": how})
        result.change("set-opset", "graph", {"from": current, "to": target, "why": why,
                                             "nodes_converted": len(change.steps),
                                             "nodes_unchanged": change.unchanged})
        result.count("nodes_converted", len(change.steps))
