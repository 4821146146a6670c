"""int64-to-int32: islands narrowed together, Casts only at INT64-only inputs, sentinels, kept islands."""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from graphfix import fix
from graphfix.checks.ort import run_ort
from graphfix.fixtures import build
from gf_testing import added_casts, apply_pass, assert_equivalent, assert_idempotent, elem_types, ops, readers, random_feeds

PASS = "int64-to-int32"
INT32_MAX, INT32_MIN = int(np.iinfo(np.int32).max), int(np.iinfo(np.int32).min)
INT64_FIXTURES = ["int64_slice_sentinels", "int64_shape_reshape", "int64_expand_constantofshape",
                  "int64_out_of_range", "int64_token_ids", "int64_if_outer_scope", "int64_custom_op_boundary",
                  "int64_pad_axes_shared"]


# -- structural helpers ---------------------------------------------------------------------------
def constants(model: onnx.ModelProto) -> Dict[str, np.ndarray]:
    """Initializers and Constant-node values by tensor name."""
    found = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            found[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    return found


def int64_constants_where_int32_allowed(model: onnx.ModelProto) -> List[str]:
    """'node:input' for every INT64 constant read where the op's schema also accepts INT32."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    values = constants(model)
    bad = []
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        schema = onnx.defs.get_schema(node.op_type, opset)
        allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
        for i, name in enumerate(node.input):
            if name not in values or values[name].dtype != np.int64:
                continue
            formal = schema.inputs[min(i, len(schema.inputs) - 1)]
            if "tensor(int32)" in allowed.get(formal.type_str, ()):
                bad.append(f"{node.name}:{name}")
    return bad


def mixed_int_inputs(model: onnx.ModelProto) -> List[str]:
    """Nodes whose INT32 and INT64 inputs share one type variable (what TensorRT >= 9 rejects)."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    types = elem_types(model)
    bad = []
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type in ("If", "Loop", "Scan"):
            continue
        schema = onnx.defs.get_schema(node.op_type, opset)
        by_var: Dict[str, set] = {}
        for i, name in enumerate(node.input):
            if name:
                formal = schema.inputs[min(i, len(schema.inputs) - 1)]
                by_var.setdefault(formal.type_str, set()).add(types.get(name))
        if any({TensorProto.INT32, TensorProto.INT64} <= seen for seen in by_var.values()):
            bad.append(node.name)
    return bad


def check_structure(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    assert mixed_int_inputs(model) == []


# -- the fixtures, one by one ---------------------------------------------------------------------
def test_slice_sentinels_become_int32_limits_without_casts():
    model = build("int64_slice_sentinels")
    fixed, result = apply_pass(PASS, model)
    values = constants(fixed)
    assert added_casts(fixed) == []
    assert all(v.dtype == np.int32 for v in values.values()), {k: v.dtype for k, v in values.items()}
    assert values["s1_ends"].tolist() == [INT32_MAX]
    assert values["s2_ends"].tolist() == [INT32_MIN]
    assert values["to_end"].tolist() == [INT32_MAX]          # reached Slice through a Concat
    assert result.counts["sentinels_clamped"] == 3
    assert result.counts["islands_narrowed"] == 3 and "islands_kept" not in result.counts
    assert result.warnings == []
    check_structure(fixed)
    assert_equivalent(model, fixed)


def test_shape_gather_concat_reshape_gets_casts_only_at_its_boundaries():
    model = build("int64_shape_reshape")
    fixed, result = apply_pass(PASS, model)
    values = constants(fixed)
    added = added_casts(fixed)
    assert len(added) == 2 and result.counts["casts_inserted"] == 2
    to_i32 = [c for c in added if c[2] == TensorProto.INT32]
    to_i64 = [c for c in added if c[2] == TensorProto.INT64]
    assert [c[0] for c in to_i32] == ["sh"]                               # after Shape
    assert [c[0] for c in to_i64] == ["target"]                           # before Reshape's shape
    assert readers(fixed, to_i64[0][1]) == ["reshape"]
    assert values["zero"].dtype == np.int32 and values["minus_one"].dtype == np.int32
    # INT64-only inputs keep INT64 initializers (TensorRT 8.6 needs e.g. Unsqueeze axes as weights)
    assert values["axes0"].dtype == np.int64 and values["fixed_shape"].dtype == np.int64
    assert result.counts["constants_kept_int64"] == 2
    assert int64_constants_where_int32_allowed(fixed) == []
    check_structure(fixed)
    assert_equivalent(model, fixed)


def test_expand_and_constantofshape_shape_inputs_read_a_cast_back_to_int64():
    model = build("int64_expand_constantofshape")
    fixed, result = apply_pass(PASS, model)
    added = added_casts(fixed)
    assert len(added) == 3
    assert sorted(c[0] for c in added if c[2] == TensorProto.INT32) == ["sh"]
    back = {c[1]: c[0] for c in added if c[2] == TensorProto.INT64}
    assert sorted(back.values()) == ["bshape", "s1"]
    shape_readers = sorted(r for out in back for r in readers(fixed, out))
    assert shape_readers == ["expand", "ones"]
    ones = next(n for n in fixed.graph.node if n.op_type == "ConstantOfShape")
    assert ones.attribute[0].t.data_type == TensorProto.INT32          # value retyped, no Cast after it
    types = elem_types(fixed)
    assert types["ids"] == TensorProto.INT32 and types["cs"] == TensorProto.INT32
    assert int64_constants_where_int32_allowed(fixed) == []
    check_structure(fixed)
    assert_equivalent(model, fixed)


def test_out_of_range_constant_keeps_its_island_int64_and_warns():
    model = build("int64_out_of_range")
    fixed, result = apply_pass(PASS, model)
    values = constants(fixed)
    assert values["big"].dtype == np.int64 and values["big"].tolist() == 2 ** 40   # not clamped
    assert values["minus_one"].dtype == np.int64                       # same island: kept too
    assert added_casts(fixed) == []                                          # nothing in that island moved
    assert values["ends"].tolist() == [INT32_MAX]                      # the Slice island still narrowed
    assert values["one_idx"].dtype == np.int32
    assert result.counts["islands_kept"] == 1
    assert len(result.warnings) == 1 and result.warnings[0].startswith("big: kept INT64")
    assert "1099511627776" in result.warnings[0]
    check_structure(fixed)
    assert_equivalent(model, fixed)


def test_int64_graph_input_stays_int64_without_int32_io():
    model = build("int64_token_ids")
    fixed, result = apply_pass(PASS, model)
    io = lambda m: [(v.name, v.type.tensor_type.elem_type) for v in list(m.graph.input) + list(m.graph.output)]
    assert io(fixed) == io(model)
    added = added_casts(fixed)
    assert len(added) == 2
    (ids_cast,) = [c for c in added if c[0] == "input_ids"]
    assert ids_cast[2] == TensorProto.INT32
    assert sorted(readers(fixed, ids_cast[1])) == ["embed_words", "is_pad"]
    (out_cast,) = [c for c in added if c[1] == "position_ids"]        # output keeps name and INT64
    assert out_cast[2] == TensorProto.INT64
    to_long = next(n for n in fixed.graph.node if n.name == "to_long")
    assert to_long.attribute[0].i == TensorProto.INT32                # Cast retargeted, not wrapped
    assert result.counts["casts_retargeted"] == 1
    assert constants(fixed)["red_axes"].dtype == np.int64             # ReduceSum axes: INT64-only
    check_structure(fixed)
    assert_equivalent(model, fixed)


def test_int32_io_changes_int64_graph_inputs_and_outputs():
    model = build("int64_token_ids")
    fixed, result = apply_pass(PASS, model, int32_io=True)
    io = {v.name: v.type.tensor_type.elem_type for v in list(fixed.graph.input) + list(fixed.graph.output)}
    assert io == {"input_ids": TensorProto.INT32, "h": TensorProto.FLOAT,
                  "position_ids": TensorProto.INT32, "best": TensorProto.INT32}
    added = added_casts(fixed)
    assert len(added) == 1 and added[0][1] == "best"                  # ArgMax only makes INT64
    check_structure(fixed)
    feeds = random_feeds(model, seed=3)
    want = run_ort(model, feeds)
    got = run_ort(fixed, {k: v.astype(np.int32) for k, v in feeds.items()})
    for name, ref in want.items():
        np.testing.assert_allclose(got[name].astype(ref.dtype), ref, rtol=1e-5, atol=1e-6)
    assert_idempotent(PASS, model, int32_io=True)


def test_op_without_schema_is_a_boundary_that_keeps_int64():
    model = build("int64_custom_op_boundary")
    fixed, result = apply_pass(PASS, model)
    added = added_casts(fixed)
    assert len(added) == 2
    (back,) = [c for c in added if c[2] == TensorProto.INT64]
    assert back[0] == "shp" and sorted(readers(fixed, back[1])) == ["custom", "reshape"]
    assert constants(fixed)["extra"].dtype == np.int32
    check_structure(fixed)
    assert_equivalent(model, fixed)
    assert_idempotent(PASS, model)


def test_subgraph_reads_from_outer_scope_get_int64():
    model = build("int64_if_outer_scope")
    fixed, result = apply_pass(PASS, model)
    added = added_casts(fixed)
    assert len(added) == 2
    (back,) = [c for c in added if c[2] == TensorProto.INT64]
    branch = next(n for n in fixed.graph.node if n.op_type == "If")
    inner_reads = {i for a in branch.attribute for n in a.g.node for i in n.input}
    assert back[1] in inner_reads and "shp" not in inner_reads
    cast_back = next(n.name for n in fixed.graph.node if back[1] in n.output)
    assert sorted(readers(fixed, "shp")) == sorted([cast_back, "to_float"])   # Cast(FLOAT) reads INT32
    check_structure(fixed)
    assert_equivalent(model, fixed)


def test_example_model_leaves_no_int64_constant_where_int32_is_allowed():
    model = build("example_encoder_block")
    fixed, result = apply_pass(PASS, model)
    assert int64_constants_where_int32_allowed(model) != []
    assert int64_constants_where_int32_allowed(fixed) == []
    assert result.counts["sentinels_clamped"] == 1
    check_structure(fixed)
    assert_equivalent(model, fixed)


def test_pad_axes_keep_an_int64_copy_while_gather_and_slice_read_int32():
    """Regression (node tests test_center_crop_pad_crop_axes_*_expanded, test_attention_4d_diff_heads_
    mask4d_padded_kv_expanded): Pad's axes are typed Tind, yet ONNX shape inference parses a constant
    there as INT64 only; narrowed, it failed with "ParseData type mismatch" and the pass rolled back."""
    model = build("int64_pad_axes_shared")
    fixed, result = apply_pass(PASS, model)
    values = constants(fixed)
    pad = next(n for n in fixed.graph.node if n.op_type == "Pad")
    crop = next(n for n in fixed.graph.node if n.op_type == "Slice")
    assert values[pad.input[3]].dtype == np.int64 and values[pad.input[3]].tolist() == [1, 2]
    assert pad.input[3] != "axes" and result.counts["constants_copied"] == 1
    assert values["axes"].dtype == np.int32 and crop.input[3] == "axes"
    assert readers(fixed, "axes") == ["take_hw", "take_phw", "crop"]
    types = elem_types(fixed)
    assert [types[t] for t in crop.input[1:]] == [TensorProto.INT32] * 3    # one type for Slice's Tind
    assert types[pad.input[1]] == TensorProto.INT64                         # pads: INT64-only, a Cast back
    onnx.shape_inference.infer_shapes(fixed, strict_mode=True, data_prop=True)
    check_structure(fixed)
    assert_equivalent(model, fixed)
    assert_idempotent(PASS, model)


# -- properties over all fixtures -----------------------------------------------------------------
@pytest.mark.parametrize("name", INT64_FIXTURES + ["example_encoder_block"])
@pytest.mark.parametrize("int32_io", [False, True])
def test_idempotent(name, int32_io):
    assert_idempotent(PASS, build(name), int32_io=int32_io)


@pytest.mark.parametrize("name", INT64_FIXTURES + ["example_encoder_block"])
@pytest.mark.parametrize("trt", ["9.0", "10.0", "10.3"])
def test_int64_native_targets_are_left_alone(name, trt):
    model = build(name)
    fixed, result = apply_pass(PASS, model, trt=trt, int32_io=True)
    assert not result.modified and result.warnings == [] and result.counts == {}
    assert ops(fixed) == ops(model)
    assert [t.data_type for t in fixed.graph.initializer] == [t.data_type for t in model.graph.initializer]


def test_pipeline_runs_it_for_8_6_and_skips_it_for_10():
    model = build("int64_shape_reshape")
    fixed, report = fix(model, trt="8.6", passes=[PASS])
    (rec,) = [p for p in report.passes if p.name == PASS]
    assert rec.status == "applied" and report.ok, report.summary()
    assert rec.check["passed"]
    _, report10 = fix(model, trt="10.3", passes=[PASS])
    (rec10,) = [p for p in report10.passes if p.name == PASS]
    assert rec10.status == "skipped"


# -- on real TensorRT (the rig): `pytest tests/passes/test_int64_to_int32.py -m trt` ------------------
TRT_INT64_FIXTURES = ["int64_slice_sentinels", "int64_shape_reshape", "int64_expand_constantofshape",
                      "int64_out_of_range", "int64_token_ids", "int64_if_outer_scope", "example_encoder_block"]


@pytest.mark.trt
@pytest.mark.parametrize("name", TRT_INT64_FIXTURES)
def test_trt_parses_and_matches_onnx_runtime(name, tmp_path):
    """The narrowed model parses with no clamping (but where the pass warned), builds and matches ORT."""
    from graphfix.checks.tensorrt.trt import build_and_compare, parse_in_subprocess
    from graphfix.checks.tensorrt.env import trt_version
    version = trt_version()
    model = build(name)
    fixed, result = apply_pass(PASS, model, trt=version)
    raw_path, fixed_path = str(tmp_path / "raw.onnx"), str(tmp_path / "fixed.onnx")
    onnx.save(model, raw_path)
    onnx.save(fixed, fixed_path)
    parse = parse_in_subprocess(fixed_path, timeout=300)
    assert parse.parsed, parse.errors
    clamped = [w for w in parse.warnings if "clamped" in w]
    if not result.modified:        # TensorRT >= 9: the pass leaves the model alone
        return
    if name == "int64_out_of_range":
        assert result.warnings and clamped, parse.warnings   # the kept island: warned by both
        return
    assert clamped == [], clamped
    if name == "int64_slice_sentinels":                      # every INT64 weight was narrowed
        # not judged by the parser's "generated with INT64 weights" notice: 8.6 prints it for
        # models without any INT64 tensor too, when it materializes Slice's shape arithmetic
        # (ShapeTensor::tensor calls convertINT64 on its own int64 values; seen on the rig)
        int64_left = [k for k, v in constants(fixed).items() if v.dtype == np.int64]
        assert int64_left == [], int64_left
    compared = build_and_compare(raw_path, fixed_path, timeout=600, progress=False)
    assert compared.passed, compared.detail


def test_type_inference_is_linear_on_a_reversed_chain(monkeypatch):
    """Element types flow along a 2,000-node chain stored last-first: each node is looked at a
    bounded number of times (sweeping until nothing changes looked at it ~2,000 times)."""
    from graphfix.fixtures.scale import long_chain
    from graphfix.graph_utils import to_graph
    from graphfix.passes import _type_islands
    calls = []
    real = _type_islands.node_slots
    monkeypatch.setattr(_type_islands, "node_slots", lambda node, opset: calls.append(1) or real(node, opset))
    graph = to_graph(long_chain(2000, reverse=True))
    types = _type_islands.infer_elem_types(graph)
    assert types["t1"] == types[f"t{1998}"] == onnx.TensorProto.INT64 and types["y"] == onnx.TensorProto.FLOAT
    assert len(calls) <= len(graph.nodes)


def test_long_reversed_chain_is_narrowed_as_one_island():
    from graphfix.fixtures.scale import long_chain
    model = long_chain(2000, reverse=True)
    fixed, result = apply_pass("int64-to-int32", model)
    assert result.counts["islands_narrowed"] == 1 and result.counts["tensors_narrowed"] >= 1998
    assert_equivalent(long_chain(2000, reverse=False), fixed)
