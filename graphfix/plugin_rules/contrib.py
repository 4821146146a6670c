"""ONNX Runtime contrib ops (domain com.microsoft) that TensorRT has no importer for.

Each becomes standard ONNX ops by default (ONNX Runtime checks that decomposition, and TensorRT
imports it well: LayerNormalization is a native INormalizationLayer since 8.6, Erf/Tanh GELU chains
are fused by Myelin). Where a TensorRT plugin computes the same thing, a plugin rule exists too,
used only when asked (``PassContext.options["contrib_plugins"] = True``):

- SkipLayerNormalization -> CustomSkipLayerNormPluginDynamic v1 (plugin/skipLayerNormPlugin; fields
  type_id INT, ld INT, beta/gamma/bias TENSOR; input and skip must be 5-D [S,B,E,1,1] of equal shape,
  so Unsqueeze/Squeeze wrap it; its 8.6 kernel has no epsilon, so only epsilon <= 1e-5 matches);
- FastGelu (tanh approximation) -> CustomGeluPluginDynamic v1 (plugin/geluPlugin; fields type_id INT,
  bias TENSOR; deprecated since 9.0, gone from TensorRT 11).
Gelu and BiasGelu use erf, which no plugin computes; EmbedLayerNormalization's plugin
(CustomEmbLayerNormPluginDynamic) takes [S,B] ids and returns a packed mask that only TensorRT's
BERT attention plugin reads (ONNX Runtime's mask_index counts ones per row), so it only decomposes.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..target import TrtRange
from .build import remove_nodes
from .patterns import const, dtype_of, is_graph_output, optional_input, optional_output, static_dims, used
from .registry import register_rule
from .rule import DECOMPOSE, Match, NearMiss, PluginSpec, Rule

MS = "com.microsoft"
CONTRIB_PLUGINS = "contrib_plugins"   # PassContext.options key: prefer plugins where one exists

SKIP_LN_PLUGIN = PluginSpec("CustomSkipLayerNormPluginDynamic", "1", ships=TrtRange(since="7.0"),
                            source="NVIDIA/TensorRT plugin/skipLayerNormPlugin README (version 1 fields)")
GELU_PLUGIN = PluginSpec("CustomGeluPluginDynamic", "1", ships=TrtRange(below="11.0"),
                         source="NVIDIA/TensorRT plugin/geluPlugin README (removed in TensorRT 11)")


# -- building blocks ----------------------------------------------------------------------------
def _dtype(tensor) -> np.dtype:
    return dtype_of(tensor) or np.dtype(np.float32)


def _c(build, value, dtype, hint="c"):
    return build.const(np.asarray(value, dtype=dtype), hint)


def reduce_mean_last(build, graph, x, dtype):
    if int(graph.opset) >= 18:
        return build.op("ReduceMean", x, build.const(np.array([-1], np.int64), "axes"),
                        attrs={"keepdims": 1}, dtype=dtype)
    return build.op("ReduceMean", x, attrs={"axes": [-1], "keepdims": 1}, dtype=dtype)


def layer_norm(build, graph, x, gamma, beta, eps: float, out, dtype) -> None:
    """LayerNormalization over the last axis into `out`: the op from opset 17, primitives before."""
    if int(graph.opset) >= 17:
        inputs = [x, gamma] + ([beta] if beta is not None else [])
        build.node("LayerNormalization", inputs, outputs=[out], attrs={"axis": -1, "epsilon": float(eps)})
        return
    mean = reduce_mean_last(build, graph, x, dtype)
    d = build.op("Sub", x, mean, dtype=dtype)
    var = reduce_mean_last(build, graph, build.op("Mul", d, d, dtype=dtype), dtype)
    std = build.op("Sqrt", build.op("Add", var, _c(build, eps, dtype, "eps"), dtype=dtype), dtype=dtype)
    y = build.op("Mul", build.op("Div", d, std, dtype=dtype), gamma, dtype=dtype)
    if beta is not None:
        build.node("Add", [y, beta], outputs=[out])
    else:
        build.node("Identity", [y], outputs=[out])


def erf_gelu(build, x, out, dtype) -> None:
    """0.5 * x * (1 + erf(x / sqrt(2))) into `out`."""
    e = build.op("Erf", build.op("Mul", x, _c(build, 1 / math.sqrt(2), dtype), dtype=dtype), dtype=dtype)
    half_x = build.op("Mul", x, _c(build, 0.5, dtype), dtype=dtype)
    build.node("Mul", [half_x, build.op("Add", e, _c(build, 1.0, dtype), dtype=dtype)], outputs=[out])


def tanh_gelu(build, x, out, dtype) -> None:
    """0.5 * x * (1 + tanh(x * (0.7978845608 + 0.0356774081 * x^2))) into `out` (FastGelu)."""
    x2 = build.op("Mul", x, x, dtype=dtype)
    inner = build.op("Add", _c(build, math.sqrt(2 / math.pi), dtype),
                     build.op("Mul", x2, _c(build, 0.044715 * math.sqrt(2 / math.pi), dtype), dtype=dtype),
                     dtype=dtype)
    t = build.op("Tanh", build.op("Mul", x, inner, dtype=dtype), dtype=dtype)
    half_x = build.op("Mul", x, _c(build, 0.5, dtype), dtype=dtype)
    build.node("Mul", [half_x, build.op("Add", t, _c(build, 1.0, dtype), dtype=dtype)], outputs=[out])


class _ContribDecompose(Rule):
    kind = DECOMPOSE
    family = "contrib"
    anchor_domain = MS
    plugin_rule: Optional[str] = None   # name of the plugin rule that takes over when asked

    def plugin_takes(self, graph, node, ctx) -> bool:
        """With contrib_plugins asked: whether the plugin rule will replace this node (then the
        plugins pass does it); a plugin near miss leaves the node to this decomposition."""
        if not (self.plugin_rule and ctx.options.get(CONTRIB_PLUGINS)):
            return False
        from .registry import get_rule
        plugin = get_rule(self.plugin_rule)
        return plugin.wanted(ctx)[0] and isinstance(plugin.match(graph, node, ctx), Match)


# -- decompositions -----------------------------------------------------------------------------
@register_rule
class GeluDecompose(_ContribDecompose):
    name = "gelu"
    summary = "com.microsoft Gelu / BiasGelu -> x * 0.5 * (1 + Erf(x / sqrt 2))"
    anchor_ops = ("Gelu", "BiasGelu")

    def match(self, graph, node, ctx):
        return Match(anchor=node.name, nodes=[node], inputs=list(node.inputs), outputs=[node.outputs[0]],
                     details={"op": node.op})

    def rewrite(self, graph, match, build):
        node = match.nodes[0]
        x, out = match.inputs[0], match.outputs[0]
        dtype = _dtype(x)
        remove_nodes(graph, [node])
        if len(match.inputs) > 1 and match.inputs[1].name:
            x = build.op("Add", x, match.inputs[1], dtype=dtype)
        erf_gelu(build, x, out, dtype)
        return {}


@register_rule
class FastGeluDecompose(_ContribDecompose):
    name = "fast-gelu"
    summary = "com.microsoft FastGelu -> tanh-approximated GELU in standard ops"
    anchor_ops = ("FastGelu",)
    plugin_rule = "fast-gelu-plugin"

    def match(self, graph, node, ctx):
        if self.plugin_takes(graph, node, ctx):
            return None
        return Match(anchor=node.name, nodes=[node], inputs=list(node.inputs), outputs=[node.outputs[0]])

    def rewrite(self, graph, match, build):
        node = match.nodes[0]
        x, out = match.inputs[0], match.outputs[0]
        bias = optional_input(node, 1)
        dtype = _dtype(x)
        remove_nodes(graph, [node])
        if bias is not None:
            x = build.op("Add", x, bias, dtype=dtype)
        tanh_gelu(build, x, out, dtype)
        return {"bias": bias is not None}


@register_rule
class SkipLayerNormDecompose(_ContribDecompose):
    name = "skip-layer-norm"
    summary = "com.microsoft SkipLayerNormalization -> Add (+ bias) + LayerNormalization"
    anchor_ops = ("SkipLayerNormalization",)
    plugin_rule = "skip-layer-norm-plugin"

    def match(self, graph, node, ctx):
        if self.plugin_takes(graph, node, ctx):
            return None
        for i in (1, 2):
            out = optional_output(node, i)
            if out is not None and used(graph, out):
                return NearMiss(node.name, f"its training output '{out.name}' (mean/inv_std_var) is used")
        return Match(anchor=node.name, nodes=[node], inputs=list(node.inputs), outputs=list(node.outputs),
                     details={"epsilon": float(node.attrs.get("epsilon", 1e-12))})

    def rewrite(self, graph, match, build):
        node = match.nodes[0]
        x, skip, gamma = node.inputs[:3]
        beta, bias = optional_input(node, 3), optional_input(node, 4)
        out, total = node.outputs[0], optional_output(node, 3)
        eps = float(node.attrs.get("epsilon", 1e-12))
        dtype = _dtype(x)
        remove_nodes(graph, [node])
        keep_sum = [total] if total is not None and used(graph, total) else None   # output 3: the sum
        if bias is not None:
            s = build.node("Add", [build.op("Add", x, skip, dtype=dtype), bias], outputs=keep_sum, dtype=dtype)[0]
        else:
            s = build.node("Add", [x, skip], outputs=keep_sum, dtype=dtype)[0]
        layer_norm(build, graph, s, gamma, beta, eps, out, dtype)
        return {"bias": bias is not None, "layer_norm": "op" if int(graph.opset) >= 17 else "primitives"}


@register_rule
class EmbedLayerNormDecompose(_ContribDecompose):
    name = "embed-layer-norm"
    summary = "com.microsoft EmbedLayerNormalization -> Gather + Add + LayerNormalization (+ mask count)"
    anchor_ops = ("EmbedLayerNormalization",)

    def match(self, graph, node, ctx):
        return Match(anchor=node.name, nodes=[node], inputs=list(node.inputs), outputs=list(node.outputs))

    def rewrite(self, graph, match, build):
        node = match.nodes[0]
        ids, seg = node.inputs[0], optional_input(node, 1)
        word, pos_table, seg_table = node.inputs[2], node.inputs[3], optional_input(node, 4)
        gamma, beta = node.inputs[5], node.inputs[6]
        mask, pos_ids = optional_input(node, 7), optional_input(node, 8)
        out, mask_index, emb_sum = node.outputs[0], optional_output(node, 1), optional_output(node, 2)
        eps = float(node.attrs.get("epsilon", 1e-12))
        dtype = _dtype(word)
        remove_nodes(graph, [node])
        total = build.op("Gather", word, ids, attrs={"axis": 0}, dtype=dtype)
        if pos_ids is not None:
            pos = build.op("Gather", pos_table, pos_ids, attrs={"axis": 0}, dtype=dtype)
        else:   # positions 0..S-1: the first S rows of the table
            pos = self._first_rows(build, pos_table, build.shape_of(ids, 1), dtype)
        keep_sum = [emb_sum] if emb_sum is not None and used(graph, emb_sum) else None
        if seg is not None and seg_table is not None:
            total = build.op("Add", total, pos, dtype=dtype)
            seg_rows = build.op("Gather", seg_table, seg, attrs={"axis": 0}, dtype=dtype)
            total = build.node("Add", [total, seg_rows], outputs=keep_sum, dtype=dtype)[0]
        else:
            total = build.node("Add", [total, pos], outputs=keep_sum, dtype=dtype)[0]
        layer_norm(build, graph, total, gamma, beta, eps, out, dtype)
        if mask_index is not None and used(graph, mask_index):
            self._mask_index(build, graph, ids, mask, mask_index)
        return {"position_ids": pos_ids is not None, "segments": seg is not None, "mask": mask is not None}

    @staticmethod
    def _first_rows(build, table, count, dtype):
        """table[:count] (count: a 1-D shape value). Computed where fold-constants would compute it
        on a second run (a constant table and count, within the fold size limit), else a Slice."""
        rows, n = const(table), const(count)
        if rows is not None and n is not None:
            value = np.ascontiguousarray(rows[:int(n[0])])
            if value.nbytes <= build.ctx.fold_size_limit:
                return build.const(value, "positions")
        return build.op("Slice", table, build.const(np.array([0], np.int64), "zero"), count,
                        build.const(np.array([0], np.int64), "axis0"), dtype=dtype)

    @staticmethod
    def _mask_index(build, graph, ids, mask, mask_index) -> None:
        """ONNX Runtime's mask_index: per row, how many mask entries equal 1 (0 without a mask)."""
        if mask is None:
            batch = build.shape_of(ids, 0)
            if isinstance(batch, gs.Constant) and not is_graph_output(graph, mask_index):
                # a static batch: the zeros themselves (fold-constants would fold ConstantOfShape)
                zeros = build.const(np.zeros(batch.values, np.int32), "mask_index")
                for reader in list(mask_index.outputs):
                    for i, t in enumerate(reader.inputs):
                        if t is mask_index:
                            reader.inputs[i] = zeros
                return
            build.node("ConstantOfShape", [batch], outputs=[mask_index],
                       attrs={"value": gs.Constant("zero_i32", np.array([0], np.int32))})
            return
        ones = build.op("Cast", build.op("Equal", mask, build.const(np.array(1, dtype=dtype_of(mask) or np.int32), "one"),
                                         dtype=np.bool_),
                        attrs={"to": onnx.TensorProto.INT32}, dtype=np.int32)
        build.node("ReduceSum", [ones, build.const(np.array([1], np.int64), "axes")], outputs=[mask_index],
                   attrs={"keepdims": 0})


