"""ONNX NonMaxSuppression and its post-processing head -> EfficientNMS_TRT.

TensorRT 8.6 imports NonMaxSuppression and builds an engine, but the engine fails to create an
execution context ("Invalid Context"); EfficientNMS_TRT (plugin/efficientNMSPlugin, TensorRT >= 8.0)
runs. The plugin returns fixed-shape outputs instead of ONNX's [K, 3] selected indices:

    num_detections [B, 1] int32, detection_boxes [B, M, 4], detection_scores [B, M],
    detection_classes [B, M] int32        (M = max_output_boxes; only the first num_detections valid)

so the rule replaces the NMS node *and its post-processing head* -- every node downstream of the
selected indices (Gather/GatherND/TopK/Reshape/... that pick boxes, scores and classes), which must
end only in graph outputs -- and the graph's outputs change: the head's outputs go, the plugin's four
come. The change is recorded as a "change-outputs" change, which the pipeline accepts as a declared
I/O change.

Fields (creator): score_threshold FLOAT, iou_threshold FLOAT, max_output_boxes INT, background_class
INT, score_activation INT (bool), class_agnostic INT (bool), box_coding INT (0 corners, 1 center-size).
Inputs: boxes [B, N, 4], scores [B, N, C] (ONNX has [B, C, N]: the Transpose that usually feeds NMS
is skipped, or one is added). Semantic differences, reported in the change details:
- ONNX caps boxes per class (max_output_boxes_per_class); EfficientNMS caps boxes per image. The cap
  is the head's TopK K when it has one, else max_output_boxes_per_class * classes.
- EfficientNMS needs score_threshold >= 0 and iou_threshold > 0; output boxes are always corners.
- Ties: ONNX keeps score > threshold and suppresses IoU > threshold; EfficientNMS keeps score >=
  threshold and suppresses IoU >= threshold (efficientNMSInference.cu).
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import onnx_graphsurgeon as gs

from ..target import TrtRange
from .build import prune_dead
from .patterns import const, const_scalar, dtype_of, is_graph_output, optional_input, producer, static_dims
from .registry import register_rule
from .rule import Match, NearMiss, PluginSpec, Rule

EFFICIENT_NMS = PluginSpec("EfficientNMS_TRT", "1", ships=TrtRange(since="8.0"),
                           source="NVIDIA/TensorRT plugin/efficientNMSPlugin README and creator fields")
# ops a post-processing head is made of (index picking, shape arithmetic, score sorting)
HEAD_OPS = frozenset({
    "Gather", "GatherND", "GatherElements", "Squeeze", "Unsqueeze", "Slice", "TopK", "Reshape", "Concat",
    "Cast", "Flatten", "Transpose", "Shape", "Identity", "ReduceMin", "ReduceMax", "Min", "Max", "Add",
    "Sub", "Mul", "Div", "Split", "Expand", "Range", "ConstantOfShape", "Equal", "Greater", "Less",
    "Where", "NonZero", "ArgMax", "Size", "Tile", "Not", "And", "Constant"})
OUTPUT_NAMES = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")


@register_rule
class NmsToEfficientNms(Rule):
    name = "efficient-nms"
    summary = "NonMaxSuppression + post-processing head -> EfficientNMS_TRT (changes the graph outputs)"
    anchor_ops = ("NonMaxSuppression",)
    plugin = EFFICIENT_NMS
    needed = TrtRange(below="9.0")     # reported: 8.6 builds, then "Invalid Context" at run time
    fixes_checks = ("always",)         # 8.6 profile: the 'Invalid Context' warning on every NMS
    option = "nms"
    flag = "--nms-plugin"
    # Opt-in (--nms-plugin): on the rig (TensorRT 8.6.0, H200) ONNX NonMaxSuppression built, ran
    # and matched in 8 of 9 node tests and in all three NMS-head fixtures, and the rewrite changes
    # the graph's outputs, so it is not applied unasked; `graphfix check` still points to it.
    default = False
    changes_outputs = True

    def match(self, graph, node, ctx):
        boxes, scores = node.inputs[0], node.inputs[1]
        max_t, iou_t, score_t = optional_input(node, 2), optional_input(node, 3), optional_input(node, 4)
        per_class = const_scalar(max_t) if max_t is not None else 0
        if per_class is None:
            return NearMiss(node.name, "max_output_boxes_per_class is not a constant")
        if per_class <= 0:
            return NearMiss(node.name, "max_output_boxes_per_class is 0: ONNX NMS selects nothing")
        iou = const_scalar(iou_t) if iou_t is not None else 0.0
        if iou is None or iou <= 0:
            return NearMiss(node.name, f"iou_threshold {iou} is not a positive constant (EfficientNMS needs > 0)")
        score_thr = const_scalar(score_t) if score_t is not None else 0.0
        if score_thr is None or score_thr < 0:
            return NearMiss(node.name, f"score_threshold {score_thr} is not a constant >= 0")
        # ONNX fixes the layouts: boxes [B, N, 4], scores [B, C, N]; the usual Transpose feeding NMS
        # is skipped (the plugin wants [B, N, C]), and gives the class count when scores has no shape
        src = producer(scores)
        scores_bnc = None
        if src is not None and src.op == "Transpose" and list(src.attrs.get("perm", [])) == [0, 2, 1]:
            scores_bnc = src.inputs[0]
        bdims = static_dims(boxes) or [None, None, 4]
        sdims = static_dims(scores)
        if sdims is None:
            bnc = static_dims(scores_bnc) if scores_bnc is not None else None
            sdims = [bnc[0], bnc[2], bnc[1]] if bnc is not None and len(bnc) == 3 else [None, None, None]
        head = self._head(graph, node)
        if isinstance(head, str):
            return NearMiss(node.name, head)
        nodes, removed = head
        cap = self._topk_cap(nodes)
        classes = sdims[1]
        if cap is None:
            if classes is None:
                return NearMiss(node.name, "the number of classes is not static and the head has no TopK")
            cap = int(per_class) * int(classes)
        box_coding = int(node.attrs.get("center_point_box", 0))
        fields = {"score_threshold": float(score_thr), "iou_threshold": float(iou), "max_output_boxes": int(cap),
                  "background_class": -1, "score_activation": 0, "class_agnostic": 0, "box_coding": box_coding}
        details = {"max_output_boxes": int(cap), "per_class_cap_was": int(per_class),
                   "cap_from": "TopK" if self._topk_cap(nodes) is not None else "per_class * classes",
                   "head_ops": sorted({n.op for n in nodes[1:]}), "removed_outputs": removed,
                   "outputs": list(OUTPUT_NAMES)}
        if box_coding:
            details["note"] = "detection_boxes are corners (x1, y1, x2, y2); the input boxes were center-size"
        if score_t is None:
            details["score_threshold"] = "none in the model: 0.0 (EfficientNMS then keeps every score, as ONNX does)"
        return Match(anchor=node.name, nodes=nodes, inputs=[boxes, scores], fields=fields, details=details,
                     data={"scores_bnc": scores_bnc, "removed_outputs": removed, "batch": bdims[0] or "batch",
                           "dtype": dtype_of(boxes) or np.dtype(np.float32)})

    @staticmethod
    def _head(graph, nms):
        """[nms] + every node downstream of it in graph order, and the graph outputs they produce."""
        downstream: List[gs.Node] = []
        frontier = list(nms.outputs)
        while frontier:
            t = frontier.pop()
            for c in t.outputs:
                if not any(c is d for d in downstream):
                    downstream.append(c)
                    frontier.extend(c.outputs)
        bad = sorted({n.op for n in downstream if n.op not in HEAD_OPS})
        if bad:
            return f"the post-processing head holds {', '.join(bad)}, which is not index/shape work"
        members = [nms] + downstream
        removed = []
        for n in members:
            for t in n.outputs:
                for c in t.outputs:
                    if not any(c is m for m in members):
                        return f"'{t.name}' (downstream of NMS) also feeds {c.op} '{c.name}' outside the head"
                if is_graph_output(graph, t):
                    removed.append(t.name)
        if not removed:
            return "the NMS result reaches no graph output"
        ordered = [n for n in graph.nodes if any(n is m for m in members)]
        return ordered, removed

    @staticmethod
    def _topk_cap(nodes) -> Optional[int]:
        """The K of the head's TopK: a constant, or the constant side of Min(count, K)."""
        caps = []
        for n in nodes:
            if n.op != "TopK":
                continue
            k = const(n.inputs[1])
            if k is not None and k.size == 1:
                caps.append(int(k.reshape(())))
                continue
            p = producer(n.inputs[1])
            for _ in range(4):                       # through Cast/Reshape/Unsqueeze to a Min
                if p is None or p.op == "Min":
                    break
                p = producer(p.inputs[0]) if p.op in ("Cast", "Reshape", "Unsqueeze", "Squeeze", "Concat") else None
            if p is not None and p.op == "Min":
                vals = [const(t) for t in p.inputs]
                vals = [int(v.reshape(-1)[0]) for v in vals if v is not None and v.size == 1]
                if vals:
                    caps.append(min(vals))
        return min(caps) if caps else None

    def rewrite(self, graph, match, build):
        boxes, scores = match.inputs
        dtype = match.data["dtype"]
        scores_bnc = match.data["scores_bnc"]
        if scores_bnc is None:
            scores_bnc = build.op("Transpose", scores, attrs={"perm": [0, 2, 1]}, dtype=dtype)
        b, m = match.data["batch"], match.fields["max_output_boxes"]
        specs = [(np.int32, [b, 1]), (dtype, [b, m, 4]), (dtype, [b, m]), (np.int32, [b, m])]
        outs = []
        for name, (dt, shape) in zip(OUTPUT_NAMES, specs):
            free = name not in build.names.taken
            if free:
                build.names.taken.add(name)
            outs.append(gs.Variable(name if free else build.names(name), dtype=dt, shape=shape))
        removed = set(match.data["removed_outputs"])
        graph.outputs = [t for t in graph.outputs if t.name not in removed] + outs
        match.inputs = [boxes, scores_bnc]
        match.outputs = outs
        read = [t for n in match.nodes for t in n.inputs]
        build.replace_with_plugin(self, match)
        prune_dead(graph, read)
        return {}
