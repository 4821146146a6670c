"""The plugins pass: NonMaxSuppression heads -> EfficientNMS_TRT, RoiAlign -> ROIAlign_TRT, PyTorch
GroupNorm -> GroupNormalizationPlugin, by target version and options.

ONNX Runtime cannot run plugin nodes, so besides structure these tests check the plugin *fields*
against ONNX Runtime on the original model through small numpy models of what each plugin computes
(per its README / kernels); benchmarks/rig_plugins.py runs the real plugins on TensorRT.
"""
import numpy as np
import onnx
import pytest
from onnx import helper

import graphfix
from graphfix.checks.ort import run_ort
from graphfix.fixtures import build
from graphfix.pass_api import PassContext
from graphfix.plugin_rules import PLUGIN_DOMAIN
from gf_testing import apply_pass, assert_idempotent, ops


def plugin_node(model, op):
    nodes = [n for n in model.graph.node if n.op_type == op]
    assert len(nodes) == 1, ops(model)
    node = nodes[0]
    assert node.domain == PLUGIN_DOMAIN
    return node


def attrs(node):
    """name -> (ONNX attribute type, value): the type is what decides the plugin field's type."""
    return {a.name: (onnx.AttributeProto.AttributeType.Name(a.type), helper.get_attribute_value(a))
            for a in node.attribute}


def initializer(model, name):
    return next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


# -- EfficientNMS ---------------------------------------------------------------------------------
def efficient_nms(boxes, scores_bnc, f):
    """EfficientNMS_TRT as its README and kernels describe it (class-aware, corner boxes, per-image
    cap): returns sorted (class, score, box) tuples per image, best first."""
    out = []
    for b in range(boxes.shape[0]):
        kept = []
        for c in range(scores_bnc.shape[2]):
            s = scores_bnc[b, :, c]
            order = [i for i in np.argsort(-s, kind="stable") if s[i] >= f["score_threshold"]]
            chosen = []
            for i in order:
                if all(iou(boxes[b, i], boxes[b, j]) < f["iou_threshold"] for j in chosen):
                    chosen.append(i)
            kept += [(c, float(s[i]), tuple(boxes[b, i])) for i in chosen]
        kept.sort(key=lambda t: -t[1])
        out.append(kept[:f["max_output_boxes"]])
    return out


def iou(a, b):
    ay1, ay2 = sorted((a[0], a[2]))
    ax1, ax2 = sorted((a[1], a[3]))
    by1, by2 = sorted((b[0], b[2]))
    bx1, bx2 = sorted((b[1], b[3]))
    inter = max(0.0, min(ay2, by2) - max(ay1, by1)) * max(0.0, min(ax2, bx2) - max(ax1, bx1))
    union = (ay2 - ay1) * (ax2 - ax1) + (by2 - by1) * (bx2 - bx1) - inter
    return inter / union if union > 0 else 0.0


