"""decompose-ops: RMSNormalization (opset 23; no importer before TensorRT 10.15) and UINT8 Mod (the
importers take integer Mod on INT32 only), checked in ONNX Runtime and against exact numpy references."""
import numpy as np
import onnx
import pytest

import graphfix

from graphfix.diagnosis import check_model
from graphfix.fixtures import build
from gf_testing import apply_pass, assert_equivalent, assert_idempotent, ops

RMS = ["rms_norm_last_axis", "rms_norm_axis1_4d", "rms_norm_fp16_stash"]
RMS_OPS = ["Cast", "Mul", "ReduceMean", "Add", "Sqrt", "Reciprocal", "Mul", "Cast", "Mul"]
MOD = ["mod_uint8", "mod_uint8_fmod_const"]


def _ort_or_skip(model, why):
    from graphfix.checks.ort import ort_can_load
    if not ort_can_load(model):
        pytest.skip(f"the installed ONNX Runtime cannot load {why}")


def _run(model, feeds):
    """ONNX Runtime, or ONNX's reference evaluator where the installed ONNX Runtime cannot load the
    model (opset 23 before onnxruntime 1.20: the decomposition keeps the model's opset)."""
    from graphfix.checks.ort import ort_can_load
    if not ort_can_load(model):
        from onnx.reference import ReferenceEvaluator
        return ReferenceEvaluator(model).run(None, feeds)
    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _rms_reference(x, scale, axis, eps):
    """The ONNX definition in float64: x / sqrt(mean(x^2 over [axis, rank)) + eps) * scale."""
    x64 = x.astype(np.float64)
    axes = tuple(range(axis % x.ndim, x.ndim))
    return x64 / np.sqrt(np.mean(x64 * x64, axis=axes, keepdims=True) + eps) * scale.astype(np.float64)


def _scale(model):
    return onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "scale"))


@pytest.mark.parametrize("fixture", RMS)
@pytest.mark.parametrize("trt", ["8.6", "10.12"])
def test_rms_norm_decomposed_exactly_and_idempotent(fixture, trt):
    model = build(fixture)
    flagged = [f for f in check_model(model, trt=trt).findings if f.op == "RMSNormalization"]
    assert flagged and all(f.fix_pass == "decompose-ops" for f in flagged)
    fixed, result = apply_pass("decompose-ops", model, trt=trt)
    assert result.modified and not result.warnings
    fp16 = fixture.endswith("fp16_stash")
    assert ops(fixed) == (RMS_OPS if fp16 else [o for o in RMS_OPS if o != "Cast"])
    onnx.checker.check_model(fixed, full_check=True)
    node = model.graph.node[0]
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
    x = np.random.default_rng(7).standard_normal([d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim])
    x[0] *= 1e-3                                    # small rows: epsilon matters there
    x = x.astype(np.float16 if fp16 else np.float32)
    want = _rms_reference(x, _scale(model), axis, eps)
    got = _run(fixed, {"x": x})[0]
    assert got.dtype == x.dtype
    # FLOAT: a few float32 roundings; FLOAT16: computed in FLOAT, rounded to FLOAT16 twice (normed, * scale)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=2e-3 if fp16 else 1e-6, atol=1e-3 if fp16 else 1e-7)
    assert_idempotent("decompose-ops", model, trt=trt)
    _ort_or_skip(model, f"{fixture} (RMSNormalization, opset 23)")
    assert_equivalent(model, fixed)


@pytest.mark.parametrize("trt", ["8.6", "10.12"])
def test_rms_norm_whole_pipeline_leaves_nothing_for_check(trt):
    """10.11-10.14 parse opset 23 (target-opset keeps it) but import no RMSNormalization: only this
    rule removes it there; on 8.6 it runs before target-opset lowers the opset."""
    model = build("rms_norm_last_axis")
    _ort_or_skip(model, "RMSNormalization (opset 23)")
    whole, report = graphfix.fix(model, trt=trt)
    assert report.ok, report.summary()
    assert "RMSNormalization" not in ops(whole)
    assert whole.opset_import[0].version == (17 if trt == "8.6" else 23)
    assert not [f for f in check_model(whole, trt=trt).findings if f.node and f.severity != "warning"]


@pytest.mark.parametrize("trt", ["10.15", "11.0"])
def test_rms_norm_kept_where_tensorrt_imports_it(trt):
    assert not apply_pass("decompose-ops", build("rms_norm_last_axis"), trt=trt)[1].modified


def test_rms_norm_positive_axis_of_unknown_rank_is_refused_and_check_names_no_fix():
    model = build("rms_norm_axis1_4d")
    model.graph.input[0].type.tensor_type.ClearField("shape")
    model.graph.output[0].type.tensor_type.ClearField("shape")
    fixed, result = apply_pass("decompose-ops", model, trt="10.12")
    assert not result.modified and ops(fixed) == ["RMSNormalization"]
    assert any("rank" in w for w in result.warnings)
    finding = next(f for f in check_model(model, trt="10.12").findings if f.op == "RMSNormalization")
    assert finding.fix_pass is None      # nor expand-functions: its body's axes need the rank
    _, expanded = apply_pass("expand-functions", model, trt="10.12")
    assert not expanded.modified and any("rank of x is unknown" in w for w in expanded.warnings)


