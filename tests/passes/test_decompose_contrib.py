"""decompose-contrib: ONNX Runtime contrib ops -> standard ONNX ops (checked in ONNX Runtime), and the
opt-in alternative: the TensorRT plugin where one computes the same thing."""
import numpy as np
import onnx
import pytest
from onnx import helper

from graphfix.fixtures import build
from graphfix.plugin_rules import PLUGIN_DOMAIN
from gf_testing import apply_pass, assert_equivalent, assert_idempotent, ops

CONTRIB = ["contrib_skip_layer_norm", "contrib_skip_layer_norm_opset13", "contrib_gelus", "contrib_fast_gelu",
           "contrib_embed_layer_norm", "contrib_embed_layer_norm_no_mask", "contrib_embed_layer_norm_dynamic"]


def contrib_ops(model):
    return [n.op_type for n in model.graph.node if n.domain == "com.microsoft"]


@pytest.mark.parametrize("fixture", CONTRIB)
@pytest.mark.parametrize("trt", ["8.6", "10.3", "11.0"])
def test_contrib_ops_become_standard_onnx(fixture, trt):
    model = build(fixture)
    fixed, result = apply_pass("decompose-contrib", model, trt=trt)
    assert contrib_ops(model) and not contrib_ops(fixed)
    onnx.checker.check_model(fixed, full_check=True)
    assert_equivalent(model, fixed)
    assert all(c.action == "decompose" for c in result.changes)
    assert_idempotent("decompose-contrib", model, trt=trt)


def test_skip_layer_norm_uses_the_op_from_opset_17_and_primitives_before():
    fixed17, _ = apply_pass("decompose-contrib", build("contrib_skip_layer_norm"))
    assert sorted(ops(fixed17)) == ["Add", "Add", "LayerNormalization", "Relu"]
    ln = next(n for n in fixed17.graph.node if n.op_type == "LayerNormalization")
    assert helper.get_attribute_value(next(a for a in ln.attribute if a.name == "epsilon")) == pytest.approx(1e-12)
    fixed13, _ = apply_pass("decompose-contrib", build("contrib_skip_layer_norm_opset13"))
    assert "LayerNormalization" not in ops(fixed13) and ops(fixed13).count("ReduceMean") == 2


def test_skip_layer_norm_sum_output_keeps_its_name_and_consumer():
    fixed, _ = apply_pass("decompose-contrib", build("contrib_skip_layer_norm"))
    relu = next(n for n in fixed.graph.node if n.op_type == "Relu")
    producer = next(n for n in fixed.graph.node if relu.input[0] in n.output)
    assert relu.input[0] == "sum" and producer.op_type == "Add"


def test_gelu_family_uses_erf_and_tanh():
    fixed, result = apply_pass("decompose-contrib", build("contrib_gelus"))
    assert ops(fixed).count("Erf") == 2 and ops(fixed).count("Tanh") == 1
    assert result.counts == {"fast_gelu": 1, "gelu": 2}


def test_embed_layer_norm_mask_index_counts_ones_like_onnx_runtime():
    model = build("contrib_embed_layer_norm")
    fixed, _ = apply_pass("decompose-contrib", model)
    from graphfix.checks.ort import run_ort
    feeds = {"input_ids": np.array([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]], np.int32),
             "segment_ids": np.array([[0, 0, 0, 1, 1, 1], [0, 1, 0, 1, 0, 1]], np.int32),
             "attention_mask": np.array([[1, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1]], np.int32)}
    a, b = run_ort(model, feeds), run_ort(fixed, feeds)
    assert a["mask_index"].tolist() == b["mask_index"].tolist() == [3, 6]
    np.testing.assert_allclose(b["embeddings"], a["embeddings"], atol=1e-5)
    np.testing.assert_allclose(b["embedding_sum"], a["embedding_sum"], atol=1e-6)