def detection_feeds(seed=0, n=64, classes=3, clusters=8):
    """Boxes in tight clusters (so NMS suppresses), scores mostly under the 0.3 threshold: at most
    10 boxes of a class and 20 in all survive, so ONNX's per-class cap and EfficientNMS's per-image
    cap (both of the fixtures' heads) select the same boxes."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.2, 0.8, (clusters, 2))
    c = centers[rng.integers(0, clusters, n)] + rng.normal(0, 0.01, (n, 2))
    hw = rng.uniform(0.08, 0.12, (n, 2))
    boxes = np.concatenate([c - hw, c + hw], axis=1)[None].astype(np.float32)
    scores = rng.uniform(0.0, 0.45, (1, n, classes)).astype(np.float32)
    return {"boxes": boxes, "scores": scores}


def as_set(triples):
    return {(int(c), round(float(s), 5), tuple(round(float(v), 5) for v in box)) for c, s, box in triples}


@pytest.mark.parametrize("fixture,cap,cap_from", [("nms_gather_head", 30, "per_class * classes"),
                                                  ("nms_topk_head", 20, "TopK")])
def test_nms_head_becomes_efficient_nms(fixture, cap, cap_from):
    model = build(fixture)
    fixed, result = apply_pass("plugins", model, trt="8.6", options={"nms": True})
    assert ops(fixed) == ["EfficientNMS_TRT"]                 # NMS, the head and the Transpose are gone
    node = plugin_node(fixed, "EfficientNMS_TRT")
    a = attrs(node)
    assert a["score_threshold"] == ("FLOAT", pytest.approx(0.3))
    assert a["iou_threshold"] == ("FLOAT", pytest.approx(0.5))
    assert a["max_output_boxes"] == ("INT", cap)
    assert a["background_class"] == ("INT", -1)
    assert a["score_activation"] == ("INT", 0) and a["class_agnostic"] == ("INT", 0) and a["box_coding"] == ("INT", 0)
    assert a["plugin_version"] == ("STRING", b"1") and a["plugin_namespace"] == ("STRING", b"")
    assert list(node.input) == ["boxes", "scores"]             # scores [B,N,C]: the Transpose was skipped
    outs = {o.name: (o.type.tensor_type.elem_type, [d.dim_value for d in o.type.tensor_type.shape.dim])
            for o in fixed.graph.output}
    assert outs == {"num_detections": (onnx.TensorProto.INT32, [1, 1]),
                    "detection_boxes": (onnx.TensorProto.FLOAT, [1, cap, 4]),
                    "detection_scores": (onnx.TensorProto.FLOAT, [1, cap]),
                    "detection_classes": (onnx.TensorProto.INT32, [1, cap])}
    actions = [c.action for c in result.changes]
    assert actions == ["replace-with-plugin", "change-outputs"]
    assert result.changes[0].details["cap_from"] == cap_from
    assert result.changes[1].details["added"] == list(outs)
    assert_idempotent("plugins", model)


@pytest.mark.parametrize("fixture", ["nms_gather_head", "nms_topk_head"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_fields_reproduce_onnx_runtime_detections(fixture, seed):
    """The fields the rule chose, run through EfficientNMS's semantics, keep the boxes ONNX Runtime keeps."""
    model = build(fixture)
    fixed, _ = apply_pass("plugins", model, trt="8.6", options={"nms": True})
    fields = {k: v for k, (_, v) in attrs(plugin_node(fixed, "EfficientNMS_TRT")).items()}
    feeds = detection_feeds(seed)
    ref = run_ort(model, feeds)
    names = [o.name for o in model.graph.output]
    boxes, scores, classes = (ref[n] for n in names)
    expected = as_set(zip(classes, scores, boxes))
    got = efficient_nms(feeds["boxes"], feeds["scores"], fields)[0]
    uncapped = efficient_nms(feeds["boxes"], feeds["scores"], dict(fields, max_output_boxes=10 ** 6))[0]
    assert 10 < len(uncapped) <= 20 and max(np.bincount([c for c, _, _ in uncapped])) <= 10
    assert len(uncapped) < (feeds["scores"] >= 0.3).sum()     # NMS suppressed some candidates
    assert as_set(got) == expected


def test_nms_without_transpose_gets_one():
    fixed, result = apply_pass("plugins", build("nms_scores_bcn"), trt="8.6", options={"nms": True})
    assert ops(fixed) == ["Transpose", "EfficientNMS_TRT"]
    transpose = fixed.graph.node[0]
    assert helper.get_attribute_value(transpose.attribute[0]) == [0, 2, 1]
    assert plugin_node(fixed, "EfficientNMS_TRT").input[1] == transpose.output[0]


def test_nms_only_when_asked():
    # opt-in: ONNX NMS built, ran and matched on TensorRT 8.6.0 on the rig, and the rewrite changes
    # the graph outputs
    model = build("nms_topk_head")
    for trt in ("8.6", "10.3"):
        _, untouched = apply_pass("plugins", model, trt=trt)
        assert not untouched.modified
    fixed, asked = apply_pass("plugins", model, trt="10.3", options={"nms": True})
    assert ops(fixed) == ["EfficientNMS_TRT"] and asked.modified


