"""PyTorch's GroupNorm export -> GroupNormalizationPlugin.

PyTorch exports nn.GroupNorm for opset <= 17 (ONNX GroupNormalization arrives in opset 18, which
TensorRT 8.6's parser does not import) as

    x[N,C,H,W] -> Reshape([0, G, -1]) -> InstanceNormalization(scale=1[G], bias=0[G], eps)
               -> Reshape(Shape(x)) -> Mul(gamma[C,1,1]) -> Add(beta[C,1,1])

GroupNormalizationPlugin v1 (plugin/groupNormalizationPlugin; shipped since TensorRT 8.2,
deprecated in 10.12, unsupported on Blackwell from 10.7) takes x [N,C,H,W], scale [C], bias [C]
(FP32 only) and the fields ``eps`` (FLOAT; the README calls it "epsilon", the creator reads
"eps") and ``num_groups`` (INT). It normalizes through cuDNN: the engine needs cuDNN at run time.
"""
from __future__ import annotations

import numpy as np

from ..target import TrtRange
from .patterns import const, dtype_of, only_consumer, producer, static_dims
from .registry import register_rule
from .rule import Match, NearMiss, PluginSpec, Rule

GROUP_NORM_PLUGIN = PluginSpec("GroupNormalizationPlugin", "1", ships=TrtRange(since="8.2"),
                               source="NVIDIA/TensorRT plugin/groupNormalizationPlugin (creator fields eps, num_groups)")


def _per_channel(values: np.ndarray, channels: int):
    """[C], [C,1,1] or [1,C,1,1] constants -> [C] (None when it is not a per-channel vector)."""
    if values.size == 1:
        return np.full((channels,), values.reshape(()).item(), dtype=np.float32)
    squeezed = values.reshape(-1)
    shape = [d for d in values.shape]
    if squeezed.size != channels:
        return None
    # the channel axis must be the one that aligns with axis 1 of a 4-D tensor
    if len(shape) == 4 and shape[1] != channels:
        return None
    if len(shape) == 3 and shape[0] != channels:
        return None
    if len(shape) in (1, 2):
        return None   # [C] or [1,C] broadcast along W, not C
    return squeezed.astype(np.float32)


@register_rule
class GroupNormToPlugin(Rule):
    name = "group-norm"
    summary = "Reshape-InstanceNormalization-Reshape-Mul-Add (PyTorch GroupNorm) -> GroupNormalizationPlugin"
    anchor_ops = ("InstanceNormalization",)
    plugin = GROUP_NORM_PLUGIN
    needed = TrtRange(below="10.0")   # TensorRT 10 imports ONNX GroupNormalization (opset 18+)
    option = "group_norm"
    function_ok = True
    # Opt-in (--rules group-norm): TensorRT 8.6 imports PyTorch's Reshape/InstanceNormalization
    # export natively and matched ONNX Runtime on the rig (max abs 9.5e-07), while the plugin
    # aborted at run time there (SIGABRT: it normalizes through cuDNN, which the rig lacks).
    default = False

    def match(self, graph, node, ctx):
        pre = producer(node.inputs[0])
        if pre is None or pre.op != "Reshape":
            return None                                   # a plain InstanceNormalization
        x = pre.inputs[0]
        shape = const(pre.inputs[1])
        if shape is None or shape.size != 3 or int(shape[-1]) != -1:
            return NearMiss(node.name, "the Reshape before InstanceNormalization is not to [N, G, -1] "
                                       "with a constant shape")
        groups = int(shape[1])
        scale, bias = const(node.inputs[1]), const(node.inputs[2])
        if scale is None or bias is None or not np.all(scale == 1) or not np.all(bias == 0):
            return NearMiss(node.name, "InstanceNormalization scale/bias are not constant ones/zeros")
        dims = static_dims(x)
        if dims is None or len(dims) != 4:
            return NearMiss(node.name, f"input rank is {len(dims) if dims else 'unknown'}; the plugin takes NCHW")
        if dtype_of(x) not in (None, np.float32):
            return NearMiss(node.name, f"input is {dtype_of(x)}; GroupNormalizationPlugin is FP32 only")
        back = only_consumer(node.outputs[0])
        if back is None or back.op != "Reshape" or not self._restores_shape(back, x):
            return NearMiss(node.name, "InstanceNormalization output is not reshaped back to the input's shape")
        nodes = [pre, node, back]
        out = back.outputs[0]
        channels = dims[1]
        if channels is None:
            return NearMiss(node.name, "channel count is not static")
        if channels % groups:
            return NearMiss(node.name, f"{channels} channels do not split into {groups} groups")
        gamma = np.ones((channels,), np.float32)
        beta = np.zeros((channels,), np.float32)
        mul = only_consumer(out)
        if mul is not None and mul.op == "Mul":
            g = self._other_const(mul, out)
            g = _per_channel(g, channels) if g is not None else None
            if g is not None:
                gamma, out = g, mul.outputs[0]
                nodes.append(mul)
        add = only_consumer(out)
        if add is not None and add.op == "Add":
            b = self._other_const(add, out)
            b = _per_channel(b, channels) if b is not None else None
            if b is not None:
                beta, out = b, add.outputs[0]
                nodes.append(add)
        if any(n.outputs[0] is not out and len(n.outputs[0].outputs) > 1 for n in nodes):
            return NearMiss(node.name, "an intermediate tensor of the pattern has other consumers")
        shape_src = producer(back.inputs[1])
        if shape_src is not None and shape_src.op == "Shape" and len(shape_src.outputs[0].outputs) == 1:
            nodes.insert(2, shape_src)                   # Shape(x) only feeds this pattern
        eps = float(node.attrs.get("epsilon", 1e-5))
        return Match(anchor=node.name, nodes=nodes,
                     inputs=[x, _weight(f"{node.name}.gamma", gamma), _weight(f"{node.name}.beta", beta)],
                     outputs=[out], fields={"eps": eps, "num_groups": groups},
                     details={"groups": groups, "channels": channels, "epsilon": eps,
                              "note": "GroupNormalizationPlugin runs through cuDNN"})

    @staticmethod
    def _other_const(node, tensor):
        others = [t for t in node.inputs if t is not tensor]
        return const(others[0]) if len(others) == 1 else None

    @staticmethod
    def _restores_shape(reshape, x) -> bool:
        src = producer(reshape.inputs[1])
        if src is not None and src.op == "Shape" and src.inputs[0] is x and not src.attrs.get("start") \
                and src.attrs.get("end") is None:
            return True
        target = const(reshape.inputs[1])
        dims = static_dims(x)
        return target is not None and dims is not None and None not in dims and list(target) == dims


def _weight(name: str, values: np.ndarray):
    import onnx_graphsurgeon as gs
    return gs.Constant(name, np.ascontiguousarray(values.astype(np.float32)))
