"""emulate-types: narrow integer islands computed in INT32 (re-wrapped where ONNX wraps), DOUBLE in FLOAT."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T

from graphfix import fix
from graphfix.checks.exact_reference import run_exact
from graphfix.checks.ort import load_error, run_ort
from graphfix.diagnose import check_model
from graphfix.fixtures import build
from gf_testing import apply_pass, assert_equivalent, assert_idempotent, elem_types, ops, random_feeds

PASS = "emulate-types"
FIXTURES = ["double_mlp_chain", "double_out_of_float_range", "int16_arithmetic", "int8_add_mul_io",
            "uint16_out_of_int32_product", "castlike_to_double", "uint8_add_div_io", "int8_div_signed",
            "int8_qdq_transpose", "int8_clip_relu", "uint8_to_int16_chain"]
NARROW = {T.INT8, T.UINT8, T.INT16, T.UINT16}


def inner_types(model: onnx.ModelProto) -> set:
    """Element types of every tensor but the graph's inputs and outputs."""
    io = {v.name for v in list(model.graph.input) + list(model.graph.output)}
    return {t for name, t in elem_types(model).items() if name not in io}


def io_types(model: onnx.ModelProto) -> list:
    return [v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)]


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("int32_io", [False, True])
def test_idempotent(name, int32_io):
    assert_idempotent(PASS, build(name), int32_io=int32_io)


def test_double_chain_runs_in_float_with_the_declared_tolerance():
    model = build("double_mlp_chain")
    fixed, result = apply_pass(PASS, model)
    assert T.DOUBLE not in inner_types(fixed)
    assert io_types(fixed) == [T.DOUBLE, T.DOUBLE]                 # signature kept
    assert ops(fixed) == ["Cast", "MatMul", "Add", "Relu", "MatMul", "Add", "Tanh", "Cast"]
    assert result.tolerance == (1e-4, 1e-3)
    assert_equivalent(model, fixed, tolerance=result.tolerance)
    x = np.random.default_rng(3).standard_normal((2, 8))
    ref, got = run_exact(model, {"x": x})["y"], run_ort(fixed, {"x": x})["y"]
    assert got.dtype == np.float64 and np.abs(got - ref).max() < 1e-5   # FP32 error, not more


def test_double_constant_beyond_float_is_kept_with_the_reason():
    model = build("double_out_of_float_range")
    fixed, result = apply_pass(PASS, model)
    assert not result.modified
    assert any("'big'" in w and "beyond FLOAT" in w for w in result.warnings), result.warnings
    assert result.counts == {"islands_kept": 1}


def test_castlike_to_double_becomes_float():
    model = build("castlike_to_double")
    fixed, result = apply_pass(PASS, model)
    assert T.DOUBLE not in inner_types(fixed) | set(io_types(fixed))
    assert_equivalent(model, fixed, tolerance=result.tolerance)


def _int16_feeds():
    # 200 * 300 = 60000 wraps to -5536 in INT16; 109 * 300 + 32000 wraps too
    return {"x": np.array([200, -200, 109, -109, 3, -3], dtype=np.float32)}


def test_int16_arithmetic_in_int32_matches_wrapping_int16_exactly():
    model = build("int16_arithmetic")
    fixed, result = apply_pass(PASS, model)
    assert not (NARROW & (inner_types(fixed) | set(io_types(fixed))))
    assert result.counts["wraps_inserted"] == 2             # after Mul and after Add
    assert "Div" in ops(fixed) and result.tolerance is None  # exact: no tolerance declared
    feeds = _int16_feeds()
    ref = run_exact(model, feeds)                            # ONNX Runtime has no INT16 Max kernel
    got = run_ort(fixed, feeds)
    for name in ("y", "pos"):
        np.testing.assert_array_equal(got[name], ref[name])
    wrapped = (np.array([200, -200], np.int16) * np.int16(300))   # numpy wraps like ONNX
    assert int(wrapped[0]) == -5536 and ref["y"][0] == max(-5536 + 7, -1000)


@pytest.mark.parametrize("int32_io", [False, True])
def test_int8_add_mul_wraps_like_int8(int32_io):
    model = build("int8_add_mul_io")
    fixed, result = apply_pass(PASS, model, int32_io=int32_io)
    assert not (NARROW & inner_types(fixed))
    assert io_types(fixed) == ([T.INT32] * 3 if int32_io else [T.INT8] * 3)
    if not int32_io:
        assert any("--int32-io" in w for w in result.warnings)
    rng = np.random.default_rng(5)
    a = np.concatenate([[100, -128, 127, -128], rng.integers(-128, 128, 4)]).astype(np.int8)
    b = np.concatenate([[100, -1, 127, -128], rng.integers(-128, 128, 4)]).astype(np.int8)
    ref = run_exact(model, {"a": a, "b": b})["y"]     # ONNX Runtime < 1.19 has no INT8 Add kernel
    assert ref[0] == -32    # 100 + 100 wraps to -56; -56 * 100 = -5600 wraps to 32; Neg: -32
    dtype = np.int32 if int32_io else np.int8
    got = run_ort(fixed, {"a": a.astype(dtype), "b": b.astype(dtype)})["y"]
    np.testing.assert_array_equal(got.astype(np.int64), ref.astype(np.int64))


