"""graphfix/weights.py: checks on weightless copies, exports with one copy of the weights, streaming saves.

The threshold is lowered so that small fixtures take the big-model paths.
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from graphfix import weights
from graphfix.checks.structural import validity_problems
from graphfix.graph_utils import to_graph, to_model
from graphfix.model_io import load_model, save_model
from graphfix.opset import Facts
from gf_testing import assert_equivalent


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch):
    monkeypatch.setattr(weights, "BIG_TENSOR_BYTES", 64)


def weighted_chain(seed: int = 0, hidden: int = 16) -> onnx.ModelProto:
    """Two big weights (W0, W1) and a small one (b)::

        x[n x H] --MatMul(W0)--> h --Add(b)--> a --MatMul(W1)--> y[n x H]
    """
    rng = np.random.default_rng(seed)
    inits = [onnx.numpy_helper.from_array(rng.standard_normal((hidden, hidden)).astype(np.float32), "W0"),
             onnx.numpy_helper.from_array(rng.standard_normal(2).astype(np.float32)[:1], "b"),
             onnx.numpy_helper.from_array(rng.standard_normal((hidden, hidden)).astype(np.float32), "W1")]
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["h"], name="mm0"),
             helper.make_node("Add", ["h", "b"], ["a"], name="add"),
             helper.make_node("MatMul", ["a", "W1"], ["y"], name="mm1")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", hidden])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def test_weightless_model_keeps_types_and_judgement_without_the_bytes():
    model = weighted_chain()
    skeleton = weights.weightless_model(model)
    assert [t.name for t in skeleton.graph.initializer] == ["b"]
    assert skeleton.ByteSize() < model.ByteSize() / 2
    inferred = onnx.shape_inference.infer_shapes(skeleton, strict_mode=True)
    assert inferred.graph.output[0].type == model.graph.output[0].type
    assert validity_problems(model) == {}
    broken = weighted_chain(hidden=16)
    broken.graph.initializer[2].CopyFrom(onnx.numpy_helper.from_array(np.ones((3, 5), np.float32), "W1"))
    assert "shape inference" in validity_problems(broken)   # 16 vs 3: still caught on the skeleton
    assert len(model.graph.initializer) == 3                # the model itself is untouched


def test_export_fills_the_weights_once_and_restores_the_graph():
    model = weighted_chain()
    graph = to_graph(model)
    w0 = graph.tensors()["W0"]
    w0.values = w0.values * 2          # a pass's new value (numpy) next to untouched lazy ones
    out = to_model(graph, model)
    got = {t.name: onnx.numpy_helper.to_array(t) for t in out.graph.initializer}
    want = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert sorted(got) == sorted(want)
    np.testing.assert_array_equal(got["W0"], want["W0"] * 2)
    np.testing.assert_array_equal(got["W1"], want["W1"])
    assert all(t.data_location == TensorProto.DEFAULT and not t.external_data for t in out.graph.initializer)
    np.testing.assert_array_equal(graph.tensors()["W1"].values, want["W1"])   # values put back
    assert to_model(to_graph(out), out).SerializeToString() == out.SerializeToString()


def test_shape_facts_with_big_constants():
    facts = Facts(to_graph(weighted_chain()))
    assert facts.by_name["y"].shape == [None, 16] and facts.by_name["W1"].shape == [16, 16]


def test_streaming_save_round_trip(tmp_path):
    model = weighted_chain()
    path = str(tmp_path / "m.onnx")
    save_model(model, path, external_data=True)
    stored = onnx.load(path, load_external_data=False)
    refs = {t.name: {e.key: e.value for e in t.external_data} for t in stored.graph.initializer
            if t.data_location == TensorProto.EXTERNAL}
    assert sorted(refs) == ["W0", "W1"] and all(r["location"] == "m.onnx.data" for r in refs.values())
    assert all(int(r["offset"]) % 4096 == 0 for r in refs.values())
    loaded = load_model(path).model
    for a, b in zip(model.graph.initializer, loaded.graph.initializer):
        assert a.name == b.name
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b))
    assert_equivalent(model, loaded)
    assert len(model.graph.initializer[0].raw_data) == 16 * 16 * 4   # the saved model keeps its bytes


def _count_in_place(monkeypatch):
    from graphfix import pipeline
    calls = []

    def spy(*a, **k):
        calls.append(1)
        return weights.export_in_place(*a, **k)
    monkeypatch.setattr(pipeline, "export_in_place", spy)
    return calls


def _as_parts(model: onnx.ModelProto):
    """Everything but the initializers' order (the in-place path keeps surviving weights where they were)."""
    inits = {t.name: t.SerializeToString() for t in model.graph.initializer}
    rest = onnx.ModelProto()
    rest.CopyFrom(model)
    del rest.graph.initializer[:]
    return rest.SerializeToString(), inits


@pytest.mark.parametrize("name", ["example_encoder_block", "fold_transformer_block", "int64_if_outer_scope",
                                  "ln_two_layers", "messy_graph", "opset18_dynamo_block", "fold_qdq_weights"])
