"""expand-functions: ops TensorRT cannot import (or imports only in part) become the function body
ONNX defines for them; checked in ONNX Runtime, against onnx's reference evaluator on the original
and against numpy formulas, and on the rig (`pytest tests/passes/test_expand_functions.py -m trt`)."""
import numpy as np
import onnx
import pytest

import graphfix
from graphfix.diagnosis import check_model
from graphfix.fixtures import build
from gf_testing import apply_pass, assert_equivalent, assert_idempotent, assert_trt_raw_fails_fixed_matches, ops

EXPANDED = {"sce_loss_weighted_ignore_index": "SoftmaxCrossEntropyLoss", "nll_loss_per_sample": "NegativeLogLikelihoodLoss",
            "layer_norm_stats_outputs": "LayerNormalization"}


def _run(model, feeds):
    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.mark.parametrize("fixture", sorted(EXPANDED))
def test_expanded_equivalent_idempotent_and_named_by_check(fixture):
    model = build(fixture)
    findings = [f for f in check_model(model, trt="8.6").findings if f.node]
    assert findings and all(f.fix_pass == "expand-functions" for f in findings)
    fixed, result = apply_pass("expand-functions", model)
    assert result.modified and not result.warnings
    assert EXPANDED[fixture] not in ops(fixed) and "NegativeLogLikelihoodLoss" not in ops(fixed)  # nested too
    onnx.checker.check_model(fixed, full_check=True)
    assert_equivalent(model, fixed)
    assert_idempotent("expand-functions", model)
    whole, report = graphfix.fix(model, trt="8.6")
    assert report.ok, report.summary()
    assert not [f for f in check_model(whole, trt="8.6").findings if f.node and f.severity != "warning"]


def test_softmax_cross_entropy_values_match_the_formula_and_the_reference():
    """Exact reference: numpy's weighted mean over non-ignored positions, and onnx.reference on the
    original node (ONNX Runtime's kernel is not the judge of its own op here)."""
    from onnx.reference import ReferenceEvaluator
    model = build("sce_loss_weighted_ignore_index")
    fixed, _ = apply_pass("expand-functions", model)
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((2, 5, 3)).astype(np.float32)
    labels = np.array([[0, 1, 4], [3, 2, 1]], np.int64)          # 1 is ignore_index
    w = np.array([0.5, 1.0, 2.0, 1.5, 0.25], np.float64)
    z = logits.astype(np.float64)
    log_prob = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    keep = labels != 1
    n, d = np.nonzero(keep)
    picked = -log_prob[n, labels[keep], d] * w[labels[keep]]
    want = picked.sum() / w[labels[keep]].sum()
    got = _run(fixed, {"logits": logits, "labels": labels})
    np.testing.assert_allclose(got[0], want, rtol=1e-6)
    np.testing.assert_allclose(got[1], log_prob, rtol=1e-5, atol=1e-6)
    ref = ReferenceEvaluator(model).run(None, {"logits": logits, "labels": labels})
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-6)


def test_layer_norm_statistics_match_numpy():
    model = build("layer_norm_stats_outputs")
    fixed, _ = apply_pass("expand-functions", model)
    x = np.random.default_rng(2).standard_normal((2, 3, 8)).astype(np.float32) * 3 + 1
    gamma, beta = (onnx.numpy_helper.to_array(t) for t in model.graph.initializer)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1, keepdims=True)
    inv_std = 1 / np.sqrt(x64.var(axis=-1, keepdims=True) + 1e-5)
    y, got_mean, got_inv = _run(fixed, {"x": x})
    np.testing.assert_allclose(got_mean, mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_inv, inv_std, rtol=1e-5)
    np.testing.assert_allclose(y, (x64 - mean) * inv_std * gamma + beta, rtol=1e-5, atol=1e-5)


def test_left_alone_where_the_target_imports_it_or_another_rewrite_owns_it():
    """LayerNormalization producing only Y is imported by 8.6; Attention belongs to decompose-ops."""
    only_y = build("layer_norm_stats_outputs")
    del only_y.graph.output[1:]
    del only_y.graph.node[0].output[1:]
    for model in (only_y, build("attention_gqa_causal_3d")):
        _, result = apply_pass("expand-functions", model)
        assert not result.modified and not result.warnings


def test_a_body_onnx_cannot_build_is_a_near_miss():
    """An input of unknown type: onnx cannot build a context-dependent body; the node stays, reported."""
    model = build("nll_loss_per_sample")
    model.graph.node[0].op_type = "Identity"        # the loss reads x through an Identity, and x has no type
    del model.graph.node[0].attribute[:]
    model.graph.input[0].type.tensor_type.ClearField("elem_type")
    _, result = apply_pass("expand-functions", model)
    assert not result.modified
    assert any("not expanded" in w and "NegativeLogLikelihoodLoss" in w for w in result.warnings), result.warnings


def test_a_node_its_dedicated_rewrite_refuses_is_expanded_instead():
    """decompose-ops' Attention rule refuses a used qk_matmul_output; ONNX's body computes it too,
    and `check` names expand-functions for that node (the fallback row of the table of remedies)."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator
    from graphfix.fixtures._make import make_model, vi
    F = TensorProto.FLOAT
    node = helper.make_node("Attention", ["q", "k", "v"], ["y", "", "", "qk"], name="attention", qk_matmul_output_mode=0)
    model = make_model([node], [vi("q", F, [1, 2, 3, 8]), vi("k", F, [1, 2, 5, 8]), vi("v", F, [1, 2, 5, 8])],
                       [vi("y", F, [1, 2, 3, 8]), vi("qk", F, [1, 2, 3, 5])], opset=23)
    assert [f.fix_pass for f in check_model(model, trt="8.6").findings if f.node] == ["expand-functions"]
    fixed, result = apply_pass("expand-functions", model)
    assert "Attention" not in ops(fixed)
    assert "its dedicated rewrite refuses it" in result.changes[0].details["why"]
    rng = np.random.default_rng(1)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in (("q", [1, 2, 3, 8]), ("k", [1, 2, 5, 8]),
                                                                        ("v", [1, 2, 5, 8]))}
    for got, want in zip(ReferenceEvaluator(fixed).run(None, feeds), ReferenceEvaluator(model).run(None, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert_idempotent("expand-functions", model)


@pytest.mark.trt
@pytest.mark.parametrize("fixture", sorted(EXPANDED))
def test_trt_raw_fails_fixed_builds_and_matches(fixture, tmp_path):
    report = assert_trt_raw_fails_fixed_matches(build(fixture), tmp_path)
    assert {p.name: p.status for p in report.passes}["expand-functions"] == "applied"
