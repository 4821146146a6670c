"""The exact reference: integer ops give exact results on every CPU, models with ops that ONNX
Runtime gets wrong on some CPUs are judged by it, and where it cannot run, the check says so."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper

from graphfix.checks import exact_reference, ort
from graphfix.checks.exact_reference import PROBE_EXACT, inexact_ops, ort_integer_kernels_exact, run_exact
from graphfix.checks.ort import EXACT_EVALUATOR, compare_models, run_ort
from graphfix.fixtures import build
from graphfix.fixtures.plugin_cases import SATURATING_WEIGHT
from gf_testing import apply_pass, random_feeds

BIG = np.array([[255, 255, 255, 255], [0, 255, 128, 1]], np.uint8)


def test_saturating_u8_s8_product_is_exact():
    """255*127 four times is 129540: a 16-bit pair sum would clip it to 2 * 32767."""
    y = run_exact(build("quantized_matmul_integer_saturating"), {"a": BIG})["y"]
    expected = BIG.astype(np.int64) @ SATURATING_WEIGHT.astype(np.int64)
    assert expected[0, 0] == 4 * 255 * 127
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, expected)


def test_dynamic_quantize_matmul_is_exact_against_hand_computed_numpy():
    model = build("quantized_dq_matmul")
    x = np.random.default_rng(3).uniform(-4, 4, (4, 16)).astype(np.float32)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    lo, hi = min(0.0, x.min()), max(0.0, x.max())
    scale = np.float32((hi - lo) / 255)
    zero = np.rint(np.clip(-lo / scale, 0, 255))
    xq = np.clip(np.rint(x / scale) + zero, 0, 255).astype(np.int64) - int(zero)
    acc = xq @ (inits["bq"].astype(np.int64) - inits["bzp"])
    assert np.abs(acc).max() > 32767                 # large enough to tell int16 saturation apart
    expected = acc * (scale.astype(np.float64) * inits["bs"]) + inits["bias"]
    np.testing.assert_allclose(run_exact(model, {"x": x})["y"], expected, rtol=1e-6, atol=1e-5)


def _halved_weights(model):
    """int8 weights halved: |w| <= 64, so u8 x s8 pair sums fit 16 bits and ORT is exact on any CPU."""
    for t in model.graph.initializer:
        if t.data_type == T.INT8:
            t.CopyFrom(onnx.numpy_helper.from_array((onnx.numpy_helper.to_array(t) // 2).astype(np.int8), t.name))
    return model


@pytest.mark.parametrize("fixture", ["quantized_dynamic_mlp", "quantized_dq_matmul", "quantized_dq_lstm"])
def test_exact_ops_agree_with_onnx_runtime_where_it_cannot_saturate(fixture):
    """The numpy com.microsoft ops follow ONNX Runtime's definition (quantization granularity
    included): where no product can saturate, both agree to float rounding."""
    model = _halved_weights(build(fixture))
    for seed in range(4):
        feeds = {k: v * 3 for k, v in random_feeds(model, seed).items()}
        exact, ref = run_exact(model, feeds), run_ort(model, feeds)
        for name in ref:
            np.testing.assert_allclose(exact[name], ref[name], atol=1e-5, rtol=1e-5)


def _int32_rewrite():
    """What decompose-quantized should give for quantized_matmul_integer_saturating, in int32:
    ONNX Runtime's int32 MatMul is exact on every CPU."""
    model = build("quantized_matmul_integer_saturating")
    nodes = [helper.make_node("Cast", ["a"], ["a32"], to=T.INT32),
             helper.make_node("Cast", ["w_q"], ["w32"], to=T.INT32),
             helper.make_node("MatMul", ["a32", "w32"], ["y"])]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def test_model_with_inexact_ops_is_judged_by_the_exact_reference():
    model = build("quantized_matmul_integer_saturating")
    assert inexact_ops(model) == ["MatMulInteger"]
    res = compare_models(model, _int32_rewrite(), shapes=None)
    assert res.passed, res.worst()
    assert res.evaluators == {"reference": EXACT_EVALUATOR, "candidate": "onnxruntime"}
    assert res.to_json()["evaluators"]["reference"] == EXACT_EVALUATOR and res.note is None
    # on the saturating inputs the exact reference and the int32 rewrite agree to the last bit
    np.testing.assert_array_equal(ort.run_reference(model, {"a": BIG})["y"],
                                  run_ort(_int32_rewrite(), {"a": BIG})["y"])


def test_decompose_quantized_is_judged_exactly_on_every_cpu():
    model = build("quantized_dynamic_mlp")
    fixed, _ = apply_pass("decompose-quantized", model)
    for seed in range(4):
        res = compare_models(model, fixed, seed=seed)
        assert res.passed, res.worst()
        assert res.evaluators["reference"] == EXACT_EVALUATOR


def test_models_without_such_ops_stay_on_onnx_runtime():
    model = build("float_mlp")
    res = compare_models(model, model)
    assert res.passed and res.evaluators == {"reference": "onnxruntime", "candidate": "onnxruntime"}
    assert "evaluators" not in res.to_json()


def test_inexact_ops_are_found_in_subgraphs():
    inner = helper.make_graph([helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "then", [],
                              [helper.make_tensor_value_info("y", T.INT32, None)])
    node = helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=inner)
    model = helper.make_model(helper.make_graph([node], "g", [], []))
    assert inexact_ops(model) == ["MatMulInteger"]


@pytest.mark.parametrize("kernels_exact", [True, False])
def test_falls_back_to_onnx_runtime_and_says_so_where_the_reference_cannot_run(monkeypatch, kernels_exact):
    """A DynamicQuantizeLSTM with `clip` is beyond the numpy implementation: ONNX Runtime runs it,
    and the result says that its integer kernels may be wrong, where the probe found them so."""
    monkeypatch.setattr(ort, "ort_integer_kernels_exact", lambda: kernels_exact)
    model = build("quantized_dq_lstm")
    model.graph.node[0].attribute.append(helper.make_attribute("clip", 50.0))
    res = compare_models(model, model)
    assert res.passed, res.worst()
    assert res.evaluators == {"reference": "onnxruntime", "candidate": "onnxruntime"}
    if kernels_exact:
        assert res.note is None
    else:
        assert res.note.startswith(exact_reference.INEXACT_NOTE) and "clip" in res.note
        assert res.to_json()["note"] == res.note


def test_probe_compares_onnx_runtime_with_the_known_exact_value(monkeypatch):
    from graphfix.checks import ort as ort_module
    try:
        for value, exact in ((PROBE_EXACT, True), (2 * 32767, False)):
            ort_integer_kernels_exact.cache_clear()
            monkeypatch.setattr(ort_module, "run_ort", lambda m, f, v=value: {"y": np.array([[v]], np.int32)})
            assert ort_integer_kernels_exact() is exact
    finally:
        monkeypatch.undo()
        ort_integer_kernels_exact.cache_clear()
    ort_integer_kernels_exact()       # the real probe runs (its answer depends on the CPU)
