"""unify-if: Ifs that static shapes decide are inlined (nested in branches too), outputs that differ
only in static dims are padded and sliced back, the rest is reported; check predicts each case."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from graphfix.checks.ort import compare_models
from graphfix.diagnose import check_model
from graphfix.fixtures import build
from gf_testing import apply_pass, assert_idempotent

PASS = "unify-if"


def count_ifs(graph: onnx.GraphProto) -> int:
    return sum((n.op_type == "If") + sum(count_ifs(a.g) for a in n.attribute if a.type == onnx.AttributeProto.GRAPH)
               for n in graph.node)


def same_outputs(before, after, feeds):
    result = compare_models(before, after, feeds=feeds)
    assert result.passed, result.worst()


def test_nested_shape_tests_are_inlined_and_the_outer_if_stays():
    model = build("if_nested_shape_tests")
    out, result = apply_pass(PASS, model)
    assert count_ifs(model.graph) == 4
    assert count_ifs(out.graph) == 1                       # the sample-rate If keeps its run-time condition
    assert [n.op_type for n in out.graph.node] == ["Equal", "If"]
    inlined = sorted(c.target for c in result.changes if c.action == "inline-if")
    assert inlined == ["hi_sq/If", "hi_ub/If", "lo_ub/If"]
    assert result.counts["ifs_inlined"] == 3
    branches = {a.name: [n.op_type for n in a.g.node] for a in out.graph.node[1].attribute}
    assert "Squeeze" in branches["then_branch"] and "Unsqueeze" in branches["then_branch"]   # taken ones
    assert "Identity" not in branches["then_branch"] + branches["else_branch"]
    onnx.checker.check_model(out)
    x = np.random.default_rng(0).standard_normal((3, 4, 6)).astype(np.float32)
    same_outputs(model, out, [{"x": x, "sr": np.array(sr, np.int64)} for sr in (16000, 8000)])
    assert_idempotent(PASS, model)


def test_static_dims_that_differ_are_padded_and_sliced_back():
    model = build("if_static_dims_differ")
    out, result = apply_pass(PASS, model)
    assert [c.action for c in result.changes] == ["pad-if-outputs"]
    assert result.changes[0].details["outputs"] == [["y", "[2,6]", "[2,3]"]]
    node = next(n for n in out.graph.node if n.op_type == "If")
    assert len(node.output) == 2                           # padded value, true shape
    branches = {a.name: a.g for a in node.attribute}
    for name, pad in (("then_branch", False), ("else_branch", True)):
        ops = [n.op_type for n in branches[name].node]
        assert ("Pad" in ops) == pad and "Shape" in ops    # only the smaller branch pads
        out_dims = [d.dim_value for d in branches[name].output[0].type.tensor_type.shape.dim]
        assert out_dims == [2, 6]
    sl = next(n for n in out.graph.node if n.op_type == "Slice")
    assert sl.input[0] == node.output[0] and sl.input[2] == node.output[1] and sl.output[0] == "y"
    onnx.checker.check_model(out)
    x = np.abs(np.random.default_rng(1).standard_normal((2, 8))).astype(np.float32)
    feeds = [{"x": x}, {"x": -x}]                          # one run per branch
    same_outputs(model, out, feeds)
    assert_idempotent(PASS, model)


def test_rank_that_depends_on_a_runtime_size_is_reported_not_rewritten():
    model = build("if_rank_depends_on_input")
    out, result = apply_pass(PASS, model)
    assert not result.modified
    assert len(result.warnings) == 1 and "rank" in result.warnings[0] and "--freeze" in result.warnings[0]
    assert out.SerializeToString() == apply_pass(PASS, out)[0].SerializeToString()


def test_constant_condition_is_inlined():
    """An If on a constant (what --freeze or fold-constants leaves) goes too: until then shape
    inference cannot tell the rank of its outputs, which later shape tests read."""
    from onnx import TensorProto as T, helper
    from graphfix.fixtures._make import const, make_model, vi
    then = helper.make_graph([helper.make_node("Neg", ["x"], ["a"], name="neg")], "then", [], [vi("a", T.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Abs", ["x"], ["b"], name="abs")], "else", [], [vi("b", T.FLOAT, [2])])
    model = make_model([helper.make_node("If", ["flag"], ["y"], name="if", then_branch=then, else_branch=other)],
                       [vi("x", T.FLOAT, [2])], [vi("y", T.FLOAT, [2])], [const("flag", True, np.bool_)])
    out, result = apply_pass(PASS, model)
    assert [n.op_type for n in out.graph.node] == ["Neg"] and out.graph.node[0].output[0] == "y"
    same_outputs(model, out, [{"x": np.array([1.5, -2.0], np.float32)}])


@pytest.mark.parametrize("name, fix", [("if_nested_shape_tests", "unify-if"), ("if_static_dims_differ", "unify-if"),
                                       ("if_rank_depends_on_input", None)])
def test_check_predicts_the_parser_error_and_its_fix(name, fix):
    found = [f for f in check_model(build(name), trt="8.6").findings if f.rule == "if_branch_shapes"]
    assert found and all(f.severity == "error" and f.fix_pass == fix for f in found)
    assert all("must have the same shape" in f.reason for f in found)
    if fix is None:
        assert "static input shapes" in found[0].reason and "--freeze" in found[0].reason


@pytest.mark.parametrize("name", ["if_nested_shape_tests", "if_static_dims_differ"])
def test_check_is_clean_of_if_findings_after_fix(name):
    import graphfix
    fixed, _ = graphfix.fix(build(name), trt="8.6", check="none")
    assert not [f for f in check_model(fixed, trt="8.6").findings if f.rule == "if_branch_shapes"]


@pytest.mark.trt
@pytest.mark.parametrize("name", ["if_nested_shape_tests", "if_static_dims_differ"])
def test_trt_raw_fails_fixed_builds_and_matches(name, tmp_path):
    """On TensorRT 8.6: the raw model stops at the If (different branch shapes); the fixed one parses,
    builds, runs and matches ONNX Runtime on the original."""
    import graphfix
    from graphfix.checks.trt import build_and_compare
    raw = build(name)
    fixed, report = graphfix.fix(raw, trt="8.6")
    raw_path, fixed_path = str(tmp_path / "raw.onnx"), str(tmp_path / "fixed.onnx")
    onnx.save(raw, raw_path)
    onnx.save(fixed, fixed_path)
    before = build_and_compare(raw_path, raw_path, progress=False)
    after = build_and_compare(raw_path, fixed_path, progress=False)
    assert not before.passed, before.summary()
    assert after.passed, after.summary() + "\n" + report.summary()