# -- plugins (opt-in) ---------------------------------------------------------------------------
def _type_id(tensor) -> Optional[int]:
    d = _dtype(tensor)
    return {np.dtype(np.float32): 0, np.dtype(np.float16): 1}.get(d)


@register_rule
class SkipLayerNormToPlugin(Rule):
    name = "skip-layer-norm-plugin"
    summary = "com.microsoft SkipLayerNormalization -> CustomSkipLayerNormPluginDynamic (when asked)"
    anchor_ops = ("SkipLayerNormalization",)
    anchor_domain = MS
    plugin = SKIP_LN_PLUGIN
    default = False
    option = CONTRIB_PLUGINS
    flag = "--contrib-plugins"
    max_epsilon = 1e-5

    def match(self, graph, node, ctx):
        x, skip, gamma = node.inputs[:3]
        beta, bias = optional_input(node, 3), optional_input(node, 4)
        for i in (1, 2, 3):
            out = optional_output(node, i)
            if out is not None and used(graph, out):
                return NearMiss(node.name, f"output '{out.name}' is used; the plugin has one output")
        eps = float(node.attrs.get("epsilon", 1e-12))
        if eps > self.max_epsilon:
            return NearMiss(node.name, f"epsilon {eps:g} > {self.max_epsilon:g}: the plugin has no epsilon field")
        values = {k: const(t) for k, t in (("gamma", gamma), ("beta", beta), ("bias", bias)) if t is not None}
        if any(v is None for v in values.values()):
            return NearMiss(node.name, "gamma/beta/bias are not constants (the plugin takes them as fields)")
        type_id = _type_id(x)
        if type_id is None:
            return NearMiss(node.name, f"input is {_dtype(x)}; the plugin takes float32/float16")
        xd, sd = static_dims(x), static_dims(skip)
        if xd is None or sd is None or len(xd) != 3 or len(sd) != 3 or any(
                a is not None and b is not None and a != b for a, b in zip(xd, sd)) or (
                [a is None for a in xd] != [b is None for b in sd]):
            return NearMiss(node.name, f"input {x.shape} and skip {skip.shape} are not both [B,S,E] of one "
                                       "shape (the plugin adds them without broadcasting)")
        hidden = int(values["gamma"].size)
        fields = {"type_id": type_id, "ld": hidden,
                  "gamma": values["gamma"].reshape(-1).astype(_dtype(x)),
                  "beta": (values["beta"] if "beta" in values else np.zeros(hidden)).reshape(-1).astype(_dtype(x))}
        if "bias" in values:
            fields["bias"] = values["bias"].reshape(-1).astype(_dtype(x))
        return Match(anchor=node.name, nodes=[node], inputs=[x, skip], outputs=[node.outputs[0]], fields=fields,
                     details={"epsilon_dropped": eps, "hidden": hidden})

    def rewrite(self, graph, match, build):
        x, skip = match.inputs
        dims = static_dims(x)
        shape5 = dims + [1, 1] if dims is not None else None
        dt = _dtype(x)
        if int(graph.opset) >= 13:      # axes: an input from opset 13, an attribute before
            axes_in, axes_attr = [build.const(np.array([3, 4], np.int64), "axes")], {}
        else:
            axes_in, axes_attr = [], {"axes": [3, 4]}
        match.inputs = [build.node("Unsqueeze", [t] + axes_in, attrs=axes_attr, dtype=dt, shape=shape5)[0]
                        for t in (x, skip)]
        y5 = build.var("skipln5d", dtype=dt, shape=shape5)
        node_out = match.outputs
        match.outputs = [y5]
        build.replace_with_plugin(self, match)
        build.node("Squeeze", [y5] + axes_in, outputs=node_out, attrs=axes_attr)
        return {"layout": "Unsqueeze to [B,S,E,1,1] -> plugin -> Squeeze"}


