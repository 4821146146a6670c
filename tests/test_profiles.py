"""The TensorRT version profiles: which file answers which version, and that the facts hang together."""
from __future__ import annotations

import json
import os

import onnx
import pytest

from graphfix.diagnosis import PREDICATES as RULES
from graphfix.profiles import SEVERITIES, Profile, all_profiles, load_profile, resolve_value
from graphfix.remedies import rule_passes_for_finding
from graphfix.target import TrtVersion

PROFILE_DIR = os.path.dirname(__import__("graphfix.profiles", fromlist=["x"]).__file__)
FILES = sorted(f for f in os.listdir(PROFILE_DIR) if f.startswith("trt-") and f.endswith(".json"))
VERSIONS = ["8.6", "9.0", "9.3", "10.0", "10.3", "10.8", "10.12", "10.15", "11.0", "11.3"]
ONNX_DTYPES = set(onnx.TensorProto.DataType.keys())


def _raw(name):
    with open(os.path.join(PROFILE_DIR, name)) as f:
        return json.load(f)


@pytest.mark.parametrize("version, line", [("8.5", "8.6"), ("8.6", "8.6"), ("8.6.1", "8.6"), ("9.2", "9"),
                                           ("10.0", "10"), ("10.13.3", "10"), ("11.1", "11"), ("12.0", "11")])
def test_load_profile_picks_the_line(version, line):
    profile = load_profile(version)
    assert isinstance(profile, Profile)
    assert profile.line == line


def test_all_profiles_one_per_file_oldest_first():
    lines = [p.line for p in all_profiles()]
    assert lines == ["8.6", "9", "10", "11"]
    assert len(lines) == len(FILES)


def test_int64_native_from_9():
    assert load_profile("8.6").int64_native is False
    assert all(load_profile(v).int64_native for v in ("9.0", "10.0", "11.0"))


def test_max_opset_per_version():
    assert load_profile("8.6").max_opset == 17
    assert load_profile("9.3").max_opset == 19
    assert load_profile("10.0").max_opset == 20
    assert load_profile("10.15").max_opset == 24
    assert load_profile("11.0").max_opset == 25
    opsets = [load_profile(v).max_opset for v in VERSIONS]
    assert opsets == sorted(opsets), "newer TensorRT never imports a lower opset"


def test_existing_fields_keep_their_meaning():
    p86 = load_profile("8.6")
    assert {"Equal", "Greater", "Add"} <= p86.bool_rejecting_ops
    assert "Slice" in p86.myelin_bool_unsafe_ops
    assert load_profile("10.0").bool_rejecting_ops == frozenset()


def test_einsum_ellipsis_supported_from_10_12():
    def checks(v):
        return [r["check"] for r in load_profile(v).op("Einsum").get("rules", [])]
    assert "einsum_features" in checks("8.6")
    assert "einsum_features" in checks("10.11")
    assert "einsum_features" not in checks("10.12")


def test_ops_added_inside_the_10_line():
    assert not load_profile("10.13").imports("Attention")
    assert load_profile("10.14").imports("Attention")
    assert not load_profile("10.3").imports("STFT")
    assert load_profile("10.5").imports("STFT")
    assert not load_profile("10.0").imports("Swish") and load_profile("11.0").imports("Swish")


def test_8_6_facts_from_the_importer():
    p = load_profile("8.6")
    assert not p.imports("CastLike") and not p.imports("Gelu") and not p.imports("Hardmax")
    assert p.imports("LayerNormalization") and p.imports("GridSample")
    assert p.narrowed_dtypes == {"INT64": "INT32", "DOUBLE": "FLOAT"}
    assert p.effective_dtype("INT64") == "INT32"
    assert "UINT8" in p.io_only_dtypes and "INT8" in p.quantized_only_dtypes
    scatter = [r for r in p.op("ScatterElements")["rules"] if r.get("attr") == "reduction"]
    assert scatter and scatter[0]["severity"] == "wrong-result"
    # from the rig (2026-11-21, H200): NMS built and ran on 8.6.0; the 'Invalid Context' error is a
    # warning now (was an error), and several classes come out in another order
    nms = {r["check"]: r for r in p.op("NonMaxSuppression")["rules"]}
    assert nms["always"]["severity"] == "warning"
    # which pass fixes it is the plugin rule's declaration (graphfix.remedies), not profile data
    assert rule_passes_for_finding("NonMaxSuppression", "always", p.version) == ["plugins"]
    assert rule_passes_for_finding("NonMaxSuppression", "dim_equals", p.version) == []
    assert nms["dim_equals"]["severity"] == "wrong-result"
    assert any(r["check"] == "attr_missing" and r["attr"] == "upper" for r in p.op("Trilu")["rules"])
    logsum = [r["check"] for r in p.op("ReduceLogSum")["rules"]]
    assert "const_input" in logsum and "reduce_axes_ignored" not in logsum
    assert p.extra["io_only_consumers"] == ["Cast", "Equal"]


def test_versioned_value_resolution():
    value = [{"since": "10.0", "value": 20}, {"since": "10.6", "value": 22}, {"below": "10.0", "value": 1}]
    assert resolve_value(value, TrtVersion.parse("10.5")) == 20
    assert resolve_value(value, TrtVersion.parse("10.6")) == 22
    assert resolve_value(value, TrtVersion.parse("9.0")) == 1
    assert resolve_value([1, 2], TrtVersion.parse("10.0")) == [1, 2]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_rule_is_well_formed(version):
    p = load_profile(version)
    for op, entry in p.ops.items():
        for dtype in entry.get("types") or []:
            assert dtype in ONNX_DTYPES, (op, dtype)
        for rule in entry.get("rules", []):
            assert rule["check"] in RULES, (op, rule["check"])
            assert rule["severity"] in SEVERITIES, (op, rule)
            assert "fix" not in rule, (op, rule)   # remedies live with the passes (graphfix.remedies)
            assert rule["reason"], (op, rule)
            assert rule["source"] in p.citations, (op, rule["source"])
        src = entry.get("source")
        assert src is None or src in p.citations, (op, src)
    for name in p.bool_rejecting_ops | p.myelin_bool_unsafe_ops:
        assert p.imports(name), name
    for dtype in p.native_dtypes | p.io_only_dtypes | p.quantized_only_dtypes | set(p.narrowed_dtypes):
        assert dtype in ONNX_DTYPES


@pytest.mark.parametrize("name", FILES)
def test_profile_files_cite_what_they_use(name):
    data = _raw(name)
    assert data["sources"] and data["citations"]
    for entry in data["ops"].values():
        for rule in entry.get("rules", []):
            assert set(rule) >= {"check", "severity", "reason", "source"} and "fix" not in rule
            for bound in ("since", "below"):
                if bound in rule:
                    TrtVersion.parse(rule[bound])


def test_profiles_are_cached_and_immutable():
    assert load_profile("10.3") is load_profile("10.3.1")
    with pytest.raises(Exception):
        load_profile("8.6").max_opset = 99
