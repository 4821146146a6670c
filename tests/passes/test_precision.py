"""The precision pass: FP16/BF16 where safe, FP32 islands (with reasons) where FP16 overflows."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T

import graphfix
from gf_testing import apply_pass, assert_idempotent, elem_types
from graphfix.checks.ort import compare_models
from graphfix.checks.structural import io_signature, validity_problems
from graphfix.cli import main
from graphfix.diagnosis import check_model
from graphfix.fixtures import build
from graphfix.pass_api import PassContext
from graphfix.passes.precision import builder_fp16_flag

FP16 = {"precision": "fp16"}
FIXTURES = ["prec_layernorm_overflow", "prec_attention_masks", "prec_exp_large", "prec_small_cnn",
            "prec_int_cast_shared", "prec_resize_scales", "prec_noop_cast"]


def _convert(name, trt="10.0", **options):
    model = build(name)
    out, result = apply_pass("precision", model, trt, options={**FP16, **options})
    return model, out, result


def _kept(result):
    return {c.target: c.details["reason"] for c in result.changes if c.action == "keep-fp32"}


def _node_types(model):
    """op name -> element type of its first output."""
    types = elem_types(model)
    return {n.name: types.get(n.output[0]) for n in model.graph.node}


def test_layernorm_overflow_keeps_statistics_fp32():
    model, out, result = _convert("prec_layernorm_overflow")
    kept = _kept(result)
    assert {"ln.pow", "ln.var", "ln.sqrt"} <= set(kept), kept
    assert "Pow" in kept["ln.pow"] and "squares" in kept["ln.var"]
    types = _node_types(out)
    assert types["proj"] == T.FLOAT16 and types["ln.pow"] == T.FLOAT and types["ln.sub"] == T.FLOAT16
    # in FP16 arithmetic (x - mean)^2 overflows: what the kept-FP32 Pow avoids (ONNX Runtime's CPU
    # kernels compute FP16 Pow in FP32, so only numpy's FP16 shows it)
    h = np.random.default_rng(0).uniform(-1, 1, (2, 4, 16)).astype(np.float32) * 300
    d = (h - h.mean(-1, keepdims=True)).astype(np.float16)
    with np.errstate(over="ignore"):
        assert np.isinf(d * d).any()
    res = compare_models(model, out, tolerance=result.tolerance)
    assert res.passed, res.worst()


def test_attention_masks_become_finite_and_softmax_stays_fp32():
    model, out, result = _convert("prec_attention_masks")
    masks = {c.target: c.details for c in result.changes if c.action == "finite-mask"}
    assert set(masks) == {"fmin", "causal"}
    assert masks["causal"]["from"] == -np.inf and masks["causal"]["to"] == -np.finfo(np.float16).max / 2
    for init in out.graph.initializer:
        values = onnx.numpy_helper.to_array(init)
        if init.data_type == T.FLOAT16:
            assert np.isfinite(values).all(), init.name
    assert "Softmax" in _kept(result)["softmax"]
    assert list(_kept(result)) == ["softmax"]          # the mask chain itself converts
    res = compare_models(model, out, tolerance=result.tolerance)
    assert res.passed, res.worst()


def test_exp_on_large_values():
    model, out, result = _convert("prec_exp_large")
    kept = _kept(result)
    assert "Exp" in kept["exp"] and "Log" in kept["log"]
    assert "reaches" in kept["add_one"] and "seeded inputs" in kept["add_one"]   # measured: 1.6e5 > 4094
    assert kept["scale_up"].startswith("between FP32 nodes")
    assert _node_types(out)["proj"] == T.FLOAT16
    assert compare_models(model, out, tolerance=result.tolerance).passed


def test_calibration_data_drives_the_value_rule(tmp_path):
    """Activations small on the seeded inputs but large on the user's data keep their node FP32."""
    _, _, seeded = _convert("prec_small_cnn")
    assert not _kept(seeded)
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.full((1, 3, 16, 16), 4000.0, np.float32))
    _, _, calibrated = _convert("prec_small_cnn", calibration_data=str(path))
    kept = _kept(calibrated)
    assert "conv1" in kept and str(path) in kept["conv1"], kept
    with pytest.raises(ValueError, match="lacks inputs"):      # the pipeline reports the pass as failed
        _convert("prec_small_cnn", calibration_data={"not_x": np.zeros((1, 3, 16, 16), np.float32)})


