"""The TensorRT-RTX backend: the onnx-tensorrt 11.x parser and an ahead-of-time build on the CPU.

CPU tests without TensorRT-RTX cover the backend table, its name in reports, the CLI's refusals and
`check`'s report when RTX is absent. `rtx`-marked tests parse and build for real (tests/conftest.py
skips them where the wheels are absent, and fails them in CI), and hold every fixture and every
exported model to this: after `graphfix fix --trt 11` it parses and builds on TensorRT-RTX, or it is
listed in KNOWN_RTX_FAILURES with a reason that `graphfix check --trt 11` also gives (fix with
`--check none`, see benchmarks/rtx_models.fixed_model: an ONNX Runtime rollback would depend on the CPU).
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os

import pytest

from graphfix.checks.tensorrt.backends import BACKENDS, get_backend
from graphfix.cli import main
from graphfix.errors import UsageError
from graphfix.fixtures import build
from graphfix.model_io import save_model
from graphfix.profiles import load_profile

_HERE = os.path.dirname(os.path.abspath(__file__))
_SPEC = importlib.util.spec_from_file_location("rtx_models", os.path.join(_HERE, "..", "benchmarks", "rtx_models.py"))
rtx_models = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(rtx_models)

LABEL = "TensorRT-RTX 1.7 (parser 11.x, ahead-of-time build, not run)"

# Models that do not parse and build on TensorRT-RTX 1.7 even after `graphfix fix --trt 11`, measured
# (benchmarks/results/rtx_models.md): name -> (op, text of TensorRT-RTX's error, text of check --trt 11's
# finding on that op). Warnings name what only TensorRT-RTX lacks (plugins, the NMS layer).
_NMS = ("NonMaxSuppression", "has no runners that implement it", "no implementation of the NMS layer")
_ROI = ("RoiAlign", "ROIAlign plugin was not found", "does not ship the ROIAlign plugin")
KNOWN_RTX_FAILURES = {
    "check_nms": _NMS, "nms_gather_head": _NMS, "nms_scores_bcn": _NMS, "nms_topk_head": _NMS,
    "nms_topk_dynamic_boxes": _NMS, "nms_topk_unbounded": _NMS,
    "if_rank_depends_on_input": ("If", "Must have inputs with equal ranks", "outputs of different ranks"),
    "check_roialign": _ROI, "roi_align_10": _ROI, "roi_align_16": _ROI,
    "attention_bool_mask_4d": ("Attention", "Key and Value must have the same shape",
                               "Key and Value must have the same shape"),
    "attention_gqa_causal_3d": ("Attention", "is_decomposable", "dedicated kernel"),
    "attention_kv_cache_softcap": ("Attention", "softcap is not supported", "softcap is not supported"),
    "bitwise_int16_and": ("Cast", "Unsupported data type for the Cast operator",
                          "Cast to a data type TensorRT does not have"),
    # INT8 is native on 11.x (not emulated there), but TensorRT-RTX takes INT8 constants only into
    # DequantizeLinear ("Quantized constant (k) is only allowed ..."); check --trt 11 flags the INT8 Clip
    "int8_clip_relu": ("Clip", "Quantized constant", "Clip does not take INT8"),
    "uint16_out_of_int32_product": ("Mul", "Failed to convert ONNX date type", "is UINT16, a type TensorRT"),
    "check_reduce_axes_runtime": ("ReduceSum", "Axis input must resolve to a build-time constant",
                                  "Reduce axes must be an initializer"),
    "opset18_reduce_computed_axes_refused": ("ReduceMean", "Axis input must resolve to a build-time constant",
                                             "Reduce axes must be an initializer"),
    "check_unsupported_op": ("Det", "UNSUPPORTED_NODE", "no importer for Det"),
    "opset19_resize_half_pixel_symmetric_refused": ("Resize", "transformationMode",
                                                    "unsupported coordinate_transformation_mode"),
    "optional_sequence_values": ("SequenceConstruct", "UNSUPPORTED_NODE", "no importer for SequenceConstruct"),
}


@pytest.fixture
def saved(tmp_path):
    def _save(name):
        path = str(tmp_path / f"{name}.onnx")
        save_model(build(name), path)
        return path
    return _save


# --- the backend as data (no TensorRT-RTX needed) --------------------------------------------------------

def test_backends_are_data():
    rtx, trt = get_backend("rtx"), get_backend("trt")
    assert get_backend(None) is trt and set(BACKENDS) == {"trt", "rtx"}
    assert (rtx.module, rtx.runs_engines, rtx.precision_flags) == ("tensorrt_rtx_bindings", False, False)
    assert (trt.module, trt.runs_engines, trt.precision_flags) == ("tensorrt", True, True)
    assert rtx.label("1.7.1.116") == LABEL
    assert "TensorRT 11" not in rtx.label("1.7.1.116")
    assert trt.label("8.6.0") == "TensorRT 8.6.0"
    with pytest.raises(UsageError, match="unknown TensorRT backend 'gpu'"):
        get_backend("gpu")


def test_which_real_parser_checks_a_line_is_profile_data():
    assert load_profile("11.0").extra.get("real_backend") == "rtx"
    assert load_profile("8.6").extra.get("real_backend") is None   # the installed tensorrt
    assert load_profile("10.3").extra.get("real_backend") is None


def test_validate_rtx_refuses_precision_flags(saved, capsys):
    assert main(["validate", "--backend", "rtx", saved("float_mlp"), "--fp16"]) == 2
    assert "strongly typed" in capsys.readouterr().err


def test_validate_trt_still_needs_two_models(saved, capsys):
    assert main(["validate", saved("float_mlp")]) == 2
    assert "ORIGINAL and FIXED" in capsys.readouterr().err


def test_check_reports_rtx_absent(saved, monkeypatch, capsys):
    import graphfix.checks.tensorrt.env as trt_env
    monkeypatch.setattr(trt_env, "rtx_unavailable_reason", lambda: "TensorRT-RTX is not installed")
    assert main(["check", saved("check_clean_conv"), "--trt", "11", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    unknown = "TensorRT-RTX ? (parser 11.x, ahead-of-time build, not run)"
    assert doc["real_parser"] == {"available": False, "reason": "TensorRT-RTX is not installed",
                                  "backend": "rtx", "label": unknown}
    assert main(["check", saved("check_clean_conv"), "--trt", "11"]) == 0
    assert "real TensorRT-RTX ? (parser 11.x, ahead-of-time build, not run): not run" in capsys.readouterr().out


def test_fix_check_rtx_absent_is_a_failed_check(saved, tmp_path, monkeypatch, capsys):
    import graphfix.checks.tensorrt.env as trt_env
    monkeypatch.setattr(trt_env, "rtx_unavailable_reason", lambda: "TensorRT-RTX is not installed")
    report = tmp_path / "r.json"
    assert main(["fix", saved("float_mlp"), "-o", str(tmp_path / "o.onnx"), "--trt", "11", "--check", "rtx",
                 "--report", str(report), "--quiet"]) == 1
    check = [c for c in json.loads(report.read_text())["checks"] if c["kind"] == "rtx"]
    assert check == [{"kind": "rtx", "passed": False, "error": "TensorRT-RTX is not installed",
                      "detail": "TensorRT-RTX check could not run: TensorRT-RTX is not installed"}]


# --- real TensorRT-RTX ----------------------------------------------------------------------------------

@pytest.mark.rtx
def test_parse_errors_are_named_by_node(saved):
    from graphfix.checks.tensorrt.trt import parse_in_subprocess
    outcome = parse_in_subprocess(saved("check_roialign"), backend="rtx")
    assert not outcome.parsed and not outcome.crashed
    assert outcome.label == LABEL and outcome.trt_version.startswith("1.7.")
    assert outcome.errors[0]["node"] == "roialign" and outcome.errors[0]["op"] == "RoiAlign"
    assert "ROIAlign plugin was not found" in outcome.errors[0]["message"]


@pytest.mark.rtx
def test_build_profile_from_dynamic_dims_and_user_shapes():
    from graphfix.checks.tensorrt.rtx import build_only
    path = os.path.join(rtx_models.EXPORTED_DIR, "bert_ts17.onnx")
    result = build_only(path, progress=False)
    assert result.passed and result.parsed and result.built and not result.ran, result.summary()
    assert result.engine_bytes > 100_000 and result.label == LABEL
    assert result.profile["input_ids"] == {"min": [1, 1], "opt": [1, 4], "max": [2, 8]}
    fixed = build_only(path, progress=False, shapes={"input_ids": [2, 16], "attention_mask": [2, 16],
                                                     "token_type_ids": [2, 16]})
    assert fixed.passed and fixed.profile["attention_mask"] == {"min": [2, 16], "opt": [2, 16], "max": [2, 16]}
    assert fixed.to_json()["build_only"] is True and fixed.to_json()["backend"] == "rtx"


@pytest.mark.rtx
def test_validate_cli(saved, capsys):
    assert main(["validate", "--backend", "rtx", saved("float_conv")]) == 0
    out = capsys.readouterr().out
    assert f"on {LABEL}" in out and "run     not run (ahead-of-time build)" in out and "PASSED" in out
    assert "TensorRT 11" not in out
    assert main(["validate", "--backend", "rtx", saved("check_roialign"), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["parsed"] is False and doc["errors"][0]["op"] == "RoiAlign" and doc["label"] == LABEL


@pytest.mark.rtx
def test_fix_check_rtx_adds_the_verdict(saved, tmp_path):
    report = tmp_path / "r.json"
    out = tmp_path / "fixed.onnx"
    assert main(["fix", saved("opset18_dynamo_block"), "-o", str(out), "--trt", "11", "--check", "rtx",
                 "--report", str(report), "--quiet"]) == 0
    (check,) = [c for c in json.loads(report.read_text())["checks"] if c["kind"] == "rtx"]
    assert check["passed"] and check["built"] and not check["ran"] and check["label"] == LABEL
    assert check["model"] == str(out)


@pytest.mark.rtx
def test_check_trt_11_prints_rtx_beside_the_prediction(saved, capsys):
    assert main(["check", saved("example_encoder_block"), "--trt", "11"]) == 0
    assert f"real {LABEL}: parsed and built the model" in capsys.readouterr().out
    path = saved("check_roialign")
    main(["check", path, "--trt", "11", "--json"])
    rp = json.loads(capsys.readouterr().out)["real_parser"]
    assert rp["available"] and rp["backend"] == "rtx" and not rp["parsed"] and rp["built"] is False
    assert rp["errors"][0]["op"] == "RoiAlign"


# --- every fixture and exported model, after graphfix fix --trt 11 ------------------------------------------

MODELS = dict(rtx_models.model_sources())


@functools.lru_cache(maxsize=None)
def _fixed_verdicts():
    """All models fixed (in this process) and parsed+built on TensorRT-RTX (children, CPU-count at a time)."""
    return rtx_models.evaluate_fixed_many(sorted(MODELS.items()))


def _fixed_verdict(name):
    return _fixed_verdicts()[name]


@pytest.mark.rtx
@pytest.mark.parametrize("name", sorted(MODELS))
def test_parses_and_builds_after_fix(name):
    rec = _fixed_verdict(name)
    assert "fixed" in rec, rec["fix"]
    verdict = rec["fixed"]
    assert not verdict["crashed"] and not verdict["timed_out"], verdict
    if name in KNOWN_PROFILE_FAILURES:
        assert not rtx_models.ok(verdict), f"{name} now parses and builds: drop it from KNOWN_PROFILE_FAILURES"
        assert any(KNOWN_PROFILE_FAILURES[name] in e["message"] for e in verdict["errors"]), verdict["errors"]
        return
    if name not in KNOWN_RTX_FAILURES:
        assert rtx_models.ok(verdict), verdict["errors"]
        return
    op, rtx_says, check_says = KNOWN_RTX_FAILURES[name]
    assert not rtx_models.ok(verdict), f"{name} now parses and builds: drop it from KNOWN_RTX_FAILURES"
    assert any(rtx_says in e["message"] for e in verdict["errors"]), verdict["errors"]
    findings = verdict["check_errors"] + verdict["check_other"]
    assert any(f["op"] == op and check_says in f["reason"] for f in findings), \
        f"check --trt 11 does not give the reason: {findings}"


# Models whose build fails on the optimization profile graphfix derives, not on an op: the profile
# sets each dynamic axis on its own, and a KV cache needs total = past + new (a known gap that
# `check` does not predict).
KNOWN_PROFILE_FAILURES = {"dyn_kv_cache": "kOPT values for profile 0 violate shape constraints"}


def test_known_failures_are_models():
    assert set(KNOWN_RTX_FAILURES) | set(KNOWN_PROFILE_FAILURES) <= set(MODELS)
    assert sum(n.startswith("exported/") for n in MODELS) == 13


def test_ci_installs_tensorrt_rtx():
    """CI runs the README's test command: it must install the rtx extra and refuse to skip rtx tests."""
    with open(os.path.join(_HERE, "..", "README.md")) as f:
        readme = f.read()
    assert 'pip install -q --disable-pip-version-check -e ".[test,rtx]" && GRAPHFIX_REQUIRE_RTX=1 pytest -q' in readme
    with open(os.path.join(_HERE, "..", "pyproject.toml")) as f:
        pyproject = f.read()
    assert 'rtx = ["tensorrt-rtx-cu12-libs==1.7.1.116", "tensorrt-rtx-cu12-bindings==1.7.1.116", ' \
        '"polygraphy>=0.53.6"]' in pyproject
    with open(os.path.join(_HERE, "..", ".ci", "run")) as f:
        assert 'pip install -q --disable-pip-version-check -e ".[test,rtx]" && GRAPHFIX_REQUIRE_RTX=1 pytest -q' \
            in f.read()


