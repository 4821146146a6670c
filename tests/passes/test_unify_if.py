"""unify-if: Ifs that static shapes decide are inlined (nested in branches too), outputs that differ
only in static dims are padded and sliced back, the rest is reported; check predicts each case."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from graphfix.checks.ort import compare_models
from graphfix.diagnose import check_model
from graphfix.fixtures import build
from gf_testing import apply_pass, assert_idempotent, assert_trt_raw_fails_fixed_matches

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
    assert len(node.output) == 1                           # no shape tensor through the conditional
    branches = {a.name: a.g for a in node.attribute}
    for name, pad in (("then_branch", False), ("else_branch", True)):
        ops = [n.op_type for n in branches[name].node]
        assert ("Pad" in ops) == pad                       # only the smaller branch pads
        out_dims = [d.dim_value for d in branches[name].output[0].type.tensor_type.shape.dim]
        assert out_dims == [2, 6]
    where = next(n for n in out.graph.node if n.op_type == "Where")
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in out.graph.initializer}
    assert where.input[0] == node.input[0] and inits[where.input[1]].tolist() == [6] \
        and inits[where.input[2]].tolist() == [3]           # the true width, chosen outside the If
    sl = next(n for n in out.graph.node if n.op_type == "Slice")
    assert sl.input[0] == node.output[0] and sl.input[2] == where.output[0] and sl.output[0] == "y"
    assert inits[sl.input[3]].tolist() == [1]              # only the axis that differs
    onnx.checker.check_model(out)
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    feeds = [{"x": x, "mode": np.array(m, np.int64)} for m in (1, -1)]   # one run per branch
    same_outputs(model, out, feeds)
    assert_idempotent(PASS, model)


def test_sizes_that_depend_on_float_data_are_reported_not_rewritten():
    model = build("if_dims_differ_on_data")
    out, result = apply_pass(PASS, model)
    assert not result.modified and "float" in result.warnings[0]
    found = [f for f in check_model(model, trt="8.6").findings if f.rule == "if_branch_shapes"]
    assert [(f.severity, f.fix_pass) for f in found] == [("error", None)]


def test_the_11_line_keeps_outputs_of_one_rank():
    """TensorRT-RTX 1.7 (parser 11.x) parsed and built if_static_dims_differ as it is: no padding there."""
    out, result = apply_pass(PASS, build("if_static_dims_differ"), trt="11.0")
    assert not result.modified
    assert not [f for f in check_model(build("if_static_dims_differ"), trt="11.0").findings
                if f.rule == "if_branch_shapes"]
    ranks = [f for f in check_model(build("if_rank_depends_on_input"), trt="11.0").findings
             if f.rule == "if_branch_shapes"]
    assert [(f.severity, f.fix_pass) for f in ranks] == [("error", None)] and "different ranks" in ranks[0].reason
    assert not [f for f in check_model(build("if_nested_shape_tests"), trt="11.0").findings
                if f.rule == "if_branch_shapes"]       # conditions static shapes decide: 11.x resolves them


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


def test_inlined_node_names_stay_unique():
    """Exporters reuse node names across branches and the main graph; the check wants them unique."""
    from onnx import TensorProto as T, helper
    from graphfix.fixtures._make import const, make_model, vi
    then = helper.make_graph([helper.make_node("Neg", ["x"], ["a"], name="neg")], "then", [], [vi("a", T.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Abs", ["x"], ["b"], name="abs")], "else", [], [vi("b", T.FLOAT, [2])])
    model = make_model([helper.make_node("Neg", ["x"], ["x2"], name="neg"),
                        helper.make_node("If", ["flag"], ["y"], name="if", then_branch=then, else_branch=other)],
                       [vi("x", T.FLOAT, [2])], [vi("y", T.FLOAT, [2]), vi("x2", T.FLOAT, [2])],
                       [const("flag", True, np.bool_)])
    out, _ = apply_pass(PASS, model)
    names = [n.name for n in out.graph.node]
    assert names == ["neg", "gf.unify-if.0.neg"]
    same_outputs(model, out, [{"x": np.array([1.5, -2.0], np.float32)}])


@pytest.mark.parametrize("name, fix", [("if_nested_shape_tests", "unify-if"), ("if_static_dims_differ", "unify-if"),
                                       ("if_rank_depends_on_input", None)])
def test_check_predicts_the_parser_error_and_its_fix(name, fix):
    found = [f for f in check_model(build(name), trt="8.6").findings if f.rule == "if_branch_shapes"]
    assert found and all(f.severity == "error" and f.fix_pass == fix for f in found)
    assert all("must have the same shape" in f.reason for f in found)
    if fix is None:
        assert "--static-shapes" in found[0].reason and "--freeze" in found[0].reason


@pytest.mark.parametrize("name", ["if_nested_shape_tests", "if_static_dims_differ"])
def test_check_is_clean_of_if_findings_after_fix(name):
    import graphfix
    fixed, _ = graphfix.fix(build(name), trt="8.6", check="none")
    assert not [f for f in check_model(fixed, trt="8.6").findings if f.rule == "if_branch_shapes"]


@pytest.mark.trt
def test_trt_nested_shape_tests_raw_fails_fixed_builds_and_matches(tmp_path):
    """On TensorRT 8.6: the raw model stops at the nested Ifs (ranks differ under conditions the
    8.6 importer does not resolve); the fixed one parses, builds, runs and matches ONNX Runtime."""
    assert_trt_raw_fails_fixed_matches(build("if_nested_shape_tests"), tmp_path)


@pytest.mark.trt
def test_trt_padded_outputs_parse(tmp_path):
    """On TensorRT 8.6: the raw If (then [2,6], else [2,3]) is refused by the parser; the padded one
    parses. (Not built here: its size now depends on the configuration input `mode`, which makes
    `mode` a shape-tensor input whose values the optimization profile must give, and graphfix's
    TensorRT check does not set shape-input values yet.)"""
    import graphfix
    from graphfix.checks.tensorrt.trt import parse_in_subprocess
    raw = build("if_static_dims_differ")
    fixed, _ = graphfix.fix(raw, trt="8.6")
    raw_path, fixed_path = str(tmp_path / "raw.onnx"), str(tmp_path / "fixed.onnx")
    onnx.save(raw, raw_path)
    onnx.save(fixed, fixed_path)
    before, after = parse_in_subprocess(raw_path), parse_in_subprocess(fixed_path)
    assert not before.parsed and any(e["op"] == "If" for e in before.errors), before.errors
    assert after.parsed and not after.errors, after.errors