def test_embed_layer_norm_shape_values_are_constants_when_static():
    """Positions (the first S rows) and the mask-less mask_index (B zeros) come from the ids' static
    shape: initializers, no Shape (fold-constants would fold one on a second pipeline run)."""
    model = build("contrib_embed_layer_norm_no_mask")
    fixed, _ = apply_pass("decompose-contrib", model)
    assert not {"Shape", "Slice", "ConstantOfShape"} & set(ops(fixed))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in fixed.graph.initializer}
    table = next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "pos")
    positions = next(v for k, v in inits.items() if k.endswith(".positions"))
    np.testing.assert_array_equal(positions, table[:6])
    lengths = next(n for n in fixed.graph.node if n.name == "lengths")
    assert inits[lengths.input[0]].tolist() == [0, 0] and "pos" not in inits


def test_embed_layer_norm_shape_values_are_computed_when_dynamic():
    model = build("contrib_embed_layer_norm_dynamic")
    fixed, _ = apply_pass("decompose-contrib", model)
    shapes = [n for n in fixed.graph.node if n.op_type == "Shape"]
    assert [n.input[0] for n in shapes] == ["input_ids", "input_ids"] and "ConstantOfShape" in ops(fixed)
    for b, s in ((1, 3), (3, 9)):
        ids = {"input_ids": [b, s], "segment_ids": [b, s]}
        assert_equivalent(model, fixed, shapes=ids)


# -- plugins instead, when asked ------------------------------------------------------------------
def test_contrib_plugins_leave_matching_ops_to_the_plugins_pass():
    model = build("contrib_skip_layer_norm")
    model.graph.node[0].output[3] = ""              # the plugin has one output: drop the sum branch
    del model.graph.node[1]
    del model.graph.output[1]
    opts = {"contrib_plugins": True}
    kept, result = apply_pass("decompose-contrib", model, trt="8.6", options=opts)
    assert contrib_ops(kept) == ["SkipLayerNormalization"] and not result.modified
    fixed, result = apply_pass("plugins", kept, trt="8.6", options=opts)
    assert ops(fixed) == ["Unsqueeze", "Unsqueeze", "CustomSkipLayerNormPluginDynamic", "Squeeze"]
    node = next(n for n in fixed.graph.node if n.op_type == "CustomSkipLayerNormPluginDynamic")
    assert node.domain == PLUGIN_DOMAIN
    fields = {a.name: a for a in node.attribute}
    assert fields["type_id"].type == onnx.AttributeProto.INT and fields["type_id"].i == 0
    assert fields["ld"].i == 8
    for name in ("gamma", "beta", "bias"):
        assert fields[name].type == onnx.AttributeProto.TENSOR
        assert fields[name].t.data_type == onnx.TensorProto.FLOAT and list(fields[name].t.dims) == [8]
    assert fixed.graph.node[-1].output[0] == "y"


def test_skip_layer_norm_plugin_near_miss_falls_back_to_decomposition():
    """The sum output is used: the plugin cannot take the node, so it is decomposed, not left behind."""
    model = build("contrib_skip_layer_norm")
    fixed, result = apply_pass("decompose-contrib", model, trt="8.6", options={"contrib_plugins": True})
    assert not contrib_ops(fixed) and result.counts == {"skip_layer_norm": 1}


def test_fast_gelu_plugin_only_where_tensorrt_ships_it():
    model = build("contrib_fast_gelu")
    opts = {"contrib_plugins": True}
    kept, _ = apply_pass("decompose-contrib", model, trt="10.3", options=opts)
    fixed, _ = apply_pass("plugins", kept, trt="10.3", options=opts)
    assert ops(fixed) == ["CustomGeluPluginDynamic"]
    bias = next(a for a in fixed.graph.node[0].attribute if a.name == "bias")
    assert bias.type == onnx.AttributeProto.TENSOR and list(bias.t.dims) == [8]
    # TensorRT 11 removed CustomGeluPluginDynamic: the op is decomposed instead
    on11, _ = apply_pass("decompose-contrib", model, trt="11.0", options=opts)
    assert not contrib_ops(on11) and "Tanh" in ops(on11)