def test_full_range_wrap_all_int8_pairs():
    """Every INT8 pair through Add/Mul/Neg: the INT32 emulation equals ONNX's wrap-around."""
    model = build("int8_add_mul_io")
    fixed, _ = apply_pass(PASS, model, int32_io=True)
    grid = np.arange(-128, 128)
    a, b = np.meshgrid(grid, grid)
    a, b = a.ravel().astype(np.int8), b.ravel().astype(np.int8)
    want = (-((a.astype(np.int64) + b) * b)).astype(np.int8)      # numpy's int8 wrap-around
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = a.size
    fixed.graph.input[1].type.tensor_type.shape.dim[0].dim_value = a.size
    fixed.graph.output[0].type.tensor_type.shape.dim[0].dim_value = a.size
    got = run_ort(fixed, {"a": a.astype(np.int32), "b": b.astype(np.int32)})["y"]
    np.testing.assert_array_equal(got, want.astype(np.int32))


def test_uint8_add_wraps_then_divides_exactly_with_uint8_io_kept():
    model = build("uint8_add_div_io")
    fixed, result = apply_pass(PASS, model)
    assert io_types(fixed) == [T.UINT8] * 3 and not (NARROW & inner_types(fixed))
    assert not result.warnings     # UINT8 I/O is bindable when it goes straight through a Cast
    a = np.array([200, 255, 0, 7, 128, 1], np.uint8)
    b = np.array([100, 255, 1, 3, 128, 2], np.uint8)
    ref = run_exact(model, {"a": a, "b": b})["y"]
    assert ref[0] == 14          # (200 + 100) mod 256 = 44; 44 // 3 = 14
    np.testing.assert_array_equal(run_ort(fixed, {"a": a, "b": b})["y"], ref)
    assert not [f for f in check_model(fixed, trt="8.6").findings if f.severity == "error"]


def test_signed_division_is_kept_with_the_reason():
    fixed, result = apply_pass(PASS, build("int8_div_signed"))
    assert not result.modified
    assert any("Div 'div' may divide negative values" in w for w in result.warnings), result.warnings


def test_clip_and_relu_become_max_min_where_the_target_lacks_int32_ones():
    model = build("int8_clip_relu")
    fixed, result = apply_pass(PASS, model)
    # no re-wrap: the ranges after Clip (-5..100) and Sub (-8..97) stay within INT8
    assert ops(fixed) == ["Cast", "Max", "Min", "Sub", "Max", "Cast"] and result.counts["clip_relu_rewritten"] == 2
    assert not (NARROW & inner_types(fixed)) and result.counts.get("wraps_inserted", 0) == 0
    x = np.array([-128, -6, 0, 7, 100, 127], np.float32)
    want = run_exact(model, {"x": x})["y"]
    np.testing.assert_array_equal(run_ort(fixed, {"x": x})["y"], want)
    # TensorRT 10 imports neither either (operators.md 10.x: Clip FP32/FP16/BF16); 11.x has INT8 natively
    assert "Clip" not in ops(apply_pass(PASS, model, trt="10.3")[0])
    assert not apply_pass(PASS, model, trt="11.0")[1].modified


def test_two_types_chained_wider_first():
    model = build("uint8_to_int16_chain")
    fixed, result = apply_pass(PASS, model)
    assert not (NARROW & inner_types(fixed)) and io_types(fixed) == [T.UINT8, T.FLOAT]
    assert [n.op_type for n in fixed.graph.node if n.op_type == "Cast"] == ["Cast", "Cast"]   # no Cast added
    a = np.array([0, 125, 250, 255], np.uint8)          # 255 * 200 = 51000 wraps in INT16; so does - 25000
    want = run_exact(model, {"a": a})["y"]
    np.testing.assert_array_equal(run_ort(fixed, {"a": a})["y"], want)
    assert not [f for f in check_model(fixed, trt="8.6").findings if f.severity == "error"]


def test_quantized_int8_between_q_and_dq_is_left_alone():
    fixed, result = apply_pass(PASS, build("int8_qdq_transpose"))
    assert not result.modified and result.counts == {"quantized_islands_kept": 1}