def test_nms_head_with_compute_is_a_near_miss():
    model = build("nms_gather_head")           # the head now computes on the boxes: not index work
    model.graph.node.append(helper.make_node("Exp", ["sel_boxes"], ["exp_boxes"], name="exp"))
    model.graph.output[0].name = "exp_boxes"
    fixed, result = apply_pass("plugins", model, trt="8.6", options={"nms": True})
    assert "NonMaxSuppression" in ops(fixed) and not result.modified
    assert any("Exp" in w and "efficient-nms" in w for w in result.warnings), result.warnings


def test_nms_pipeline_accepts_the_declared_output_change():
    fixed, report = graphfix.fix(build("nms_topk_head"), trt="8.6",
                                 context=PassContext(options={"nms": True}))
    assert report.ok, report.summary()
    assert [o.name for o in fixed.graph.output] == ["num_detections", "detection_boxes", "detection_scores",
                                                    "detection_classes"]
    plugins = next(p for p in report.passes if p.name == "plugins")
    assert plugins.status == "applied"
    assert any(c["action"] == "change-outputs" for c in plugins.changes)


def test_pipeline_still_refuses_an_undeclared_output_change():
    from graphfix.pipeline import _light_problems
    before = build("nms_topk_head")
    after, _ = apply_pass("plugins", before, trt="8.6", options={"nms": True})
    assert _light_problems(before, after, PassContext()) == ["graph I/O signature changed"]
    assert _light_problems(before, after, PassContext(), [{"action": "change-outputs"}]) == []


# -- ROIAlign -------------------------------------------------------------------------------------
def roi_align_from_fields(fields, opset=17):
    """An ONNX RoiAlign that computes what ROIAlign_TRT does with these fields (README semantics)."""
    a = {k: v for k, (_, v) in fields.items()}
    node = helper.make_node(
        "RoiAlign", ["x", "rois", "i64"], ["y"], output_height=a["output_height"], output_width=a["output_width"],
        sampling_ratio=a["sampling_ratio"], spatial_scale=a["spatial_scale"], mode="avg" if a["mode"] else "max",
        coordinate_transformation_mode="half_pixel" if a["coordinate_transformation_mode"] else "output_half_pixel")
    cast = helper.make_node("Cast", ["batch_indices32"], ["i64"], to=onnx.TensorProto.INT64)
    graph = helper.make_graph([cast, node], "ref", [
        helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None),
        helper.make_tensor_value_info("rois", onnx.TensorProto.FLOAT, None),
        helper.make_tensor_value_info("batch_indices32", onnx.TensorProto.INT32, None)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


@pytest.mark.parametrize("fixture,ctm", [("roi_align_16", 1), ("roi_align_10", 0)])
def test_roi_align_becomes_plugin(fixture, ctm):
    model = build(fixture)
    fixed, result = apply_pass("plugins", model, trt="8.6")
    assert ops(fixed) == ["Cast", "ROIAlign_TRT"]
    node = plugin_node(fixed, "ROIAlign_TRT")
    a = attrs(node)
    assert a["coordinate_transformation_mode"] == ("INT", ctm)
    assert a["mode"] == ("INT", 1) and a["sampling_ratio"] == ("INT", 2)
    assert a["output_height"] == ("INT", 3) and a["output_width"] == ("INT", 3)
    assert a["spatial_scale"] == ("FLOAT", 8.0)
    cast = fixed.graph.node[0]
    assert cast.input[0] == "batch_indices" and helper.get_attribute_value(cast.attribute[0]) == onnx.TensorProto.INT32
    assert list(node.input) == ["x", "rois", cast.output[0]] and list(node.output) == ["y"]
    assert [o.name for o in fixed.graph.output] == ["y"]
    assert_idempotent("plugins", model)
    # the fields, read back as an ONNX RoiAlign, give ONNX Runtime's output on the original
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, 4, 16, 16)).astype(np.float32),
             "rois": np.sort(rng.uniform(0, 1.8, (5, 4)), axis=1)[:, [0, 1, 2, 3]].astype(np.float32),
             "batch_indices": np.array([0, 1, 1, 0, 1], np.int64)}
    expected = run_ort(model, feeds)["y"]
    got = run_ort(roi_align_from_fields(a), {"x": feeds["x"], "rois": feeds["rois"],
                                             "batch_indices32": feeds["batch_indices"].astype(np.int32)})["y"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_roi_align_not_needed_on_10():
    _, result = apply_pass("plugins", build("roi_align_16"), trt="10.3")
    assert not result.modified


# -- GroupNormalizationPlugin -----------------------------------------------------------------------
def group_norm(x, scale, bias, eps, groups):
    """GroupNormalizationPlugin: per-(sample, group) statistics, then per-channel scale and bias."""
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1).astype(np.float64)
    y = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    return y.reshape(x.shape) * scale.reshape(1, c, 1, 1) + bias.reshape(1, c, 1, 1)


