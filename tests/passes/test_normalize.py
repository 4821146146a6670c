import onnx

from graphfix.fixtures import build
from gf_testing import apply_pass, assert_equivalent, assert_idempotent, ops


def test_normalize_sorts_names_and_removes_dead_parts():
    model = build("messy_graph")
    fixed, result = apply_pass("normalize", model)
    actions = sorted({c.action for c in result.changes})
    assert actions == ["remove-initializer", "remove-node", "set-ir-version", "toposort"]
    assert ops(fixed) == ["Relu", "Add"]                       # sorted, dead Neg/Abs gone
    assert len({n.name for n in fixed.graph.node}) == 2 and all(n.name for n in fixed.graph.node)
    assert [t.name for t in fixed.graph.initializer] == ["w"]  # 'unused' dropped
    assert fixed.ir_version == 10
    assert result.counts["dead_nodes"] == 2
    onnx.checker.check_model(fixed, full_check=True)
    assert_equivalent(model, fixed)


def test_normalize_names_unnamed_and_duplicate_nodes():
    model = build("messy_graph")
    for node in model.graph.node:
        node.name = "same"
    fixed, result = apply_pass("normalize", model)
    names = [n.name for n in fixed.graph.node]
    assert len(set(names)) == len(names)
    assert any(c.action == "rename-node" for c in result.changes)


def test_normalize_keeps_unused_graph_inputs_and_warns():
    model = build("messy_graph")
    model.graph.input.append(onnx.helper.make_tensor_value_info("extra", onnx.TensorProto.FLOAT, [1]))
    fixed, result = apply_pass("normalize", model)
    assert "extra" in [i.name for i in fixed.graph.input]
    assert any("extra" in w for w in result.warnings)


def test_normalize_is_idempotent():
    assert_idempotent("normalize", build("messy_graph"))
    assert_idempotent("normalize", build("example_encoder_block"))


def test_normalize_leaves_a_clean_sorted_graph_alone():
    model = build("example_encoder_block")
    _, result = apply_pass("normalize", model)
    assert not result.modified


def test_a_long_reversed_chain_is_sorted_without_recursion():
    """3,000 nodes stored last-first: gs's recursive toposort hit RecursionError from about 500."""
    from graphfix.fixtures.scale import long_chain
    model = long_chain(3000, reverse=True)
    fixed, result = apply_pass("normalize", model)
    assert [c.action for c in result.changes] == ["toposort"]
    sorted_chain = long_chain(3000, reverse=False)
    assert [n.name for n in fixed.graph.node] == [n.name for n in sorted_chain.graph.node]
    onnx.checker.check_model(fixed)
    assert_equivalent(sorted_chain, fixed)
    assert_idempotent("normalize", model)


def test_normalize_writes_out_a_default_the_target_reads_differently():
    """Trilu without `upper` means the upper triangle; the 8.6 importer takes it as lower (profile rule
    attr_missing, measured on the rig). Writing upper=1 keeps the meaning; 10.x needs nothing."""
    import numpy as np
    import onnxruntime as ort
    from graphfix.diagnosis import check_model
    model = build("check_trilu_default_upper")
    fixed, result = apply_pass("normalize", model)
    trilu = next(n for n in fixed.graph.node if n.op_type == "Trilu")
    assert [(a.name, a.i) for a in trilu.attribute] == [("upper", 1)]
    assert result.counts["defaults_written"] == 1
    x = np.arange(20, dtype=np.float32).reshape(4, 5)
    got = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, np.triu(x))
    assert not [f for f in check_model(fixed, trt="8.6").findings if f.node]
    assert_idempotent("normalize", model)
    _, on_10 = apply_pass("normalize", model, trt="10.0")
    assert "defaults_written" not in on_10.counts
