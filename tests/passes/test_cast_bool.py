"""cast-bool: bool chains through Myelin-unsafe ops run as INT32, one Cast in and one Cast back."""
from __future__ import annotations

import dataclasses
from typing import List

import onnx
import pytest
from onnx import TensorProto

from graphfix import fix
from graphfix.fixtures import build
from graphfix.profiles import load_profile
from gf_testing import added_casts, apply_pass, assert_equivalent, assert_idempotent, elem_types, ops, readers

PASS = "cast-bool"
BOOL_FIXTURES = ["bool_mask_data_movement", "bool_equal", "gpt2_causal_mask", "bert_attention_mask",
                 "bool_constant_shared", "example_encoder_block"]








def bool_reads(model: onnx.ModelProto, op_types) -> List[str]:
    """'node:tensor' for each bool tensor read by one of `op_types` (what TensorRT refuses)."""
    types = elem_types(model)
    return [f"{n.name}:{i}" for n in model.graph.node if n.op_type in op_types
            for i in n.input if i and types.get(i) == TensorProto.BOOL]


def readers_of_reshape(model: onnx.ModelProto) -> List[str]:
    return list(next(n for n in model.graph.node if n.op_type == "Reshape").input)


MYELIN_UNSAFE = load_profile("8.6").myelin_bool_unsafe_ops


def test_mask_through_six_data_movement_ops_needs_three_casts():
    model = build("bool_mask_data_movement")
    assert len(bool_reads(model, MYELIN_UNSAFE)) == 7
    fixed, result = apply_pass(PASS, model)
    assert bool_reads(fixed, MYELIN_UNSAFE) == []
    added = added_casts(fixed)
    assert len(added) == 3 and result.counts == {"chains": 1, "tensors_retyped": 7, "casts_inserted": 3,
                                                  "constants_copied": 0}
    (entry,) = [c for c in added if c[2] == TensorProto.INT32]
    assert entry[0] == "mask"                                          # one Cast in, at the start
    back = {c[1]: c[0] for c in added if c[2] == TensorProto.BOOL}
    assert "mask_t" in back                                            # the output keeps its name ...
    assert back["mask_t"] in readers_of_reshape(fixed)                 # ... the chain goes on in INT32
    (cond,) = [out for out, src in back.items() if src == "m6"]        # Where's condition
    assert readers(fixed, cond) == ["where"]
    out = {v.name: v.type.tensor_type.elem_type for v in fixed.graph.output}
    assert out["mask_t"] == TensorProto.BOOL                           # ... and its type
    pad = next(t for t in fixed.graph.initializer if t.name == "pad_rows")
    assert pad.data_type == TensorProto.INT32                          # constant retyped, no Cast
    onnx.checker.check_model(fixed, full_check=True)
    assert_equivalent(model, fixed)


def test_bool_equal_is_cast_on_8_6_only():
    model = build("bool_equal")
    fixed, result = apply_pass(PASS, model, trt="8.6")
    assert bool_reads(fixed, ["Equal"]) == []
    added = added_casts(fixed)
    assert sorted(c[0] for c in added) == ["p", "q"] and all(c[2] == TensorProto.INT32 for c in added)
    assert "p" in next(n.input for n in fixed.graph.node if n.name == "where_p")  # still reads bool p
    onnx.checker.check_model(fixed, full_check=True)
    assert_equivalent(model, fixed)
    fixed10, result10 = apply_pass(PASS, model, trt="10.3")                 # 10.x: Equal takes bool
    assert not result10.modified and ops(fixed10) == ops(model)


def test_gpt2_causal_mask_buffer_is_retyped_not_cast():
    model = build("gpt2_causal_mask")
    fixed, result = apply_pass(PASS, model)
    bias = next(t for t in fixed.graph.initializer if t.name == "bias")
    assert bias.data_type == TensorProto.INT32
    added = added_casts(fixed)
    assert added == [("causal", added[0][1], TensorProto.BOOL)]        # only the Cast back
    assert readers(fixed, added[0][1]) == ["where"]
    assert bool_reads(fixed, MYELIN_UNSAFE) == []
    onnx.checker.check_model(fixed, full_check=True)
    assert_equivalent(model, fixed)


