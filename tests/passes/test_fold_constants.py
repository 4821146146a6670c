"""fold-constants: structure after folding, ONNX Runtime equivalence, idempotence, size limit,
failure isolation, dynamic shapes left alone."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

import graphfix
from graphfix.fixtures import build
from graphfix.fixtures.shapes import transformer_like
from graphfix.graph_utils import to_graph, to_model
from graphfix.pass_api import PassContext
from graphfix.passes import _fold_eval
from graphfix.passes.fold_constants import FoldConstants
from graphfix.target import TrtVersion
from gf_testing import apply_pass, assert_equivalent, assert_idempotent, ops

PASS = "fold-constants"


def inits(model: onnx.ModelProto) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def folded_targets(result) -> list:
    return [c.target for c in result.changes if c.action == "fold"]


def check_fold(name: str, **context):
    model = build(name)
    out, result = apply_pass(PASS, model, **context)
    assert_equivalent(model, out)
    assert_idempotent(PASS, model, **context)
    onnx.checker.check_model(out)
    return model, out, result


def test_shape_subgraph_on_static_input_folds_to_reshape_target():
    _, out, result = check_fold("fold_shape_subgraph")
    assert ops(out) == ["Reshape", "Relu"]
    reshape = out.graph.node[0]
    np.testing.assert_array_equal(inits(out)[reshape.input[1]], [2, -1])
    assert folded_targets(result) == ["target"]
    assert result.changes[0].details["nodes"] == ["shape", "take_batch", "unsqueeze", "concat"]
    assert result.counts["nodes_folded"] == 4 and result.counts["tensors_folded"] == 1


def test_constant_arithmetic_chains_fold_to_their_values():
    model, out, result = check_fold("fold_constant_arithmetic")
    assert ops(out) == ["MatMul", "Add", "Mul"]
    before, after = inits(model), inits(out)
    np.testing.assert_allclose(after["Ws"], before["Wt"].T * 0.5, rtol=1e-6)
    np.testing.assert_allclose(after["bias"], before["b0"] + before["b1"], rtol=1e-6)
    np.testing.assert_allclose(after["scale"], [0.25], rtol=1e-6)
    assert sorted(folded_targets(result)) == ["Ws", "bias", "scale"]
    assert not {"Wt", "b0", "b1", "hd", "half", "one"} & set(after)   # inputs only the folded nodes read


def test_constant_node_chain_becomes_initializers():
    _, out, result = check_fold("fold_constant_node_chain")
    assert ops(out) == ["Mul", "Add"]
    assert float(inits(out)["k"]) == 10.0
    assert result.counts["nodes_folded"] == 7
    assert {c.target: c.details["nodes"] for c in result.changes}["k"] == [
        "const_c2", "const_c3", "add_c", "mul_c", "to_int", "to_float"]


def test_values_over_the_size_limit_stay_computed_and_are_reported():
    _, out, result = check_fold("fold_size_limit", fold_size_limit=64 * 1024)
    assert ops(out) == ["ConstantOfShape", "Add", "Mul"]       # the 256 KiB fill stays, Neg folds
    assert folded_targets(result) == ["s1"]
    assert result.counts["kept_too_large"] == 1
    assert any("'fill'" in w and "'big'" in w and "256 KiB" in w for w in result.warnings), result.warnings
    assert "dims" in inits(out)                                    # the kept node's input is still there


def test_default_size_limit_folds_the_same_value():
    _, out, result = check_fold("fold_size_limit")
    assert ops(out) == ["Add", "Mul"]
    assert inits(out)["big"].shape == (256, 256)


def test_a_region_onnx_runtime_cannot_evaluate_is_reported_and_the_others_fold():
    _, out, result = check_fold("bf16_constant_region")
    assert ops(out) == ["Cast", "Cast", "MatMul"]          # bf16 region kept, Transpose folded
    assert folded_targets(result) == ["W"]
    assert result.counts["kept_failed"] == 1
    assert any("could not evaluate node 'to_bf16' (Cast)" in w for w in result.warnings), result.warnings


def test_failure_inside_a_region_keeps_only_the_failing_node_and_its_dependents(monkeypatch):
    real_run = _fold_eval.OrtEvaluator._run

    def flaky(self, protos, feeds, outputs):
        if any(p.name == "scale_w" for p in protos):
            raise RuntimeError("injected failure")
        return real_run(self, protos, feeds, outputs)

    monkeypatch.setattr(_fold_eval.OrtEvaluator, "_run", flaky)
    model = build("fold_constant_arithmetic")
    out, result = apply_pass(PASS, model)
    assert_equivalent(model, out)
    # Transpose (before the failing Mul) still folds: its value 'W' is what the kept Mul reads
    assert ops(out) == ["Mul", "MatMul", "Add", "Mul"]
    assert sorted(folded_targets(result)) == ["W", "bias", "scale"]
    assert result.counts["kept_failed"] == 1
    assert any("'scale_w'" in w and "injected failure" in w for w in result.warnings), result.warnings


def test_dynamic_dim_is_not_folded_but_static_dims_of_the_same_shape_are():
    _, out, result = check_fold("fold_dynamic_shape")
    assert ops(out) == ["Shape", "Gather", "Concat", "Reshape"]
    np.testing.assert_array_equal(inits(out)["hw_prod"], [24])
    assert folded_targets(result) == ["hw_prod"]
    assert_equivalent(build("fold_dynamic_shape"), out, shapes={"x": [3, 4, 6]})


def test_shape_revealed_by_a_folded_value_folds_in_the_same_run():
    _, out, result = check_fold("fold_shape_two_rounds")
    assert ops(out) == ["Reshape", "Reshape"]
    np.testing.assert_array_equal(inits(out)["s2"], [4, 3])


def test_castlike_of_a_constant_folds_to_the_runtime_tensors_type():
    _, out, result = check_fold("fold_castlike_constant")
    assert ops(out) == ["Mul"]
    value = inits(out)["c16"]
    assert value.dtype == np.float16 and float(value) == 0.125


def test_qdq_nodes_stay_and_their_computed_scale_folds():
    _, out, result = check_fold("fold_qdq_weights")
    assert ops(out) == ["DequantizeLinear", "QuantizeLinear", "DequantizeLinear", "MatMul"]
    assert float(inits(out)["w_scale"]) == np.float32(0.01)
    assert inits(out)["W_q"].dtype == np.int8                   # the weight is not dequantized
    assert result.counts["kept_qdq"] == 1


def test_graph_output_stays_produced_by_a_node():
    _, out, result = check_fold("fold_graph_output_constant")
    assert ops(out) == ["Add", "Mul"]
    assert [o.name for o in out.graph.output] == ["k", "y"]
    assert "k" not in inits(out) and out.graph.node[0].output[0] == "k"
    assert sorted(folded_targets(result)) == ["a", "b"]
    assert result.counts["kept_graph_output"] == 1


def test_nondeterministic_ops_and_subgraphs_are_left_alone():
    model, out, result = check_fold("random_and_if_on_constants")
    assert not result.modified
    assert ops(out) == ops(model)
    assert any("'random'" in w and "nondeterministic" in w for w in result.warnings)
    assert any("'branch'" in w and "subgraph" in w for w in result.warnings)


def test_transformer_block_keeps_only_the_arithmetic_on_the_input():
    _, out, result = check_fold("fold_transformer_block")
    left = set(ops(out))
    assert not {"Shape", "Gather", "Unsqueeze", "Concat", "Slice", "Cast", "Constant"} & left, left
    assert len(out.graph.node) == 51    # what `polygraphy surgeon sanitize --fold-constants` leaves too
    assert result.counts["nodes_folded"] == 51


def test_batches_and_one_session_give_the_same_model(monkeypatch):
    model = transformer_like(3, seed=1)
    whole, _ = apply_pass(PASS, model)
    monkeypatch.setattr(_fold_eval, "BATCH_NODES", 7)
    batched, _ = apply_pass(PASS, model)
    assert batched.SerializeToString() == whole.SerializeToString()
    assert_equivalent(model, batched)


def test_graph_without_its_model_is_folded_the_same_way():
    """Callers that hand the pass a bare gs.Graph (no PassContext.model) get the same result."""
    model = build("fold_transformer_block")
    with_model, _ = apply_pass(PASS, model)
    graph = to_graph(model)
    FoldConstants(PassContext(target=TrtVersion.parse("8.6"))).run(graph)
    assert to_model(graph, model).SerializeToString() == with_model.SerializeToString()


def test_nothing_to_fold_changes_nothing():
    _, out, result = check_fold("fold_shape_subgraph")
    again, second = apply_pass(PASS, out)
    assert not second.modified and not second.warnings


def test_pipeline_checks_the_fold_with_onnx_runtime():
    fixed, report = graphfix.fix(build("fold_transformer_block"), passes="normalize,fold-constants", check="ort")
    record = next(p for p in report.passes if p.name == PASS)
    assert record.status == "applied", record.error
    assert record.check["passed"]
    assert report.ok


def test_onnx_runtime_unusable_is_one_warning_and_numpy_values_still_fold(monkeypatch):
    monkeypatch.setattr(_fold_eval.OrtEvaluator, "unusable", lambda self: "opset 99 is not supported")
    model = build("fold_constant_node_chain")
    out, result = apply_pass(PASS, model)
    assert_equivalent(model, out)
    assert ops(out) == ["Add", "Mul", "Cast", "Cast", "Mul", "Add"]   # Constant nodes became initializers
    assert sorted(folded_targets(result)) == ["c2", "c3", "eps"]
    failures = [w for w in result.warnings if "opset 99" in w]
    assert len(failures) == 1 and "4 node(s) stay computed" in failures[0], result.warnings


def test_scalar_gather_of_a_partly_static_shape_folds():
    """x[N,4,6] --Shape--Gather(1, a scalar index)--Unsqueeze--Concat(-1)--> [4,-1] --Reshape(x)
    (as ViT exports write it; a scalar index once made the pass fail)."""
    import numpy as np
    from onnx import TensorProto as T, helper
    from graphfix.fixtures._make import const, make_model, vi
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "one"], ["d1"], name="pick", axis=0),
             helper.make_node("Unsqueeze", ["d1", "zero"], ["d1v"], name="unsq"),
             helper.make_node("Concat", ["d1v", "minus_one"], ["target"], name="cat", axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape")]
    model = make_model(nodes, [vi("x", T.FLOAT, ["N", 4, 6])], [vi("y", T.FLOAT, [4, "M"])],
                       [const("one", 1, np.int64), const("zero", [0], np.int64), const("minus_one", [-1], np.int64)])
    fixed, result = apply_pass("fold-constants", model)
    assert ops(fixed) == ["Reshape"], result.warnings
    target = next(t for t in fixed.graph.initializer if t.name == fixed.graph.node[0].input[1])
    assert onnx.numpy_helper.to_array(target).tolist() == [4, -1]
    assert_equivalent(model, fixed)