# --- trt-11 profile facts measured on TensorRT-RTX: check's verdict and the real one, side by side --------------

def _attention(v_hidden=16, softcap=None, extra_outputs=False):
    """Q, K (1, 4, 16), V (1, 4, v_hidden), 2 heads each -> Attention (opset 23) -> Y [, present_key, present_value].
    The 3-D form: the plain 4-D form of these small shapes has no dedicated kernel on TensorRT-RTX."""
    from onnx import TensorProto as T, helper
    from graphfix.fixtures._make import make_model, vi
    attrs = {"q_num_heads": 2, "kv_num_heads": 2, **({} if softcap is None else {"softcap": softcap})}
    outs = ["y", "pk", "pv"] if extra_outputs else ["y"]
    node = helper.make_node("Attention", ["q", "k", "v"], outs, **attrs)
    model = make_model([node], [vi("q", T.FLOAT, [1, 4, 16]), vi("k", T.FLOAT, [1, 4, 16]),
                                vi("v", T.FLOAT, [1, 4, v_hidden])],
                       [vi(o, T.FLOAT, None) for o in outs], opset=23)
    model.ir_version = 11   # opset 23 needs IR 11 (nothing here runs in ONNX Runtime)
    return model


def _squeeze_runtime_axes():
    """x (1, 3, 1) , axes (graph input) -> Squeeze -> y"""
    from onnx import TensorProto as T, helper
    from graphfix.fixtures._make import make_model, vi
    return make_model([helper.make_node("Squeeze", ["x", "axes"], ["y"])],
                      [vi("x", T.FLOAT, [1, 3, 1]), vi("axes", T.INT64, [1])], [vi("y", T.FLOAT, None)], opset=17)


