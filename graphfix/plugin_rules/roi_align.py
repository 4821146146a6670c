"""ONNX RoiAlign -> ROIAlign_TRT.

TensorRT 8.6's parser imports RoiAlign through ROIAlign_TRT too, but marks the layer as needing
``nvinfer_vc_plugin`` (version-compatible plugin library), which the 8.6.0 pip wheel does not ship
(libnvinfer_vc_plugin.so.8): parsing fails. An explicit ROIAlign_TRT node goes through the plugin
fallback and libnvinfer_plugin instead.

ROIAlign_TRT v1 (plugin/roiAlignPlugin, README June 2022, TensorRT >= 8.5) takes the ONNX inputs
unchanged -- X [N,C,H,W], rois [R,4], batch_indices [R] -- but batch_indices must be INT32 (ONNX
has INT64), so a Cast goes in front. Fields (all INT but spatial_scale FLOAT):
coordinate_transformation_mode (1 = half_pixel, 0 = output_half_pixel), mode (1 avg, 0 max),
output_height, output_width, sampling_ratio, spatial_scale. RoiAlign-10 has no
coordinate_transformation_mode and behaves as output_half_pixel. ONNX's sampling_ratio default is
0 (adaptive); the 8.6 parser's own importer defaults it to 1, this rule uses the ONNX default.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..target import TrtRange
from .build import FunctionBody
from .patterns import const, dtype_of, static_dims
from .registry import register_rule
from .rule import Match, NearMiss, PluginSpec, Rule

ROI_ALIGN_TRT = PluginSpec("ROIAlign_TRT", "1", ships=TrtRange(since="8.5"),
                           source="NVIDIA/TensorRT plugin/roiAlignPlugin (roiAlignPlugin.cpp creator fields)")


@register_rule
class RoiAlignToPlugin(Rule):
    name = "roi-align"
    summary = "RoiAlign -> ROIAlign_TRT (8.6 wheel lacks the nvinfer_vc_plugin its parser asks for)"
    anchor_ops = ("RoiAlign",)
    plugin = ROI_ALIGN_TRT
    needed = TrtRange(below="9.0")
    fixes_checks = ("always",)         # 8.6 profile: the wheel lacks the library its importer loads
    option = "roi_align"
    function_ok = True

    def match(self, graph, node, ctx):
        if len(node.inputs) < 3:
            return NearMiss(node.name, "RoiAlign needs X, rois and batch_indices")
        x, rois, idx = node.inputs[:3]
        dims = static_dims(rois)
        if dims is not None and (len(dims) != 2 or dims[1] not in (4, None)):
            return NearMiss(node.name, f"rois has shape {rois.shape}, ROIAlign_TRT takes [num_rois, 4]")
        if dtype_of(x) not in (None, np.float32, np.float16):
            return NearMiss(node.name, f"X is {dtype_of(x)}; ROIAlign_TRT takes float32/float16")
        opset = int(graph.opset)
        ctm = node.attrs.get("coordinate_transformation_mode", "half_pixel") if opset >= 16 else "output_half_pixel"
        ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
        mode = node.attrs.get("mode", "avg")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode not in ("avg", "max"):
            return NearMiss(node.name, f"mode '{mode}' is not avg or max")
        spatial_scale = float(node.attrs.get("spatial_scale", 1.0))
        if spatial_scale <= 0:
            return NearMiss(node.name, f"spatial_scale {spatial_scale} must be positive for ROIAlign_TRT")
        sampling_ratio = int(node.attrs.get("sampling_ratio", 0))
        if sampling_ratio < 0:
            return NearMiss(node.name, f"sampling_ratio {sampling_ratio} is negative")
        fields = {
            "coordinate_transformation_mode": 1 if ctm == "half_pixel" else 0,
            "mode": 1 if mode == "avg" else 0,
            "output_height": int(node.attrs.get("output_height", 1)),
            "output_width": int(node.attrs.get("output_width", 1)),
            "sampling_ratio": sampling_ratio,
            "spatial_scale": spatial_scale,
        }
        return Match(anchor=node.name, nodes=[node], inputs=[x, rois, idx], outputs=[node.outputs[0]],
                     fields=fields, details={"coordinate_transformation_mode": ctm, "mode": mode},
                     data={"attrs": dict(node.attrs)})

    def rewrite(self, graph, match, build):
        idx = match.inputs[2]
        values = const(idx)
        if values is not None and np.all(np.abs(values) < 2 ** 31):
            match.inputs[2] = build.const(values.astype(np.int32), "batch_indices")   # no Cast to revisit
            how = "constant narrowed to INT32"
        else:
            match.inputs[2] = build.op("Cast", idx, attrs={"to": onnx.TensorProto.INT32}, dtype=np.int32,
                                       shape=getattr(idx, "shape", None))
            how = "cast to INT32"
        build.replace_with_plugin(self, match)
        return {"batch_indices": how}

    def function_body(self, match, build):
        """ROIAlign_TRT(X, rois, int32 indices) == Cast(indices -> INT64) -> RoiAlign."""
        x, rois, idx32 = [gs.Variable(f"in{i}", dtype=t.dtype, shape=t.shape)
                          for i, t in enumerate(match.inputs[:2] + [gs.Variable("i", dtype=np.int32)])]
        idx64 = gs.Variable("t0", dtype=np.int64)
        y = gs.Variable("t1", dtype=match.outputs[0].dtype, shape=match.outputs[0].shape)
        nodes = [gs.Node("Cast", name="n0", attrs={"to": onnx.TensorProto.INT64}, inputs=[idx32], outputs=[idx64]),
                 gs.Node("RoiAlign", name="n1", attrs=dict(match.data["attrs"]), inputs=[x, rois, idx64],
                         outputs=[y])]
        return FunctionBody(nodes, [x, rois, idx32], [y], [])
