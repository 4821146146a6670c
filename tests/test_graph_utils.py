"""graph_utils.to_graph/to_model: the graphsurgeon round trip every pass goes through keeps what
graphsurgeon alone loses (optional/sequence value types, TypeProto attributes)."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto as T
from onnx import helper

from graphfix import fix
from graphfix.checks.ort import run_ort
from graphfix.fixtures import build
from graphfix.fixtures._make import make_model
from graphfix.graph_utils import NameMaker, RoundTripError, shape_of, to_graph, to_model


def _optional_identity() -> onnx.ModelProto:
    """The node test test_identity_opt: optional(seq(float[5])) in and out, through an unnamed Identity."""
    opt = helper.make_optional_type_proto(
        helper.make_sequence_type_proto(helper.make_tensor_type_proto(T.FLOAT, [5])))
    return make_model([helper.make_node("Identity", ["opt_in"], ["opt_out"])],
                      [helper.make_value_info("opt_in", opt)], [helper.make_value_info("opt_out", opt)],
                      opset=16)


def test_graphsurgeon_alone_cannot_export_these_models():
    """What the round trip works around (onnx-graphsurgeon 0.6: UnboundLocalError in export_value_info_proto)."""
    for model in (build("optional_sequence_values"), _optional_identity()):
        try:
            gs.export_onnx(gs.import_onnx(model))
        except Exception:
            continue
        pytest.skip(f"onnx-graphsurgeon {gs.__version__} exports optional values itself")


def test_optional_and_sequence_values_and_type_attributes_survive_the_round_trip():
    model = build("optional_sequence_values")
    again = to_model(to_graph(model), model)
    assert onnx.printer.to_text(again.graph) == onnx.printer.to_text(model.graph)
    empty = next(n for a in again.graph.node if a.op_type == "If" for g in a.attribute for n in g.g.node
                 if n.op_type == "Optional" and not n.input)
    assert [a.name for a in empty.attribute] == ["type"]          # graphsurgeon's importer drops it


def test_optional_graph_io_keeps_its_types():
    model = _optional_identity()
    again = to_model(to_graph(model), model)
    types = lambda m: [(v.name, v.type) for v in list(m.graph.input) + list(m.graph.output)]
    assert types(again) == types(model)
    onnx.checker.check_model(again, full_check=True)


def test_untyped_non_tensor_io_is_an_error_not_a_crash():
    with pytest.raises(RoundTripError, match="opt_in, opt_out"):
        to_model(to_graph(_optional_identity()))          # no template: nothing says their types


def _check_of(report, kind: str) -> dict:
    (check,) = [c for c in report.checks if c["kind"] == kind]
    return check


def test_pipeline_rewrites_models_with_optional_values():
    """Regression (node tests test_identity_opt, test_if_opt, test_optional_*: normalize and
    target-opset failed with graphsurgeon's UnboundLocalError)."""
    model = build("optional_sequence_values")
    fixed, report = fix(model, trt="8.6")
    statuses = {p.name: p.status for p in report.passes}
    assert statuses["normalize"] == "applied" and report.checks[0]["passed"], report.summary()  # tensor I/O
    # the verdict: TensorRT handles no sequence or optional values, and the report says so
    assert not report.ok and {"SequenceConstruct", "Optional"} <= {r["op"] for r in _check_of(report, "trt-check")["remaining"]}
    feeds = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "flag": np.array(False)}
    assert {k: v.tolist() for k, v in run_ort(fixed, feeds).items()} == \
        {k: v.tolist() for k, v in run_ort(model, feeds).items()}


def test_pipeline_says_why_optional_io_is_not_compared():
    fixed, report = fix(_optional_identity(), trt="8.6")
    (normalize,) = [p for p in report.passes if p.name == "normalize"]
    assert normalize.status == "applied"                        # named the Identity
    assert any("not tensors (optional, sequence) cannot be compared: opt_in, opt_out" in w
               for w in normalize.warnings), normalize.warnings
    assert report.checks[0]["skipped"] and report.checks[0]["passed"] is None
    assert [v.type for v in fixed.graph.output] == [v.type for v in _optional_identity().graph.output]


# -- shape_of: the shape values passes build -------------------------------------------------------
def _names():
    return NameMaker(gs.Graph(), "test")


@pytest.mark.parametrize("dims, expected", [(None, [2, 3, 4]), (1, [3]), (-1, [4]), (slice(1, None), [3, 4]),
                                            (slice(0, 2), [2, 3])])
def test_shape_of_a_static_tensor_is_an_initializer(dims, expected):
    value, nodes = shape_of(gs.Variable("x", np.float32, [2, 3, 4]), _names(), dims)
    assert nodes == [] and isinstance(value, gs.Constant)
    assert value.values.dtype == np.int64 and value.values.tolist() == expected


def test_shape_of_static_dims_of_a_partly_dynamic_tensor_is_an_initializer():
    x = gs.Variable("x", np.float32, ["N", 3, 4])
    value, nodes = shape_of(x, _names(), slice(1, 3))
    assert nodes == [] and value.values.tolist() == [3, 4]
    # dims from shape inference fill the ones the annotation leaves open
    value, nodes = shape_of(x, _names(), 0, known=[5, None, 4])
    assert nodes == [] and value.values.tolist() == [5]