def _mod_pairs():
    """Every UINT8 dividend against every non-zero divisor (a zero divisor is undefined for integers)."""
    a, b = np.meshgrid(np.arange(256), np.arange(1, 256), indexing="ij")
    return a.reshape(-1).astype(np.uint8), b.reshape(-1).astype(np.uint8)


def _with_divisor_input(model, size):
    """The fixture with its constant divisor made a graph input, all tensors [size] (exhaustive tables)."""
    model.graph.ClearField("initializer")
    model.graph.input.append(onnx.helper.make_tensor_value_info("b", onnx.TensorProto.UINT8, [size]))
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.shape.ClearField("dim")
        vi.type.tensor_type.shape.dim.add().dim_value = size
    return model


@pytest.mark.parametrize("fixture, reference", [("mod_uint8", np.mod), ("mod_uint8_fmod_const", np.fmod)])
def test_mod_uint8_through_int32_exhaustively_exact(fixture, reference):
    model = build(fixture)
    flagged = [f for f in check_model(model, trt="8.6").findings if f.node]
    assert flagged and all(f.fix_pass == "decompose-ops" for f in flagged)
    fixed, result = apply_pass("decompose-ops", model)
    assert result.modified and ops(fixed) == ["Cast", "Mod", "Cast"]   # the divisor's Cast is computed here
    assert next(i for i in fixed.graph.initializer).data_type == onnx.TensorProto.INT32
    assert not [f for f in check_model(fixed, trt="8.6").findings if f.severity == "error"]
    assert_equivalent(model, fixed)     # constant divisor without zero: seeded inputs are fine
    assert_idempotent("decompose-ops", model)
    a, b = _mod_pairs()
    table = _with_divisor_input(model, a.size)
    fixed, _ = apply_pass("decompose-ops", table)
    assert ops(fixed) == ["Cast", "Cast", "Mod", "Cast"]
    got = _run(fixed, {"a": a, "b": b})[0]
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, reference(a, b))
    np.testing.assert_array_equal(got, _run(table, {"a": a, "b": b})[0])


def test_mod_uint8_constant_divisor_values():
    fixed, _ = apply_pass("decompose-ops", build("mod_uint8_fmod_const"))
    a = np.array([[0, 200, 255], [13, 7, 254]], np.uint8)
    np.testing.assert_array_equal(_run(fixed, {"a": a})[0], [[0, 0, 0], [6, 0, 254]])


def test_mod_left_alone_where_the_importer_takes_it_or_the_type_cannot_be_held():
    """FLOAT fmod=1 and INT32 are imported by 8.6; INT8 is quantized-only on 8.6 (its graph input stays an
    error whatever Mod becomes): no rewrite, and check names no decompose-ops fix for them."""
    for elem, fmod in ((onnx.TensorProto.FLOAT, 1), (onnx.TensorProto.INT32, 0), (onnx.TensorProto.INT8, 0)):
        model = _with_divisor_input(build("mod_uint8"), 4)
        del model.graph.node[0].attribute[:]
        model.graph.node[0].attribute.extend([onnx.helper.make_attribute("fmod", fmod)])
        for vi in list(model.graph.input) + list(model.graph.output):
            vi.type.tensor_type.elem_type = elem
        _, result = apply_pass("decompose-ops", model)
        assert not result.modified
        assert all(f.fix_pass != "decompose-ops" for f in check_model(model, trt="8.6").findings)


# -- on real TensorRT (the rig): `pytest tests/passes/test_decompose_rms_mod.py -m trt` ----------------
@pytest.mark.trt
@pytest.mark.parametrize("fixture", ["rms_norm_last_axis", "rms_norm_axis1_4d", "mod_uint8", "mod_uint8_fmod_const"])
def test_trt_raw_fails_fixed_builds_and_matches(fixture, tmp_path):
    from graphfix.checks.tensorrt.trt import build_and_compare, parse_in_subprocess
    from graphfix.checks.ort import ort_can_load
    from graphfix.checks.tensorrt.env import trt_version
    model = build(fixture)
    raw_path, fixed_path = str(tmp_path / "raw.onnx"), str(tmp_path / "fixed.onnx")
    onnx.save(model, raw_path)
    fixed, report = graphfix.fix(model, trt=trt_version() or "8.6", check="none")
    onnx.save(fixed, fixed_path)
    raw = parse_in_subprocess(raw_path, timeout=300)
    assert not raw.parsed, "TensorRT parsed the raw model: the rewrite is not needed on this version"
    # the reference: ONNX Runtime on the original; where it cannot load opset 23 (the rig's Python 3.9
    # ONNX Runtime), on the fixed model, which the CPU tests above hold to the numpy reference
    reference = raw_path if ort_can_load(model) else fixed_path
    compared = build_and_compare(reference, fixed_path, timeout=600, progress=False)
    assert compared.passed, compared.detail