@pytest.mark.parametrize("name", FIXTURES)
def test_io_types_kept_one_cast_per_edge_no_chains(name):
    model, out, result = _convert(name)
    assert io_signature(model) == io_signature(out)
    assert validity_problems(out) == {}          # checker and strict type/shape inference
    casts = [n for n in out.graph.node if n.op_type == "Cast"]
    edges = [(n.input[0], n.attribute[0].i) for n in casts]
    assert len(edges) == len(set(edges)), edges  # one Cast per tensor and direction
    produced_by_cast = {n.output[0] for n in casts}
    assert not [n.name for n in casts if n.input[0] in produced_by_cast]   # no Cast -> Cast
    inputs = {i.name for i in out.graph.input}
    assert sum(1 for n in casts if n.input[0] in inputs and n.name.startswith("gf.")) <= len(inputs)
    assert result.counts["casts_inserted"] == len([n for n in casts if n.name.startswith("gf.precision")])


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("options", [FP16, {**FP16, "keep_io_types": False}])
def test_idempotent(name, options):
    assert_idempotent("precision", build(name), "10.0", options=options)


def test_cast_chain_is_folded():
    """Cast(int64 -> float) read by FP16 math and by FP32 Exp: the FP16 reader gets Cast(int64 -> float16)."""
    model, out, result = _convert("prec_int_cast_shared")
    casts = [(n.input[0], n.attribute[0].i) for n in out.graph.node if n.op_type == "Cast"]
    assert sorted(c for c in casts if c[0] == "ids") == [("ids", T.FLOAT), ("ids", T.FLOAT16)]
    assert [c.details["folded"] for c in result.changes if c.action == "insert-cast" and c.details["tensor"] == "ids"] \
        == [True]
    assert "Exp" in _kept(result)["exp"]
    assert compare_models(model, out, tolerance=result.tolerance).passed


def test_noop_cast_is_bypassed():
    """Llama's `.to(float32)` on an FP32 tensor: in the FP16 model no Cast reads a tensor of its own type."""
    model, out, result = _convert("prec_noop_cast")
    types = elem_types(out)
    types.update({i.name: i.data_type for i in out.graph.initializer})
    assert [n.name for n in out.graph.node if n.op_type == "Cast" and types.get(n.input[0]) == n.attribute[0].i] == []
    assert "to_float" not in {n.name for n in out.graph.node}
    assert [c.target for c in result.changes if c.action == "drop-cast"] == ["to_float"]
    assert _node_types(out)["gain"] == T.FLOAT16
    assert compare_models(model, out, tolerance=result.tolerance).passed


def test_no_keep_io_types_changes_io_and_checks():
    model, out, result = _convert("prec_small_cnn", keep_io_types=False)
    assert [i.type.tensor_type.elem_type for i in out.graph.input] == [T.FLOAT16]
    assert [o.type.tensor_type.elem_type for o in out.graph.output] == [T.FLOAT16]
    assert not [n for n in out.graph.node if n.op_type == "Cast"]
    assert validity_problems(out) == {}
    assert compare_models(model, out, tolerance=result.tolerance).passed   # fed/compared through Casts


def test_bf16_structure():
    model, out, result = _convert("prec_attention_masks", precision="bf16")
    assert io_signature(model) == io_signature(out)
    assert validity_problems(out) == {}
    assert _node_types(out)["out_proj"] == T.BFLOAT16
    _, _, on_86 = _convert("prec_attention_masks", trt="8.6", precision="bf16")
    assert not on_86.modified and "no BFLOAT16" in on_86.warnings[0]


def test_off_by_default_and_through_the_pipeline():
    model = build("prec_exp_large")
    _, report = graphfix.fix(model, trt="10.0")
    assert "precision" not in [p.name for p in report.passes]
    fixed, report = graphfix.fix(model, trt="10.0", context=PassContext(options=FP16))
    rec = next(p for p in report.passes if p.name == "precision")
    assert rec.status == "applied" and rec.check["passed"] and rec.check["tolerance"] == [1e-2, 1e-2]
    assert report.ok and report.checks[0]["passed"] and report.checks[0]["tolerance"] == [1e-2, 1e-2]
    assert [n.op_type for n in fixed.graph.node if n.op_type == "MatMul"]
    again, second = graphfix.fix(fixed, trt="10.0", context=PassContext(options=FP16), check="none")
    assert not [p.name for p in second.passes if p.status == "applied"]
    assert again.SerializeToString() == fixed.SerializeToString()


