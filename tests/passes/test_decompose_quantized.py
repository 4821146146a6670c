"""decompose-quantized: integer and dynamically quantized ops -> float ops with dequantized weights.

Precision is measured against the quantized original (computed by the exact reference: ONNX
Runtime's integer kernels saturate on CPUs without AVX-512 VNNI) and against the float model it was
quantized from (fixtures float_*): "exact" mode (default) keeps ONNX Runtime's results;
"float" mode (and DynamicQuantizeLSTM always) moves them by the activation quantization error,
toward the float model.
"""
import numpy as np
import onnx
import pytest

import graphfix
from graphfix.checks.ort import run_reference
from graphfix.fixtures import build
from graphfix.plugin_rules.quantized import quantization_tolerance
from gf_testing import apply_pass, assert_equivalent, assert_idempotent, ops, random_feeds

QUANTIZED = {"quantized_dynamic_mlp": "float_mlp", "quantized_conv": "float_conv",
             "quantized_dq_lstm": "float_lstm", "quantized_dq_matmul": None}
INTEGER_OPS = {"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul",
               "DynamicQuantizeLSTM"}
SEEDS = range(8)
FLOAT = {"dequantize": "float"}


def errors(a, b):
    """(max abs, rms) over all outputs."""
    diffs = np.concatenate([(a[k].astype(np.float64) - b[k]).ravel() for k in a])
    return float(np.abs(diffs).max()), float(np.sqrt(np.mean(diffs ** 2)))


@pytest.mark.parametrize("fixture", sorted(QUANTIZED))
def test_float_mode_has_no_integer_ops_and_stays_within_quantization_error(fixture):
    model = build(fixture)
    fixed, result = apply_pass("decompose-quantized", model, trt="8.6", options=FLOAT)
    assert not INTEGER_OPS & set(ops(fixed)), ops(fixed)
    onnx.checker.check_model(fixed, full_check=True)
    assert all(c.action == "dequantize" and c.details["exact"] is False for c in result.changes)
    assert result.tolerance == quantization_tolerance()
    assert_equivalent(model, fixed, tolerance=quantization_tolerance())
    worst = max(errors(run_reference(model, f), run_reference(fixed, f))[0] for f in (random_feeds(model, s) for s in SEEDS))
    assert 1e-4 < worst < quantization_tolerance()[0] / 3     # a real change, well inside the bound
    assert_idempotent("decompose-quantized", model, options=FLOAT)


@pytest.mark.parametrize("fixture", [f for f, src in sorted(QUANTIZED.items()) if src])
def test_float_mode_is_closer_to_the_float_model(fixture):
    """Dropping activation quantization gains precision: RMS error vs the float source shrinks
    (weights keep their int8 rounding, so most of the quantization error remains)."""
    model, source = build(fixture), build(QUANTIZED[fixture])
    fixed, _ = apply_pass("decompose-quantized", model, options=FLOAT)
    before, after = [], []
    for seed in SEEDS:
        feeds = random_feeds(model, seed)
        ref = run_reference(source, feeds)
        before.append(errors(run_reference(model, feeds), ref)[1])
        after.append(errors(run_reference(fixed, feeds), ref)[1])
    assert np.mean(after) < 0.95 * np.mean(before), (np.mean(after), np.mean(before))


@pytest.mark.parametrize("fixture", ["quantized_dynamic_mlp", "quantized_conv", "quantized_dq_matmul"])
def test_exact_mode_matches_onnx_runtime(fixture):
    model = build(fixture)
    fixed, result = apply_pass("decompose-quantized", model)          # exact is the default
    assert not INTEGER_OPS & set(ops(fixed))
    assert {"ReduceMin", "ReduceMax", "Round", "Clip"} <= set(ops(fixed))
    assert result.tolerance is None and all(c.details["exact"] for c in result.changes)
    for seed in SEEDS:
        assert_equivalent(model, fixed, seed=seed)             # default float tolerances (1e-4 / 1e-3)
    assert_idempotent("decompose-quantized", model)


