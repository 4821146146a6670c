"""The table of remedies (graphfix/remedies.py): every row resolves to a registered pass or rule,
every pass declares its rows, nothing else names a pass as a fix, and a rule added at run time is
picked up by `check` and the fix loop with no other change."""
from __future__ import annotations

import ast
import os

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from graphfix import remedies
from graphfix.diagnosis import PREDICATES, check_model
from graphfix.fix_loop import passes_for_error
from graphfix.fixtures._make import make_model, vi
from graphfix.plugin_rules import DECOMPOSE, Rule, get_rule, register_rule, unregister_rule
from graphfix.registry import PIPELINE_ORDER, registered

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "graphfix")
# passes that fix nothing `check` or the parser reports: their declaration is an explicit ()
HOUSEKEEPING = {"cleanup": "dead nodes after rewrites"}   # normalize also writes out defaults (attr_missing)


def _checker_kinds():
    """The finding kinds the checker emits: the last argument of each self.add(...) call."""
    tree = ast.parse(open(os.path.join(PACKAGE, "diagnosis", "checker.py")).read())
    kinds = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add" \
                and node.args and isinstance(node.args[-1], ast.Constant):
            kinds.add(node.args[-1].value)
    return kinds


def _checker_fixes():
    """The fix argument (5th) of every self.add(...) call in the checker, as source text."""
    path = os.path.join(PACKAGE, "diagnosis", "checker.py")
    source = open(path).read()
    tree = ast.parse(source)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "add" and isinstance(n.func.value, ast.Name) and n.func.value.id == "self"]
    # self.add(node, op, severity, reason, fix, ...) or self.add(*where, severity, reason, fix, ...)
    return [ast.get_source_segment(source, n.args[3 if isinstance(n.args[0], ast.Starred) else 4]) for n in calls]


def test_every_row_resolves_to_a_registered_pass_or_rule():
    reg = registered()
    rows = remedies.table()
    assert rows
    for row in rows:
        assert row.kind in remedies.KINDS, row
        assert row.pass_name in reg, row
        if row.rule is not None:
            assert get_rule(row.rule).pass_name == row.pass_name, row
        if row.kind == remedies.MISSING_OP:
            assert row.ops, row
        if row.kind == remedies.PARSER_ERROR:
            assert row.what and row.why, row
            if row.prerequisite:
                assert row.prerequisite[0] in reg and row.prerequisite[1], row


def test_every_pass_declares_its_remedies():
    rows = remedies.table()
    for name, cls in registered().items():
        assert cls.info.remedies is not None, f"{name}: PassInfo.remedies not declared"
        has_rows = any(r.pass_name == name for r in rows)
        assert has_rows or name in HOUSEKEEPING, f"{name}: no row in the table of remedies"
        assert not (has_rows and name in HOUSEKEEPING), name


def test_every_finding_row_names_a_kind_the_checker_emits():
    known = set(PREDICATES) | _checker_kinds()
    for row in remedies.pass_rows():
        if row.kind == remedies.FINDING:
            assert row.what in known, row
    for rule in __import__("graphfix.plugin_rules", fromlist=["x"]).registered_rules():
        for check in rule.fixes_checks:   # a profile predicate or a checker kind (mod-uint8: io-only-dtype)
            assert check in known, (rule.name, check)



def test_the_checker_asks_the_table_for_every_finding():
    """No fix is written in the checker: each finding's fix comes from a query of the table, so a
    new row for any finding kind needs no change there."""
    fixes = _checker_fixes()
    assert len(fixes) >= 15
    for text in fixes:
        assert "fix_for" in text or text == "fix", text


@pytest.mark.parametrize("module", ["diagnosis/checker.py", "diagnosis/facts.py", "diagnosis/predicates.py",
                                    "diagnosis/__init__.py", "diagnosis/result.py", "fix_loop.py",
                                    "check_render.py", "remedies.py", "profiles/__init__.py"])