def _int8_binary(op):
    """a, b INT8 (2, 3) -> op -> y"""
    from onnx import TensorProto as T, helper
    from graphfix.fixtures._make import make_model, vi
    out = T.BOOL if op in ("Greater", "Less", "Equal") else T.INT8
    return make_model([helper.make_node(op, ["a", "b"], ["y"])], [vi("a", T.INT8, [2, 3]), vi("b", T.INT8, [2, 3])],
                      [vi("y", out, [2, 3])], opset=17)


def _scatter_elements(reduction):
    """data (3, 3), indices (1, 2) INT64 constant, updates (1, 2) -> ScatterElements(reduction) -> y"""
    from onnx import TensorProto as T, helper
    from graphfix.fixtures._make import const, make_model, vi
    return make_model([helper.make_node("ScatterElements", ["data", "idx", "upd"], ["y"], axis=1, reduction=reduction)],
                      [vi("data", T.FLOAT, [3, 3]), vi("upd", T.FLOAT, [1, 2])], [vi("y", T.FLOAT, [3, 3])],
                      [const("idx", [[1, 2]], "int64")], opset=18)


# (model, parses and builds on TensorRT-RTX 1.7, as measured on the node tests)
PROFILE_CASES = {
    "attention_plain": (lambda: _attention(), True),
    "attention_kv_head_sizes_differ": (lambda: _attention(v_hidden=20), False),
    "attention_softcap": (lambda: _attention(softcap=2.0), False),
    "attention_present_outputs": (lambda: _attention(extra_outputs=True), False),
    "squeeze_runtime_axes": (_squeeze_runtime_axes, False),
    "int8_div": (lambda: _int8_binary("Div"), True),
    "int8_greater": (lambda: _int8_binary("Greater"), True),
    "scatter_elements_max": (lambda: _scatter_elements("max"), False),
    "scatter_elements_none": (lambda: _scatter_elements("none"), True),
}