@pytest.mark.parametrize("fixture", ["group_norm_torch", "group_norm_no_affine"])
def test_group_norm_becomes_plugin(fixture):
    model = build(fixture)
    fixed, result = apply_pass("plugins", model, trt="8.6", options={"group_norm": True})
    assert ops(fixed) == ["GroupNormalizationPlugin", "Relu"]
    node = plugin_node(fixed, "GroupNormalizationPlugin")
    a = attrs(node)
    assert a["eps"] == ("FLOAT", pytest.approx(1e-5)) and a["num_groups"] == ("INT", 4)
    scale, bias = initializer(fixed, node.input[1]), initializer(fixed, node.input[2])
    assert scale.shape == bias.shape == (8,) and scale.dtype == np.float32
    relu = fixed.graph.node[1]
    assert relu.input[0] == node.output[0]
    assert_idempotent("plugins", model)
    # the plugin's inputs and fields give what ONNX Runtime gives on the original
    x = np.random.default_rng(1).standard_normal((2, 8, 5, 5)).astype(np.float32)
    expected = run_ort(model, {"x": x})["act"]
    got = np.maximum(group_norm(x, scale, bias, a["eps"][1], a["num_groups"][1]), 0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_grouped_instance_norm_with_a_scale_is_a_near_miss():
    fixed, result = apply_pass("plugins", build("instance_norm_scaled_groups"), trt="8.6",
                               options={"group_norm": True})
    assert "GroupNormalizationPlugin" not in ops(fixed)
    assert any("not constant ones/zeros" in w for w in result.warnings), result.warnings


def test_group_norm_layers_without_value_info_are_matched():
    """Intermediate tensors carry no shapes in exported models: shape inference fills the gap."""
    model = build("group_norm_three_layers")
    fixed, result = apply_pass("plugins", model, trt="8.6", options={"group_norm": True})
    assert ops(fixed).count("GroupNormalizationPlugin") == 3, result.warnings
    eps = sorted(attrs(n)["eps"][1] for n in fixed.graph.node if n.op_type == "GroupNormalizationPlugin")
    assert eps == pytest.approx([1e-6, 1e-5, 1e-5])


def test_group_norm_is_opt_in():
    # 8.6 imports the exported pattern natively and matched ONNX Runtime on the rig, while the
    # plugin aborted there without cuDNN: the rule applies only when asked, on any target
    model = build("group_norm_torch")
    for trt in ("8.6", "10.3"):
        _, result = apply_pass("plugins", model, trt=trt)
        assert not result.modified
    fixed, _ = apply_pass("plugins", model, trt="10.3", options={"group_norm": True})
    assert "GroupNormalizationPlugin" in ops(fixed)


def test_roi_align_constant_batch_indices_become_an_int32_constant():
    """No Cast on a constant: the INT64 pass would otherwise narrow it on a second run."""
    model = build("check_roialign")
    fixed, result = apply_pass("plugins", model, trt="8.6")
    assert ops(fixed) == ["ROIAlign_TRT"]
    indices = initializer(fixed, fixed.graph.node[0].input[2])
    assert indices.dtype == np.int32 and indices.tolist() == [0, 0, 0]
    assert result.changes[0].details["batch_indices"] == "constant narrowed to INT32"
    once, _ = graphfix.fix(model, trt="8.6")
    twice, report = graphfix.fix(once, trt="8.6", check="none")
    assert not report.changed and twice.SerializeToString() == once.SerializeToString()