@register_rule
class FastGeluToPlugin(Rule):
    name = "fast-gelu-plugin"
    summary = "com.microsoft FastGelu -> CustomGeluPluginDynamic (when asked; TensorRT < 11)"
    anchor_ops = ("FastGelu",)
    anchor_domain = MS
    plugin = GELU_PLUGIN
    default = False
    option = CONTRIB_PLUGINS
    flag = "--contrib-plugins"
    function_ok = True

    def match(self, graph, node, ctx):
        x = node.inputs[0]
        type_id = _type_id(x)
        if type_id is None:
            return NearMiss(node.name, f"input is {_dtype(x)}; the plugin takes float32/float16")
        fields = {"type_id": type_id}
        bias_t = optional_input(node, 1)
        if bias_t is not None:
            bias = const(bias_t)
            if bias is None:
                return NearMiss(node.name, "bias is not a constant (the plugin takes it as a field)")
            dims = static_dims(x)
            if bias.ndim != 1 or dims is None or dims[-1] != bias.size:
                return NearMiss(node.name, "bias does not run along a static last axis")
            fields["bias"] = bias.astype(_dtype(x))
        return Match(anchor=node.name, nodes=[node], inputs=[x], outputs=[node.outputs[0]], fields=fields)

    def function_body(self, match, build):
        """Body: the original FastGelu node, bias lifted to a call attribute (ORT runs com.microsoft)."""
        from .build import default_function_body
        return default_function_body(match)