def test_cli_flags(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(build("prec_attention_masks"), str(src))
    out = tmp_path / "out.onnx"
    assert main(["fix", str(src), "-o", str(out), "--trt", "10.0", "--precision", "fp16", "--quiet"]) == 0
    assert any(i.data_type == T.FLOAT16 for i in onnx.load(str(out)).graph.initializer)
    assert main(["fix", str(src), "-o", str(out), "--precision", "fp16", "--calibration-data",
                 str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz" in capsys.readouterr().err
    assert main(["fix", str(src), "-o", str(out), "--precision", "fp16", "--until-parses"]) == 2


def test_builder_flag_by_version():
    assert builder_fp16_flag("8.6", "fp16") and builder_fp16_flag("10.3", "fp16")
    assert not builder_fp16_flag("11.0", "fp16") and not builder_fp16_flag("8.6", None)


def test_check_warns_strongly_typed_fp16_request():
    model = build("prec_small_cnn")
    rules = [f.rule for f in check_model(model, trt="11.0", fp16=True).findings]
    assert "fp16-strongly-typed" in rules
    assert "fp16-strongly-typed" not in [f.rule for f in check_model(model, trt="10.3", fp16=True).findings]
    assert "fp16-strongly-typed" not in [f.rule for f in check_model(model, trt="11.0").findings]
    mixed, _ = apply_pass("precision", model, "11.0", options=FP16)
    assert "fp16-strongly-typed" not in [f.rule for f in check_model(mixed, trt="11.0", fp16=True).findings]


def test_bf16_checked_in_emulation_through_the_pipeline():
    """ONNX Runtime's CPU has no BF16 MatMul/Gemm: the check runs an FP32-arithmetic, BF16-storage copy."""
    model = build("prec_small_cnn")
    fixed, report = graphfix.fix(model, trt="10.0", context=PassContext(options={"precision": "bf16"}))
    rec = next(p for p in report.passes if p.name == "precision")
    assert rec.status == "applied" and rec.check["note"].startswith("BF16 emulated")
    assert rec.check["tolerance"] == [5e-2, 5e-2] and report.ok
    assert any(i.data_type == T.BFLOAT16 for i in fixed.graph.initializer)
    assert 0 < max(o["max_abs"] for o in rec.check["outputs"]) < 5e-2   # BF16 rounding is visible, and bounded


def test_layernorm_fused_first_then_matmul_converts():
    """In the pipeline fuse-layernorm runs first; the LayerNormalization stays FP32, the MatMul converts."""
    fixed, report = graphfix.fix(build("prec_layernorm_overflow"), trt="10.0", context=PassContext(options=FP16))
    kept = {c["target"]: c["details"]["reason"] for p in report.passes if p.name == "precision"
            for c in p.changes if c["action"] == "keep-fp32"}
    assert any("normalization" in r for r in kept.values()), kept
    types = elem_types(fixed)
    assert types[next(n.output[0] for n in fixed.graph.node if n.op_type == "MatMul")] == T.FLOAT16
    assert report.ok


@pytest.mark.parametrize("name", ["gpt2_ts17", "t5_ts17", "llama_dynamo18"])
def test_exported_transformers(name):
    """On exports: the ORT check passes with the FP16 tolerance, and a second fix changes nothing."""
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "exported", name + ".onnx")
    fixed, report = graphfix.fix(path, trt="10.0", context=PassContext(options=FP16))
    rec = next(p for p in report.passes if p.name == "precision")
    assert rec.status == "applied" and report.ok, (rec.error, report.checks)
    assert rec.counts["nodes_low"] > rec.counts["nodes_fp32"] > 0
    again, second = graphfix.fix(fixed, trt="10.0", context=PassContext(options=FP16), check="none")
    assert not [p.name for p in second.passes if p.status == "applied"]
    assert again.SerializeToString() == fixed.SerializeToString()


def test_fixed_float_input_stays_float():
    """Resize's `scales` is tensor(float) in ONNX: the Resize converts, its scales input stays FLOAT."""
    model, out, result = _convert("prec_resize_scales")
    types = elem_types(out)
    resize = next(n for n in out.graph.node if n.op_type == "Resize")
    assert types[resize.output[0]] == T.FLOAT16 and types[resize.input[2]] == T.FLOAT
    assert "resize" not in _kept(result)
    assert compare_models(model, out, tolerance=result.tolerance).passed


def test_check_trt_gets_the_fp16_flag_where_the_target_needs_it():
    from argparse import Namespace
    from graphfix.commandline.precision import precision_options
    for trt, flag in (("8.6", True), ("10.3", True), ("11.0", False)):
        args = Namespace(precision="fp16", keep_io_types=True, calibration_data=None, check="trt", trt=trt,
                         fp16=False, until_parses=False)
        assert precision_options(args) == {"precision": "fp16", "keep_io_types": True}
        assert args.fp16 is flag, trt


def test_cli_precision_choices_are_the_pass_types():
    """The CLI's choices (kept light for `graphfix -h`) name exactly the pass's low types."""
    from graphfix.passes._precision_rules import LOW_TYPES
    from graphfix.commandline.precision import PRECISIONS
    assert sorted(LOW_TYPES) == list(PRECISIONS)
