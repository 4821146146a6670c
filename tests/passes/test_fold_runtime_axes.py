"""Slice/Pad parameters computed from shapes fold where only static dims are read (fold-constants
follows a partly static Shape through Concat); Slice axes given as a graph input are reported as
not foldable, with `--freeze` as the way out."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import graphfix
from graphfix.checks.ort import compare_models
from graphfix.diagnose import check_model, format_table
from graphfix.fixtures import build
from gf_testing import apply_pass, assert_idempotent, assert_trt_raw_fails_fixed_matches


def _problems(model, trt="8.6"):
    return [(f.op, f.rule, f.fix_pass) for f in check_model(model, trt=trt).findings if f.severity != "warning"]


def test_slice_axes_and_pad_pads_from_static_dims_fold_to_initializers():
    model = build("fold_runtime_axes")
    assert ("Slice", "const_input", "fold-constants") in _problems(model)
    out, result = apply_pass("fold-constants", model)
    assert [n.op_type for n in out.graph.node] == ["Slice", "Pad"]          # no Shape arithmetic left
    inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    slice_node, pad_node = out.graph.node
    assert inits[slice_node.input[3]].tolist() == [2]
    assert inits[pad_node.input[1]].tolist() == [0, 0, 0, 0, 0, 4]
    assert result.counts["tensors_folded"] == 2                              # axes, pads
    feeds = [{"x": np.random.default_rng(s).standard_normal(shape).astype(np.float32)}
             for s, shape in enumerate([(1, 3, 8), (2, 5, 8)])]            # B and T stay dynamic
    res = compare_models(model, out, feeds=feeds)
    assert res.passed, res.worst()
    assert_idempotent("fold-constants", model)
    assert not _problems(out)


def test_a_dynamic_dim_is_never_folded():
    """The same Concat-then-Gather picking dim 1 (T, dynamic) stays computed."""
    model = build("fold_runtime_axes")
    gather_index = next(t for t in model.graph.initializer if t.name == "two")
    gather_index.CopyFrom(numpy_helper.from_array(np.array(1, np.int64), "two"))
    out, _ = apply_pass("fold-constants", model)
    assert "Gather" in [n.op_type for n in out.graph.node]


def test_axes_given_as_a_graph_input_are_reported_with_the_way_out():
    model = build("slice_axes_graph_input")
    found = [f for f in check_model(model, trt="8.6").findings if f.op == "Slice"]
    assert [(f.severity, f.fix_pass) for f in found] == [("error", None)]
    assert "'axes' is a graph input" in found[0].reason
    table = format_table(check_model(model, trt="8.6"), width=200)
    assert "no automatic fix" in table and "--freeze NAME=VALUE" in table
    fixed, _ = graphfix.fix(model, trt="8.6", check="none")
    assert [(f.op, f.fix_pass) for f in check_model(fixed, trt="8.6").findings if f.severity == "error"] == \
        [("Slice", None)]                                                   # fix cannot do it alone...
    frozen, report = graphfix.fix(model, trt="8.6", freeze={"axes": [1]})
    assert [i.name for i in frozen.graph.input] == ["x"]                     # ...--freeze can
    assert not [f for f in check_model(frozen, trt="8.6").findings if f.severity == "error"]
    x = np.arange(32, dtype=np.float32).reshape(4, 8)
    fed = onnx.load_from_string(model.SerializeToString())
    from graphfix.checks.ort import run_ort
    assert np.array_equal(run_ort(frozen, {"x": x})["y"], run_ort(fed, {"x": x, "axes": np.array([1], np.int64)})["y"])


@pytest.mark.trt
def test_trt_runtime_axes_raw_fails_fixed_builds_and_matches(tmp_path):
    assert_trt_raw_fails_fixed_matches(build("fold_runtime_axes"), tmp_path)
