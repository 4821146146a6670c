"""CenterCropPad (opset 18; no TensorRT importer) -> Slice and/or Pad, for static input dims and a
constant target shape. Per axis (ONNX reference): a larger input is cropped from (dim - size) // 2,
a smaller one padded with zeros, (size - dim) // 2 before and the rest after."""
from __future__ import annotations

import numpy as np

from .build import remove_nodes
from .ops_base import OpsDecompose, dtype_or_float, static_shape
from .patterns import const
from .registry import register_rule
from .rule import Match, NearMiss


@register_rule
class CenterCropPadDecompose(OpsDecompose):
    name = "center-crop-pad"
    summary = "CenterCropPad -> Slice + Pad (static input dims, constant shape)"
    anchor_ops = ("CenterCropPad",)

    def match_node(self, graph, node, ctx):
        dims = static_shape(node.inputs[0])
        size = const(node.inputs[1])
        if size is None:
            return NearMiss(node.name, "the target shape is not a constant")
        rank = None if dims is None else len(dims)
        axes = [int(a) for a in node.attrs.get("axes", range(rank or 0))]
        if dims is None or (rank is not None and any(not -rank <= a < rank for a in axes)):
            return NearMiss(node.name, "the input needs static dims")
        axes = [a % rank for a in axes]
        size = [int(s) for s in np.asarray(size).reshape(-1)]
        if len(size) != len(axes):
            return NearMiss(node.name, f"{len(size)} target sizes for {len(axes)} axes")
        starts, ends, pads = [0] * rank, list(dims), [0] * (2 * rank)
        for a, s in zip(axes, size):
            d = dims[a]
            if s < d:
                starts[a] = (d - s) // 2
                ends[a] = starts[a] + s
            elif s > d:
                pads[a] = (s - d) // 2
                pads[rank + a] = s - d - pads[a]
        return Match(anchor=node.name, nodes=[node], inputs=[node.inputs[0]], outputs=[node.outputs[0]],
                     details={"sizes": size, "axes": axes}, data={"starts": starts, "ends": ends, "pads": pads,
                                                                  "dims": dims})

    def rewrite(self, graph, match, build):
        x, out = match.inputs[0], match.outputs[0]
        d = match.data
        dtype = dtype_or_float(x)
        remove_nodes(graph, match.nodes)
        cut = [a for a in range(len(d["dims"])) if (d["starts"][a], d["ends"][a]) != (0, d["dims"][a])]
        if cut:
            x = build.op("Slice", x, build.const(np.asarray([d["starts"][a] for a in cut], np.int64), "starts"),
                         build.const(np.asarray([d["ends"][a] for a in cut], np.int64), "ends"),
                         build.const(np.asarray(cut, np.int64), "axes"), dtype=dtype)
        if any(d["pads"]):
            build.node("Pad", [x, build.const(np.asarray(d["pads"], np.int64), "pads")], outputs=[out])
        else:
            build.node("Identity", [x], outputs=[out])
        return {}