def test_product_beyond_int32_is_kept_with_the_reason():
    fixed, result = apply_pass(PASS, build("uint16_out_of_int32_product"))
    assert not result.modified
    assert any("beyond INT32" in w and "'square'" in w for w in result.warnings), result.warnings


def test_only_types_the_target_lacks():
    # TensorRT 11.x (TensorRT-RTX) computes INT8 natively: the INT8 graph is left alone there
    assert not apply_pass(PASS, build("int8_add_mul_io"), trt="11.0")[1].modified
    assert apply_pass(PASS, build("int8_add_mul_io"), trt="10.3")[1].modified
    assert apply_pass(PASS, build("int16_arithmetic"), trt="11.0")[1].modified


def test_in_the_default_pipeline_and_named_by_check():
    model = build("int16_arithmetic")
    findings = [f for f in check_model(model, trt="8.6").findings if f.fix_pass == PASS]
    assert findings and all(f.rule == "unsupported-dtype" for f in findings)
    fixed, report = fix(model, trt="8.6", check="none")
    assert {p.name: p.status for p in report.passes}[PASS] == "applied"
    assert not [f for f in check_model(fixed, trt="8.6").findings if f.severity == "error"]


def test_check_names_int32_io_for_narrow_graph_inputs():
    findings = check_model(build("int8_add_mul_io"), trt="8.6").findings
    io = [f for f in findings if "graph input 'a'" in f.reason]
    assert io and (io[0].fix_pass, io[0].flag) == ("emulate-types", "--int32-io")   # not by default
    from graphfix.diagnose import format_table
    table = format_table(check_model(build("int8_add_mul_io"), trt="8.6"), width=200)
    assert "fix:   `graphfix fix --int32-io` (pass emulate-types)" in table
    assert "--int32-io" in [f.get("flag") for f in check_model(build("int8_add_mul_io"), trt="8.6").to_json()["findings"]]


@pytest.mark.parametrize("message", [    # onnx-tensorrt release/8.6-GA texts; the second measured on the rig
    "Assertion failed: convertDtype(onnxDtype.elem_type(), &trtDtype) && \"Failed to convert ONNX date type to "
    "TensorRT data type.\"",                                      # an INT16/UINT16 input or output
    "Invalid Node - add: operation SUM requires inputs with activation or Int32 type",   # UINT8 arithmetic
    "Assertion failed: convertDtype(onnxType, &newType) && \"Unsupported data type for the Cast operator!\""])
def test_fix_until_parses_maps_type_errors_to_the_pass(message):
    from graphfix.fix_loop import passes_for_error
    assert "emulate-types" in passes_for_error({"node": "add", "op": "Add", "message": message})


# -- on real TensorRT (the rig): `pytest tests/passes/test_emulate_types.py -m trt` -------------------
@pytest.mark.trt
@pytest.mark.parametrize("name,int32_io", [("double_mlp_chain", False), ("castlike_to_double", False),
                                           ("uint8_add_div_io", False), ("int8_clip_relu", False),
                                           ("uint8_to_int16_chain", False), ("int8_add_mul_io", True)])
def test_trt_fixed_builds_and_matches_onnx_runtime(name, int32_io, tmp_path):
    from graphfix.checks.tensorrt.trt import build_and_compare
    from graphfix.checks.tensorrt.env import trt_version
    from graphfix.pass_api import PassContext
    model = build(name)
    fixed, report = fix(model, trt=trt_version(), check="ort", context=PassContext(int32_io=int32_io))
    assert report.ok, report.summary()
    raw_path, fixed_path = str(tmp_path / "raw.onnx"), str(tmp_path / "fixed.onnx")
    onnx.save(model, raw_path)
    onnx.save(fixed, fixed_path)
    reference = raw_path
    if load_error(model) is not None:
        # the rig's ONNX Runtime (1.19) has no INT8/UINT8 Add/Sub/Mul kernels: the engine is compared
        # with the fixed model, which equals the exact reference of the original (checked here too)
        reference = fixed_path
        feeds = random_feeds(model, seed=3)
        want = run_exact(model, feeds)
        got = run_ort(fixed, {k: v.astype(onnx.helper.tensor_dtype_to_np_dtype(t)) for (k, v), t in zip(
            feeds.items(), [i.type.tensor_type.elem_type for i in fixed.graph.input])})
        assert all(np.array_equal(np.asarray(want[k]), np.asarray(got[k]).astype(np.asarray(want[k]).dtype))
                   for k in want)
    compared = build_and_compare(reference, fixed_path, timeout=600, progress=False)
    assert compared.passed, compared.detail