def test_no_pass_is_named_as_a_fix_outside_the_table(module):
    """`check`, the fix loop and the rendering learn which pass fixes what only from the table."""
    tree = ast.parse(open(os.path.join(PACKAGE, module)).read())
    named = sorted({n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in PIPELINE_ORDER})
    assert not named, f"{module} names passes {named}"


def test_profiles_carry_no_fix():
    import json
    folder = os.path.join(PACKAGE, "profiles")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            data = json.load(open(os.path.join(folder, name)))
            assert not any("fix" in r for e in data["ops"].values() for r in e.get("rules", [])), name


def test_docs_table_is_current():
    with open(os.path.join(ROOT, "docs", "remedies.md")) as f:
        assert f.read() == remedies.markdown(), "regenerate: graphfix passes --markdown > docs/remedies.md"


def test_conditional_rows_hold_only_where_the_pass_can_act():
    """fold-constants fixes a computed Unsqueeze axes input (8.6 needs weights) only where the axes
    can be folded."""
    def model(foldable: bool):
        axes_src = ["c"] if foldable else ["a"]
        nodes = [helper.make_node("Identity", axes_src, ["axes"], name="id"),
                 helper.make_node("Unsqueeze", ["x", "axes"], ["y"], name="unsqueeze")]
        inits = [onnx.numpy_helper.from_array(np.array([0], np.int64), "c")] if foldable else []
        inputs = [vi("x", TensorProto.FLOAT, [2, 3])] + ([] if foldable else [vi("a", TensorProto.INT64, [1])])
        return make_model(nodes, inputs, [vi("y", TensorProto.FLOAT, None)], inits, opset=13)
    for foldable in (True, False):
        found = [f for f in check_model(model(foldable), trt="8.6").findings
                 if f.node == "unsqueeze" and f.rule == "const_input"]
        assert found, foldable
        assert found[0].fix_pass == ("fold-constants" if foldable else None)


class _MyOpDecomposition(Rule):
    """A rule added at run time: com.example::MyOp -> Identity."""
    name = "my-op-decomposition"
    summary = "com.example::MyOp -> Identity"
    kind = DECOMPOSE
    family = "contrib"
    anchor_ops = ("MyOp",)
    anchor_domain = "com.example"

    def match(self, graph, node, ctx):
        return None


@pytest.fixture
def my_rule():
    register_rule(_MyOpDecomposition)
    yield get_rule("my-op-decomposition")
    unregister_rule("my-op-decomposition")


def _my_op_model():
    node = helper.make_node("MyOp", ["x"], ["y"], name="mine", domain="com.example")
    return make_model([node], [vi("x", TensorProto.FLOAT, [2])], [vi("y", TensorProto.FLOAT, [2])],
                      extra_opsets=[("com.example", 1)])


def test_a_new_rule_is_all_it_takes(my_rule):
    """Declaring the rule is the whole change: check's fix column, the fix loop and the docs follow."""
    finding = next(f for f in check_model(_my_op_model(), trt="10.0").findings if f.node == "mine")
    assert finding.rule == "custom-op" and finding.fix_pass == "decompose-contrib"
    error = {"node": "mine", "op": "MyOp", "domain": "com.example",
             "message": "No importer registered for op: MyOp. Attempting to import as plugin."}
    assert passes_for_error(error) == ["decompose-contrib"]
    assert "com.example::MyOp" in remedies.markdown()


