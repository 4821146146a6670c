"""graphfix.opset: raising the opset (every node kept valid and meaning the same), the planner's checks."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper

from graphfix.fixtures._make import const, make_model, vi
from graphfix.graph_utils import NameMaker, to_graph, to_model
from graphfix.opset import OpsetChange, graph_opset, raise_opset, schema_at, set_graph_opset
from gf_testing import assert_equivalent, ops

F = T.FLOAT


def raised(model: onnx.ModelProto, to: int = 17):
    graph = to_graph(model)
    ok, reasons = raise_opset(graph, to)
    return ok, reasons, to_model(graph, model)


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def test_attributes_that_became_inputs_at_13():
    nodes = [helper.make_node("Split", ["x"], ["a", "b"], name="split", axis=1, split=[1, 3]),
             helper.make_node("Squeeze", ["a"], ["a2"], name="squeeze", axes=[1]),
             helper.make_node("Unsqueeze", ["a2"], ["a3"], name="unsqueeze", axes=[0]),
             helper.make_node("ReduceSum", ["b"], ["s"], name="sum", axes=[1], keepdims=0)]
    model = make_model(nodes, [vi("x", F, [2, 4])], [vi("a3", F, [1, 2]), vi("s", F, [2])], opset=11)
    ok, reasons, after = raised(model)
    assert ok and reasons == []
    assert after.opset_import[0].version == 17
    assert all(len(n.input) == 2 and not ({"split", "axes"} & set(attrs(n))) for n in after.graph.node)
    onnx.checker.check_model(after, full_check=True)
    assert_equivalent(model, after)


@pytest.mark.parametrize("batch", [2, "N"])
@pytest.mark.parametrize("axis", [1, -1, 2])
def test_softmax_keeps_its_pre_13_meaning(axis, batch):
    model = make_model([helper.make_node("Softmax", ["x"], ["y"], name="softmax", axis=axis)],
                       [vi("x", F, [batch, 3, 4])], [vi("y", F, [batch, 3, 4])], opset=12)
    ok, _, after = raised(model)
    assert ok
    # a static shape is restored from an initializer (fold-constants would fold a Shape of it),
    # a dynamic one from Shape
    restore = ["Reshape"] if batch == 2 else ["Shape", "Reshape"]
    expected = ["Softmax"] if axis in (-1, 2) else ["Flatten", "Softmax"] + restore
    assert ops(after) == expected
    if batch == 2 and axis == 1:
        shape = next(t for t in after.graph.initializer if t.name == after.graph.node[-1].input[1])
        assert onnx.numpy_helper.to_array(shape).tolist() == [2, 3, 4]
    assert_equivalent(model, after, **({} if batch == 2 else {"shapes": {"x": [5, 3, 4]}}))


def test_roialign_keeps_output_half_pixel():
    nodes = [helper.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], name="roi", output_height=2,
                              output_width=2, sampling_ratio=2)]
    inits = [const("rois", [[0.0, 0.0, 3.0, 3.0], [1.0, 1.0, 4.0, 5.0]], np.float32), const("idx", [0, 0], np.int64)]
    model = make_model(nodes, [vi("x", F, [1, 2, 6, 6])], [vi("y", F, [2, 2, 2, 2])], inits, opset=11)
    ok, _, after = raised(model)
    assert ok and attrs(after.graph.node[0])["coordinate_transformation_mode"] == b"output_half_pixel"
    assert_equivalent(model, after)


def test_refused_raise_names_every_node_and_leaves_graph():
    nodes = [helper.make_node("Upsample", ["x", "scales"], ["u"], name="up"),
             helper.make_node("Relu", ["u"], ["y"], name="relu")]
    model = make_model(nodes, [vi("x", F, [1, 1, 2, 2])], [vi("y", F, [1, 1, 4, 4])],
                       [const("scales", [1.0, 1.0, 2.0, 2.0], np.float32)], opset=9)
    graph = to_graph(model)
    ok, reasons = raise_opset(graph, 17)
    assert not ok and reasons == ["node 'up' (Upsample): Upsample is deprecated at opset 17"]
    assert graph_opset(graph) == 9 and to_model(graph, model).SerializeToString() == \
        to_model(to_graph(model), model).SerializeToString()


def test_already_there_is_a_no_op():
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", F, [2])],
                       [vi("y", F, [2])], opset=18)
    graph = to_graph(model)
    assert raise_opset(graph, 17) == (True, []) and graph_opset(graph) == 18


def test_lowering_checks_types_against_the_target_schema():
    """ReduceMax accepts bool from opset 20 only: lowering such a node is refused with the reason."""
    nodes = [helper.make_node("ReduceMax", ["x", "axes"], ["y"], name="any", keepdims=0)]
    model = make_model(nodes, [vi("x", T.BOOL, [2, 3])], [vi("y", T.BOOL, [2])],
                       [const("axes", [1], np.int64)], opset=20)
    from graphfix.passes.target_opset import LOWER_RULES
    graph = to_graph(model)
    change = OpsetChange(graph, 17, LOWER_RULES, NameMaker(graph, "test")).plan()
    assert not change.ok
    assert "input 'x' is bool, which ReduceMax-13 does not accept" in str(change.problems[0])


def test_set_graph_opset_does_not_touch_the_input_model():
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", F, [2])],
                       [vi("y", F, [2])], opset=18)
    graph = to_graph(model)
    set_graph_opset(graph, 17)
    assert model.opset_import[0].version == 18 and to_model(graph, model).opset_import[0].version == 17


def test_schema_lookup():
    assert schema_at("ReduceMean", 17).since_version == 13
    assert schema_at("LayerNormalization", 16) is None


def test_a_renamed_input_is_not_a_change_of_meaning_a_moved_role_is():
    """BatchNormalization-9 'mean'/'var' are BatchNormalization-15 'input_mean'/'input_var' (raise
    kept, outputs equal); Resize-10's input 1 is 'scales', Resize-11's is 'roi' (raise refused)."""
    stats = [const("s", [1.0, 2.0], np.float32), const("b", [0.1, -0.1], np.float32),
             const("m", [0.5, -0.5], np.float32), const("v", [1.5, 0.5], np.float32)]
    bn = make_model([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn")],
                    [vi("x", F, [1, 2, 3])], [vi("y", F, [1, 2, 3])], stats, opset=12)
    ok, reasons, after = raised(bn)
    assert ok and reasons == [] and after.opset_import[0].version == 17
    onnx.checker.check_model(after, full_check=True)
    assert_equivalent(bn, after)
    resize = make_model([helper.make_node("Resize", ["x", "scales"], ["y"], name="resize")],
                        [vi("x", F, [1, 1, 2, 2])], [vi("y", F, [1, 1, 4, 4])],
                        [const("scales", [1.0, 1.0, 2.0, 2.0], np.float32)], opset=10)
    ok, reasons, _ = raised(resize)
    assert not ok and "input 1 is 'scales' in Resize-10 but 'roi'" in reasons[0]