@pytest.mark.parametrize("case", sorted(PROFILE_CASES))
def test_check_trt_11_predicts_the_measured_verdict(case):
    from graphfix.diagnosis import check_model
    make, builds = PROFILE_CASES[case]
    errors = [f for f in check_model(make(), trt="11").findings if f.severity == "error"]
    assert (not errors) == builds, [f.reason for f in errors]


@pytest.mark.rtx
@pytest.mark.parametrize("case", sorted(PROFILE_CASES))
def test_tensorrt_rtx_still_does_what_the_profile_says(case, tmp_path):
    from graphfix.checks.tensorrt.rtx import build_only
    make, builds = PROFILE_CASES[case]
    path = str(tmp_path / f"{case}.onnx")
    save_model(make(), path)
    result = build_only(path, progress=False)
    assert not result.crashed
    assert result.passed == builds, result.summary()


def test_target_opset_drops_an_empty_zero_point_for_11_only():
    """qdq_weights_without_zero_point's dq_w2 names its zero point '' (refused by the 11.x importer);
    for 11 target-opset leaves the input out, for 8.6 it still writes an explicit INT8 zero."""
    from gf_testing import apply_pass, assert_equivalent, assert_idempotent
    model = build("qdq_weights_without_zero_point")
    fixed, result = apply_pass("target-opset", model, trt="11")
    (dq,) = [n for n in fixed.graph.node if n.name == "dq_w2"]
    assert list(dq.input) == ["W2_q", "s2"]
    assert [c.action for c in result.changes] == ["drop-empty-zero-point"]
    assert_equivalent(model, fixed)
    assert_idempotent("target-opset", model, trt="11")
    on_8_6, _ = apply_pass("target-opset", model, trt="8.6")
    (dq,) = [n for n in on_8_6.graph.node if n.name == "dq_w2"]
    assert len(dq.input) == 3 and dq.input[2]


# --- mixed precision on a strongly typed TensorRT -------------------------------------------------------------

@pytest.mark.rtx
@pytest.mark.parametrize("name", ["prec_attention_masks", "prec_layernorm_overflow"])
def test_mixed_precision_model_builds_strongly_typed(saved, tmp_path, name):
    """TensorRT-RTX has no FP16 flag: the FP16 tensors of `fix --precision fp16` are what it builds."""
    import onnx
    report, out = tmp_path / "r.json", tmp_path / "mixed.onnx"
    assert main(["fix", saved(name), "-o", str(out), "--trt", "11", "--precision", "fp16", "--check", "rtx",
                 "--report", str(report), "--quiet"]) == 0
    doc = json.loads(report.read_text())
    (precision,) = [p for p in doc["passes"] if p["name"] == "precision"]
    assert precision["status"] == "applied" and precision["counts"]["nodes_low"] > 0
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in onnx.load(str(out)).graph.initializer)
    (check,) = [c for c in doc["checks"] if c["kind"] == "rtx"]
    assert check["parsed"] and check["built"] and check["label"] == LABEL