def test_mlp_chain_becomes_two_matmuls_with_dequantized_weights():
    model = build("quantized_dynamic_mlp")
    fixed, result = apply_pass("decompose-quantized", model, options=FLOAT)
    assert ops(fixed) == ["MatMul", "Relu", "MatMul"]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    w2 = (inits["l2_wq"].astype(np.float32) - inits["l2_wzp"]) * inits["l2_ws"]     # per-column scales
    mm2 = fixed.graph.node[2]
    got = next(onnx.numpy_helper.to_array(t) for t in fixed.graph.initializer if t.name == mm2.input[1])
    np.testing.assert_allclose(got, w2, rtol=1e-6)
    assert result.counts == {"matmul_integer": 2}


def test_conv_keeps_its_attributes_and_bias_add():
    fixed, _ = apply_pass("decompose-quantized", build("quantized_conv"), options=FLOAT)
    assert ops(fixed) == ["Conv", "Add"]
    conv = fixed.graph.node[0]
    assert {a.name: list(a.ints) for a in conv.attribute} == {"pads": [1, 1, 1, 1]}
    assert conv.input[0] == "img"


def test_lstm_weights_are_transposed_back_to_onnx_layout():
    model = build("quantized_dq_lstm")
    fixed, result = apply_pass("decompose-quantized", model)
    assert ops(fixed) == ["LSTM"]
    lstm = fixed.graph.node[0]
    shapes = {t.name: list(t.dims) for t in fixed.graph.initializer}
    assert shapes[lstm.input[1]] == [1, 32, 6] and shapes[lstm.input[2]] == [1, 32, 8]
    assert result.changes[0].details["exact"] is False


def test_integer_op_on_a_uint8_input_is_rewritten_exactly():
    model = build("quantized_matmul_integer_uint8_input")
    fixed, result = apply_pass("decompose-quantized", model)
    assert ops(fixed) == ["Cast", "Sub", "MatMul", "Cast"]
    assert result.tolerance is None
    feeds = {"a": np.random.default_rng(0).integers(0, 256, (4, 16)).astype(np.uint8)}
    np.testing.assert_array_equal(run_reference(model, feeds)["y"], run_reference(fixed, feeds)["y"])


def test_dynamic_quantize_linear_feeding_something_else_is_a_near_miss():
    model = build("quantized_dynamic_mlp")
    model.graph.output.append(onnx.helper.make_tensor_value_info("l1_q", onnx.TensorProto.UINT8, [4, 16]))
    fixed, result = apply_pass("decompose-quantized", model)
    assert "DynamicQuantizeLinear" in ops(fixed)
    assert any("dynamic-quantize-linear" in w and "graph outputs" in w for w in result.warnings), result.warnings


def test_pipeline_keeps_results_by_default_and_declares_the_tolerance_of_inexact_rewrites():
    fixed, report = graphfix.fix(build("quantized_dynamic_mlp"), trt="8.6")
    assert report.ok, report.summary()
    rec = next(p for p in report.passes if p.name == "decompose-quantized")
    assert rec.status == "applied" and "tolerance" not in rec.check
    assert report.checks[0]["passed"] and report.checks[0]["outputs"][0]["atol"] == 1e-4
    lstm, report = graphfix.fix(build("quantized_dq_lstm"), trt="8.6")
    assert report.ok, report.summary()
    rec = next(p for p in report.passes if p.name == "decompose-quantized")
    assert rec.check["tolerance"] == list(quantization_tolerance())
    assert report.checks[0]["passed"] and report.checks[0]["outputs"][0]["atol"] == quantization_tolerance()[0]
    assert ops(lstm) == ["LSTM"]


def test_cli_dequantize_float(tmp_path):
    from graphfix.cli import main
    src, out = tmp_path / "q.onnx", tmp_path / "o.onnx"
    onnx.save(build("quantized_dynamic_mlp"), str(src))
    assert main(["fix", str(src), "-o", str(out), "--trt", "8.6", "--dequantize", "float", "--quiet"]) == 0
    assert [n.op_type for n in onnx.load(str(out)).graph.node] == ["MatMul", "Relu", "MatMul"]