def test_a_new_remedy_of_a_pass_is_all_it_takes(monkeypatch):
    """A row added to a pass's declaration reaches check's fix column, the fix loop and the docs."""
    from dataclasses import replace
    cls = registered()["cleanup"]
    rows = (remedies.fixes_finding("double-narrowed", why="(test)"),
            remedies.fixes_parser_error(r"\bgremlins\b", why="(test)"))
    monkeypatch.setattr(cls, "info", replace(cls.info, remedies=rows))
    model = make_model([helper.make_node("Identity", ["x"], ["y"], name="id")], [vi("x", TensorProto.DOUBLE, [2])],
                       [vi("y", TensorProto.DOUBLE, [2])])
    finding = next(f for f in check_model(model, trt="10.0").findings if f.rule == "double-narrowed")
    assert finding.fix_pass == "cleanup"
    assert passes_for_error({"node": None, "op": None, "message": "gremlins in the engine"}) == ["cleanup"]
    assert "`double-narrowed`" in remedies.markdown()


def test_without_the_rule_nothing_fixes_it():
    finding = next(f for f in check_model(_my_op_model(), trt="10.0").findings if f.node == "mine")
    assert finding.fix_pass is None
    assert passes_for_error({"node": "mine", "op": "MyOp", "domain": "com.example",
                             "message": "getPluginCreator could not find plugin: MyOp"}) == ["plugins"]


# ---------------------------------------------------------------------------------------- one layer

@pytest.mark.parametrize("attr, value, expected", [
    ("value_ints", [3, 1, 2], np.array([3, 1, 2], np.int64)),
    ("value_int", 7, np.array(7, np.int64)),
    ("value_floats", [0.5, 2.0], np.array([0.5, 2.0], np.float32)),
    ("value_float", 1.5, np.array(1.5, np.float32)),
    ("value", onnx.numpy_helper.from_array(np.array([[1, 2]], np.int32), "v"), np.array([[1, 2]], np.int32)),
])
def test_passes_rules_and_check_read_constants_alike(attr, value, expected):
    """Constant(value_ints=...) and friends: the plugin rules, target-opset, the type islands and
    `check` get the same value (graphfix.onnx_values), dtype included."""
    from graphfix.diagnosis import ModelFacts
    from graphfix.graph_utils import to_graph
    from graphfix.opset import const_value
    from graphfix.passes._type_islands import constant_node_value
    from graphfix.plugin_rules.patterns import const
    node = helper.make_node("Constant", [], ["k"], name="k", **{attr: value})
    ident = helper.make_node("Identity", ["k"], ["y"], name="id")
    model = make_model([node, ident], [], [vi("y", TensorProto.UNDEFINED, None)])
    graph = to_graph(model)
    tensor = next(t for t in graph.tensors().values() if t.name == "k")
    seen = [const(tensor), const_value(tensor), constant_node_value(tensor.inputs[0]), ModelFacts(model).value("k")]
    for got in seen:
        assert got is not None and got.dtype == expected.dtype and np.array_equal(got, expected), (attr, got)
    assert isinstance(tensor, gs.Variable)


def test_one_list_of_random_ops():
    from graphfix import fold_analysis
    from graphfix.onnx_values import NONDETERMINISTIC_OPS
    assert fold_analysis.NONDETERMINISTIC_OPS is NONDETERMINISTIC_OPS


@pytest.mark.parametrize("name, folds, stays", [
    ("fold_qdq_weights", {"w_scale"}, {"W"}),              # Q/DQ stay for TensorRT's INT8 path
    ("fold_dynamic_shape", {"hw", "hw_prod"}, {"s"}),       # static dims of a partly dynamic shape
    ("fold_graph_output_constant", set(), {"k"}),           # graph outputs stay node-produced
])
def test_check_and_fold_constants_agree_on_what_folds(name, folds, stays):
    """`check` asks fold-constants' own analysis (graphfix.fold_analysis), and the pass does it."""
    import graphfix
    from graphfix.diagnosis import ModelFacts
    from graphfix.fixtures import all_fixtures
    model = all_fixtures()[name]()
    facts = ModelFacts(model)
    assert folds <= facts.foldable and not stays & facts.foldable
    fixed, _ = graphfix.fix(model, trt="10.0", passes="fold-constants", check="none")
    still_computed = {o for n in fixed.graph.node for o in n.output}
    assert not folds & still_computed and stays <= still_computed