@pytest.mark.parametrize("dims, expected", [(None, [5, 3, 7]), (0, [5]), (slice(0, 2), [5, 3]), (-1, [7])])
def test_shape_of_dynamic_dims_is_shape_then_slice_at_run_time(dims, expected):
    x = gs.Variable("x", np.float32, ["N", 3, "W"])
    value, nodes = shape_of(x, _names(), dims)
    assert [n.op for n in nodes] == (["Shape"] if dims is None else ["Shape", "Slice"])
    assert nodes[0].inputs[0] is x and nodes[-1].outputs[0] is value
    value.dtype = np.int64
    graph = gs.Graph(nodes=nodes, inputs=[x], outputs=[value], opset=17)
    model = to_model(graph)
    onnx.checker.check_model(model, full_check=True)
    out = run_ort(model, {"x": np.zeros((5, 3, 7), np.float32)})
    assert out[value.name].tolist() == expected


def test_shape_of_refuses_a_strided_slice():
    with pytest.raises(ValueError, match="step"):
        shape_of(gs.Variable("x", np.float32, [2, 3]), _names(), slice(0, None, 2))


def test_round_trip_keeps_graph_io_shapes_that_value_info_lacks():
    """Issue 11: value_info entries without a shape hid the graph I/O shapes from graphsurgeon, and
    the export wrote "Field 'shape' of 'type' is required but missing" on a valid model."""
    model = build("shapeless_value_info_io")
    onnx.checker.check_model(model, full_check=True)
    again = to_model(to_graph(model), model)
    io = lambda m: [(v.name, v.type) for v in list(m.graph.input) + list(m.graph.output)]
    assert io(again) == io(model)                    # the scalar output keeps its empty shape too
    onnx.checker.check_model(again, full_check=True)
    fixed, report = fix(model, trt="8.6")
    assert not [p.name for p in report.passes if p.status in ("rolled-back", "failed")], report.summary()
    assert {"fold-constants"} <= {p.name for p in report.passes if p.status == "applied"}
    assert report.checks[0]["passed"] and io(fixed) == io(model)


def _chain_graph(names_in_file_order):
    """a -> Relu(n0) -> Relu(n1) -> ... -> y, with the nodes listed in the given order."""
    n = len(names_in_file_order)
    nodes = {f"n{i}": helper.make_node("Relu", ["x" if i == 0 else f"t{i}"], ["y" if i == n - 1 else f"t{i + 1}"],
                                       name=f"n{i}") for i in range(n)}
    model = make_model([nodes[k] for k in names_in_file_order], [helper.make_tensor_value_info("x", T.FLOAT, [2])],
                       [helper.make_tensor_value_info("y", T.FLOAT, [2])])
    return to_graph(model)


def test_toposort_is_iterative_and_leaves_sorted_graphs_alone():
    from graphfix.graph_utils import toposort
    deep = _chain_graph([f"n{i}" for i in reversed(range(5000))])      # far deeper than the recursion limit
    assert toposort(deep) is True
    assert [n.name for n in deep.nodes] == [f"n{i}" for i in range(5000)]
    assert toposort(deep) is False


def test_toposort_moves_as_little_as_it_can():
    """Of the ready nodes the one listed first goes first: independent nodes keep their order."""
    from graphfix.graph_utils import toposort
    model = make_model([helper.make_node("Neg", ["b"], ["y1"], name="late"),
                        helper.make_node("Relu", ["x"], ["z"], name="free"),
                        helper.make_node("Abs", ["x"], ["b"], name="early"),
                        helper.make_node("Neg", ["z"], ["y2"], name="after_free")],
                       [helper.make_tensor_value_info("x", T.FLOAT, [2])],
                       [helper.make_tensor_value_info(n, T.FLOAT, [2]) for n in ("y1", "y2")])
    graph = to_graph(model)
    toposort(graph)
    assert [n.name for n in graph.nodes] == ["free", "early", "late", "after_free"]


def test_toposort_orders_a_node_after_what_its_subgraph_reads():
    from graphfix.graph_utils import toposort
    body = helper.make_graph([helper.make_node("Identity", ["outer"], ["o"], name="inner")], "body", [],
                             [helper.make_tensor_value_info("o", T.FLOAT, [2])])
    model = make_model([helper.make_node("If", ["c"], ["y"], name="if", then_branch=body, else_branch=body),
                        helper.make_node("Relu", ["x"], ["outer"], name="producer")],
                       [helper.make_tensor_value_info("x", T.FLOAT, [2]), helper.make_tensor_value_info("c", T.BOOL, [])],
                       [helper.make_tensor_value_info("y", T.FLOAT, [2])])
    graph = to_graph(model)
    assert toposort(graph) is True
    assert [n.name for n in graph.nodes] == ["producer", "if"]


def test_toposort_reports_a_cycle():
    from graphfix.graph_utils import toposort
    model = make_model([helper.make_node("Add", ["x", "b"], ["a"], name="p"),
                        helper.make_node("Relu", ["a"], ["b"], name="q"),
                        helper.make_node("Relu", ["a"], ["y"], name="r")],
                       [helper.make_tensor_value_info("x", T.FLOAT, [2])], [helper.make_tensor_value_info("y", T.FLOAT, [2])])
    with pytest.raises(ValueError, match="cycle.*p, q, r"):
        toposort(to_graph(model))
