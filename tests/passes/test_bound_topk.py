"""bound-topk: TopK(K = Min(#selected by NMS, C)) gets the constant K = C over a padded input and a
Slice back to Min(#selected, C); check flags the pattern (and says when only --nms-plugin helps)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import graphfix
from graphfix.checks.ort import compare_models, run_ort
from graphfix.diagnose import check_model
from graphfix.fixtures import build
from gf_testing import apply_pass, assert_idempotent

PASS = "bound-topk"


def head_feeds(boxes_n: int):
    """Disjoint boxes (nothing suppressed): many selections (30 > 20) and few (4 < 20), ties included."""
    boxes = np.stack([np.array([2.0 * i, 0.0, 2.0 * i + 1, 1.0], np.float32) for i in range(boxes_n)])[None]
    rng = np.random.default_rng(0)
    many = rng.uniform(0.4, 1.0, (1, boxes_n, 3)).astype(np.float32)
    few = np.full((1, boxes_n, 3), 0.1, np.float32)
    few[0, :2, :2] = [[0.9, 0.5], [0.5, 0.7]]            # 4 selected, two equal scores
    return [{"boxes": boxes, "scores": many}, {"boxes": boxes, "scores": few}]


@pytest.mark.parametrize("name, boxes_n", [("nms_topk_head", 64), ("nms_topk_dynamic_boxes", 40)])
def test_counted_k_becomes_a_constant_bound(name, boxes_n):
    model = build(name)
    out, result = apply_pass(PASS, model)
    assert [(c.action, c.target, c.details) for c in result.changes] == [("bound-topk", "topk", {"k_bound": 20})]
    inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    topk = next(n for n in out.graph.node if n.op_type == "TopK")
    assert inits[topk.input[1]].tolist() == [20]
    pad = next(n for n in out.graph.node if topk.input[0] in n.output)
    assert pad.op_type == "Concat" and np.all(np.isneginf(inits[pad.input[1]])) and inits[pad.input[1]].shape == (20,)
    slices = [n for n in out.graph.node if n.op_type == "Slice" and n.input[0] in topk.output]
    assert sorted(s.output[0] for s in slices) == ["det_scores", "order"]
    assert all(s.input[2] == "k" for s in slices)         # the original count bound, now a Slice end
    onnx.checker.check_model(out)
    feeds = head_feeds(boxes_n)
    counts = [run_ort(model, f)["det_scores"].shape[0] for f in feeds]
    assert counts == [20, 4]                               # both sides of the bound are exercised
    res = compare_models(model, out, feeds=feeds)
    assert res.passed, res.worst()
    assert_idempotent(PASS, model)


def test_unbounded_count_is_left_with_a_warning():
    model = build("nms_topk_unbounded")
    out, result = apply_pass(PASS, model)
    assert not result.modified and "--nms-plugin" in result.warnings[0]


def test_constant_k_and_no_nms_are_not_touched():
    assert not apply_pass(PASS, build("nms_gather_head"))[1].modified
    assert not apply_pass(PASS, build("check_clean_conv"))[1].modified


@pytest.mark.parametrize("name, fix", [("nms_topk_head", "bound-topk"), ("nms_topk_dynamic_boxes", "bound-topk"),
                                       ("nms_topk_unbounded", None)])
def test_check_predicts_the_invalid_context_head(name, fix):
    found = [f for f in check_model(build(name), trt="8.6").findings if f.rule == "topk_k_counted"]
    assert [(f.op, f.severity, f.fix_pass) for f in found] == [("TopK", "warning", fix)]
    assert "Invalid Context" in found[0].reason
    if fix is None:
        assert "--nms-plugin" in found[0].reason
    fixed, _ = graphfix.fix(build(name), trt="8.6", check="none")
    left = [f for f in check_model(fixed, trt="8.6").findings if f.rule == "topk_k_counted"]
    assert bool(left) == (fix is None)
    assert not [f for f in check_model(build(name), trt="10.0").findings if f.rule == "topk_k_counted"]


@pytest.mark.trt
@pytest.mark.parametrize("name", ["nms_topk_head", "nms_topk_dynamic_boxes"])
def test_trt_bounded_head_builds_runs_and_matches(name, tmp_path):
    """The rewritten head on TensorRT 8.6: parses, builds, creates its context, runs, matches ONNX
    Runtime on the original. (Whether the raw head fails on the rig is recorded, not asserted: the
    nms_topk_head fixture built and ran there before.)"""
    from graphfix.checks.tensorrt.trt import build_and_compare
    raw = build(name)
    fixed, report = graphfix.fix(raw, trt="8.6")
    raw_path, fixed_path = str(tmp_path / "raw.onnx"), str(tmp_path / "fixed.onnx")
    onnx.save(raw, raw_path)
    onnx.save(fixed, fixed_path)
    before = build_and_compare(raw_path, raw_path, progress=False)
    print(f"raw {name} on TensorRT: passed={before.passed}: {before.summary()}")
    after = build_and_compare(raw_path, fixed_path, progress=False)
    assert after.passed, after.summary() + "\n" + report.summary()