def test_bert_attention_mask_chain_gets_one_cast_in_and_one_back():
    model = build("bert_attention_mask")
    fixed, result = apply_pass(PASS, model)
    added = added_casts(fixed)
    assert sorted((c[0], c[2]) for c in added) == [("m3", TensorProto.BOOL), ("mb", TensorProto.INT32)]
    assert len(added) == 2                                             # not a pair per node (6)
    back = next(c for c in added if c[2] == TensorProto.BOOL)
    assert readers(fixed, back[1]) == ["not"]
    assert bool_reads(fixed, MYELIN_UNSAFE) == []
    onnx.checker.check_model(fixed, full_check=True)
    assert_equivalent(model, fixed)


def test_shared_bool_constant_gets_a_bool_copy_for_its_bool_reader():
    model = build("bool_constant_shared")
    fixed, result = apply_pass(PASS, model)
    types = elem_types(fixed)
    assert types["keep"] == TensorProto.INT32
    where_keep = next(n for n in fixed.graph.node if n.name == "where_keep")
    assert types[where_keep.input[0]] == TensorProto.BOOL and where_keep.input[0] != "keep"
    assert result.counts["constants_copied"] == 1 and result.counts["casts_inserted"] == 1
    onnx.checker.check_model(fixed, full_check=True)
    assert_equivalent(model, fixed)


@pytest.mark.parametrize("name", BOOL_FIXTURES)
@pytest.mark.parametrize("trt", ["8.6", "10.3"])
def test_idempotent(name, trt):
    assert_idempotent(PASS, build(name), trt=trt)


@pytest.mark.parametrize("name", BOOL_FIXTURES)
def test_equivalent_on_10(name):
    model = build(name)
    fixed, _ = apply_pass(PASS, model, trt="10.3")
    onnx.checker.check_model(fixed, full_check=True)
    assert_equivalent(model, fixed)


def test_ops_come_from_the_profile(monkeypatch):
    import graphfix.passes.cast_bool as cast_bool
    real = load_profile("8.6")
    only_slice = dataclasses.replace(real, myelin_bool_unsafe_ops=frozenset({"Slice"}),
                                     bool_rejecting_ops=frozenset())
    monkeypatch.setattr(cast_bool, "load_profile", lambda version: only_slice)
    model = build("bool_mask_data_movement")
    fixed, result = apply_pass(PASS, model)
    assert result.counts["chains"] == 1
    assert bool_reads(fixed, ["Slice"]) == []
    assert bool_reads(fixed, ["Unsqueeze"]) != []                      # not listed: left bool
    assert_equivalent(model, fixed)
    nothing = dataclasses.replace(real, myelin_bool_unsafe_ops=frozenset(), bool_rejecting_ops=frozenset())
    monkeypatch.setattr(cast_bool, "load_profile", lambda version: nothing)
    _, result = apply_pass(PASS, model)
    assert not result.modified


def test_pipeline_runs_int64_then_bool_on_the_example():
    model = build("example_encoder_block")
    fixed, report = fix(model, trt="8.6", passes=["int64-to-int32", "cast-bool"])
    status = {p.name: p.status for p in report.passes}
    assert status == {"int64-to-int32": "applied", "cast-bool": "applied"}, report.summary()
    assert report.ok, report.summary()
    assert bool_reads(fixed, MYELIN_UNSAFE) == []


# -- on real TensorRT (the rig): `pytest tests/passes/test_cast_bool.py -m trt` -----------------------
@pytest.mark.trt
@pytest.mark.parametrize("name", BOOL_FIXTURES)
def test_trt_builds_and_matches_onnx_runtime(name, tmp_path):
    """After int64-to-int32 (where the target needs it) and cast-bool the model builds and matches ORT."""
    from graphfix.checks.tensorrt.trt import build_and_compare
    from graphfix.checks.tensorrt.env import trt_version
    model = build(name)
    fixed, report = fix(model, trt=trt_version(), passes=["int64-to-int32", "cast-bool"], check="ort")
    assert report.ok, report.summary()
    raw_path, fixed_path = str(tmp_path / "raw.onnx"), str(tmp_path / "fixed.onnx")
    onnx.save(model, raw_path)
    onnx.save(fixed, fixed_path)
    compared = build_and_compare(raw_path, fixed_path, timeout=600, progress=False)
    assert compared.passed, compared.detail
    assert not any("requires bool I/O" in w for w in compared.warnings + compared.log_tail)
