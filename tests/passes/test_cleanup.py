from graphfix.fixtures import build
from gf_testing import apply_pass, assert_equivalent, assert_idempotent, ops


def test_cleanup_removes_pass_through_identities_but_keeps_output_one():
    model = build("identity_chain")
    fixed, result = apply_pass("cleanup", model)
    assert ops(fixed) == ["Relu", "Mul", "Identity"]
    assert sorted(c.target for c in result.changes if c.action == "remove-identity") == ["i0", "i1"]
    assert [o.name for o in fixed.graph.output] == ["y"]
    assert_equivalent(model, fixed)


def test_cleanup_removes_dead_nodes():
    model = build("messy_graph")
    fixed, result = apply_pass("cleanup", model)
    assert "Neg" not in ops(fixed) and "Abs" not in ops(fixed)
    assert any(c.action == "remove-node" for c in result.changes)
    assert_equivalent(model, fixed)


def test_cleanup_is_idempotent():
    assert_idempotent("cleanup", build("identity_chain"))