def test_in_place_pipeline_gives_the_copying_pipelines_model(name, monkeypatch):
    import graphfix
    from graphfix import pipeline
    from graphfix.fixtures import build
    model = build(name)
    monkeypatch.setattr(pipeline, "IN_PLACE_BYTES", 1 << 62)
    copied, report_copied = graphfix.fix(model, trt="8.6", check="none")
    monkeypatch.setattr(pipeline, "IN_PLACE_BYTES", 0)
    calls = _count_in_place(monkeypatch)
    in_place, report_in_place = graphfix.fix(model, trt="8.6", check="none")
    assert report_in_place.changed and report_in_place.ok and calls
    assert [p.status for p in report_in_place.passes] == [p.status for p in report_copied.passes]
    assert _as_parts(in_place) == _as_parts(copied)
    again, report_again = graphfix.fix(in_place, trt="8.6", check="none")
    assert not report_again.changed


def test_in_place_rollback_restores_the_model(monkeypatch):
    """A pass that breaks the structure (two nodes, one name) is rolled back: the model is as it was."""
    from graphfix import pipeline, registry
    from graphfix.pass_api import Pass, PassInfo, PassResult

    class Breaker(Pass):
        info = PassInfo(name="test-dup-names", summary="duplicates a node name", fixes="nothing")

        def run(self, graph):
            result = PassResult()
            graph.nodes[1].name = graph.nodes[0].name
            graph.tensors()["W1"].values = np.zeros((16, 16), np.float32)   # and replaces a weight
            result.change("rename", graph.nodes[1].name)
            return result

    order = list(registry.PIPELINE_ORDER)
    order[1:1] = ["test-dup-names"]
    monkeypatch.setattr(registry, "PIPELINE_ORDER", order)
    registry.registered()
    monkeypatch.setitem(registry._REGISTRY, "test-dup-names", Breaker)
    monkeypatch.setattr(pipeline, "IN_PLACE_BYTES", 0)
    model = weighted_chain()
    calls = _count_in_place(monkeypatch)
    fixed, report = pipeline.fix(model, trt="8.6", check="none", passes="normalize,test-dup-names")
    rec = {p.name: p for p in report.passes}["test-dup-names"]
    assert rec.status == "rolled-back" and "duplicate node names" in rec.error and calls
    assert _as_parts(fixed) == _as_parts(pipeline.fix(model, trt="8.6", check="none", passes="normalize")[0])


def test_sizes_are_estimated_without_encoding_and_big_models_are_unchecked_in_ort(monkeypatch):
    from graphfix import model_io
    from graphfix.checks.ort import TOO_BIG, compare_models, ort_can_load
    model = weighted_chain()
    for t in model.graph.initializer:
        assert weights.tensor_bytes(t) == len(t.raw_data)
    assert abs(weights.approx_byte_size(model) - model.ByteSize()) < 64   # only field headers differ
    assert not model_io.over_protobuf_limit(model) and ort_can_load(model)
    monkeypatch.setattr(weights, "PROTOBUF_LIMIT", model.ByteSize() // 2)
    assert model_io.over_protobuf_limit(model) and not ort_can_load(model)
    result = compare_models(model, model)
    assert result.unchecked and result.error == TOO_BIG


@pytest.mark.parametrize("name", ["example_encoder_block", "int64_if_outer_scope", "optional_sequence_values",
                                  "fold_qdq_weights", "contrib_embed_layer_norm"])
def test_embedded_write_gives_the_serialized_bytes(name, tmp_path):
    import io
    from graphfix.fixtures import build
    for model in (build(name), weighted_chain()):
        model.metadata_props.add(key="k", value="v")   # a field after the graph
        out = io.BytesIO()
        weights.write_embedded(model, out)
        assert out.getvalue() == model.SerializeToString()


def test_big_outer_constant_read_inside_an_if_keeps_its_bytes():
    """Regression (silero_vad, a published model): an If branch read a big outer initializer; its
    weightless stub reached ONNX's checker and every pass was rolled back."""
    import numpy as np
    import onnx
    from onnx import TensorProto as T, helper, numpy_helper
    import graphfix
    w = numpy_helper.from_array(np.random.RandomState(0).randn(160, 128).astype(np.float32), "w")   # 80 kB
    branch = lambda name, op: helper.make_graph(   # noqa: E731
        [helper.make_node("MatMul", ["x", "w"], [f"{name}_mm"]), helper.make_node(op, [f"{name}_mm"], [f"{name}_out"])],
        name, [], [helper.make_tensor_value_info(f"{name}_out", T.FLOAT, [1, 128])])
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Cast", ["s"], ["sf"], to=T.FLOAT),
             helper.make_node("ReduceSum", ["sf"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "ten"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", "Relu"),
                              else_branch=branch("else", "Neg"))]
    ten = numpy_helper.from_array(np.array(10.0, np.float32), "ten")
    graph = helper.make_graph(nodes, "if_reads_outer_weight", [helper.make_tensor_value_info("x", T.FLOAT, [1, 160])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 128])], [w, ten])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    fixed, report = graphfix.fix(model, trt="8.6")
    assert not [p.name for p in report.passes if p.status in ("rolled-back", "failed")], report.summary()
    assert "fold-constants" in [p.name for p in report.passes if p.status == "applied"]
    onnx.checker.check_model(fixed, full_check=True)
    assert report.ok, report.summary()
