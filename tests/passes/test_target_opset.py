"""target-opset: opset 18+ models lowered to what the target parses, node forms converted, idioms fixed."""
from __future__ import annotations

import json
import os
from typing import Dict, List

import numpy as np
import onnx
import pytest

import graphfix

from graphfix.checks.ort import ort_can_load
from graphfix.checks.structural import check_rewrite
from graphfix.fixtures import build
from gf_testing import apply_pass, assert_equivalent, assert_idempotent, ops

PASS = "target-opset"
EXPORTED = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "exported")

LOWERED = ["opset18_reduce_axes_input", "opset18_split_num_outputs", "opset18_split_dynamic",
           "opset19_pad_axes", "opset19_resize_axes", "opset18_scatter", "opset18_group_norm",
           "opset21_group_norm", "opset21_group_norm_dynamic", "opset20_gelu", "opset20_grid_sample", "opset18_mish",
           "opset24_swish", "opset18_if_subgraph", "opset18_dynamo_block",
           "opset22_pool_ceil_same_size"]
REFUSED = {"opset18_reduce_computed_axes_refused": ("mean_dynamic_axes", "computed at run time"),
           "opset19_pad_wrap_refused": ("pad_wrap", "mode='wrap'"),
           "opset19_resize_half_pixel_symmetric_refused": ("resize_hps", "half_pixel_symmetric"),
           "opset18_scatter_max_refused": ("scatter_max", "reduction='max'"),
           "opset18_col2im_refused": ("col2im", "Col2Im does not exist before opset 18"),
           # decompose-ops' rms-normalization rule runs before this pass and is the one decomposition
           "opset23_rms_norm": ("rms_norm", "RMSNormalization does not exist before opset 23"),
           "opset22_pool_ceil_last_window_refused": (
               "avg_pool_ceil", "ceil_mode=1: output spatial size [1, 1] at AveragePool-22 but [2, 2] at "
                                "AveragePool-11 (opset 22 drops a last window that starts in the right padding)"),
           "opset22_pool_ceil_dynamic_refused": ("max_pool_ceil", "ceil_mode=1 on an input with dynamic spatial dims")}
SHAPES = {"opset18_split_dynamic": {"x": [1, 6, 8]},   # 6 + 1 does not split evenly in 3
          "opset21_group_norm_dynamic": {"x": [3, 6, 5, 7]}}


def opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def attrs(node: onnx.NodeProto) -> Dict[str, object]:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def inits(model: onnx.ModelProto) -> Dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


def lowered(name: str, trt: str = "8.6"):
    from graphfix.fixtures import opset as opset_fixtures
    unregistered = {name: getattr(opset_fixtures, name) for name in
                    ("opset23_rms_norm", "opset24_swish", "opset22_pool_ceil_same_size",
                     "opset22_pool_ceil_last_window_refused", "opset22_pool_ceil_dynamic_refused")}
    model = unregistered[name]() if name in unregistered else build(name)
    out, result = apply_pass(PASS, model, trt)
    return model, out, result


def assert_ort_equivalent(before, after, **kw) -> None:
    if not ort_can_load(before):  # e.g. opset 23/24 on the rig's ONNX Runtime 1.19
        pytest.skip("this ONNX Runtime cannot run the original model's opset")
    assert_equivalent(before, after, **kw)


# -- every convertible fixture: opset 17, valid, same outputs, idempotent -------------------------

@pytest.mark.parametrize("name", LOWERED)
def test_lowered_to_opset_17_valid_equivalent_idempotent(name):
    before, after, result = lowered(name)
    assert opset(after) == 17
    assert check_rewrite(before, after) == []           # checker, strict shape inference, I/O
    converted = result.counts["nodes_converted"]
    only_opset = name in ("opset18_scatter", "opset22_pool_ceil_same_size")   # the opset number only
    assert (converted == 0) if only_opset else (converted >= 1)
    assert any(c.action == "set-opset" and c.details["from"] == opset(before) for c in result.changes)
    assert not result.warnings
    assert_idempotent(PASS, before)
    assert_ort_equivalent(before, after, shapes=SHAPES.get(name))


# -- the forms that changed ------------------------------------------------------------------------

def test_reduce_axes_input_back_to_attribute():
    _, after, _ = lowered("opset18_reduce_axes_input")
    assert attrs(node(after, "mean"))["axes"] == [-1] and len(node(after, "mean").input) == 1
    assert attrs(node(after, "peak")) == {"axes": [1], "keepdims": 0}
    assert "Constant" not in ops(after)                       # the axes Constant went with its reader
    norm = node(after, "norm")                                # empty axes, noop=0: every axis
    assert len(norm.input) == 1 and "axes" not in attrs(norm) and "noop_with_empty_axes" not in attrs(norm)
    same = next(n for n in after.graph.node if n.output[0] == "same")
    assert same.op_type == "Identity"                         # noop_with_empty_axes=1: reduce nothing


def test_reduce_over_no_axes_keeps_its_elementwise_step():
    """The spec: ReduceSumSquare over no axes squares (onnx.version_converter keeps the noop
    attribute, which opset 17 lacks). Checked against numpy: ONNX Runtime 1.19 gets the original wrong."""
    from graphfix.checks.ort import run_ort
    from graphfix.fixtures.opset import reduce_noop_elementwise

    before = reduce_noop_elementwise()
    after, result = apply_pass(PASS, before)
    assert opset(after) == 17 and ops(after) == ["Mul", "Log", "Abs"]
    assert check_rewrite(before, after) == []
    x = np.array([[0.5, 1.0, 2.0], [3.0, 0.25, 4.0]], np.float32)
    sq, lg, ab = (run_ort(after, {"x": x})[k] for k in ("sq", "lg", "ab"))
    np.testing.assert_allclose(sq, x * x, rtol=1e-6)
    np.testing.assert_allclose(lg, np.log(x), rtol=1e-6)
    np.testing.assert_allclose(ab, np.abs(x), rtol=1e-6)


def test_reduce_with_computed_axes_refused_keeps_model():
    before, after, result = lowered("opset18_reduce_computed_axes_refused")
    assert opset(after) == 18 and ops(after) == ops(before) and not result.modified
    assert result.counts == {"nodes_unconvertible": 1}


def test_split_num_outputs_to_sizes():
    _, after, _ = lowered("opset18_split_num_outputs")
    uneven, even, given = node(after, "split_uneven"), node(after, "split_even"), node(after, "split_sizes")
    assert all("num_outputs" not in attrs(n) for n in (uneven, even, given))
    assert inits(after)[uneven.input[1]].tolist() == [3, 3, 3, 1]   # ceil(10/4) = 3, last smaller
    assert len(even.input) == 1                                      # 6 / 3: opset-13 equal split
    assert list(given.input) == ["x", "sizes"]


@pytest.mark.parametrize("seq", [4, 6, 8, 9])
def test_split_on_dynamic_axis_computes_sizes(seq):
    before, after, _ = lowered("opset18_split_dynamic")
    assert ops(after)[-1] == "Split" and "num_outputs" not in attrs(after.graph.node[-1])
    assert {"Shape", "Slice", "Div", "Tile", "Concat"} <= set(ops(after))
    assert_equivalent(before, after, shapes={"x": [1, seq, 8]})


def test_pad_axes_folded_into_full_rank_pads():
    _, after, _ = lowered("opset19_pad_axes")
    pad = node(after, "pad_axes")
    assert len(pad.input) == 3
    assert inits(after)[pad.input[1]].tolist() == [0, 1, 0, 2, 0, 0, 0, 1]


def test_resize_axes_expanded_and_defaults_dropped():
    _, after, _ = lowered("opset19_resize_axes")
    up, fit = node(after, "resize_scales"), node(after, "resize_sizes")
    assert inits(after)[up.input[2]].tolist() == [1.0, 1.0, 2.0, 2.0]
    assert inits(after)[fit.input[3]].tolist() == [1, 2, 6, 8]
    for n in (up, fit):
        assert not {"axes", "antialias", "keep_aspect_ratio_policy"} & set(attrs(n))


def test_group_norm_decomposed_over_groups():
    for name in ("opset18_group_norm", "opset21_group_norm"):
        _, after, _ = lowered(name)
        assert "GroupNormalization" not in ops(after) and "InstanceNormalization" in ops(after)
        scale = next(v for k, v in inits(after).items() if k.endswith(".scale"))
        assert scale.shape == (6, 1, 1)                              # per channel, broadcast over H, W


def test_group_norm_restores_a_static_shape_from_an_initializer_a_dynamic_one_from_shape():
    """A Shape of the static input would be folded by fold-constants on a second pipeline run."""
    _, static, _ = lowered("opset21_group_norm")
    back = [n for n in static.graph.node if n.op_type == "Reshape"][-1]
    assert "Shape" not in ops(static) and inits(static)[back.input[1]].tolist() == [2, 6, 4, 4]
    before, dynamic, _ = lowered("opset21_group_norm_dynamic")
    back = [n for n in dynamic.graph.node if n.op_type == "Reshape"][-1]
    shape = next(n for n in dynamic.graph.node if n.op_type == "Shape")
    assert shape.input[0] == "x" and back.input[1] == shape.output[0]
    for dims in ([1, 6, 2, 3], [4, 6, 5, 5]):
        assert_equivalent(before, dynamic, shapes={"x": dims})


def test_gelu_decomposed_exact_and_tanh():
    _, after, _ = lowered("opset20_gelu")
    assert "Gelu" not in ops(after) and "Erf" in ops(after) and "Tanh" in ops(after)


def test_grid_sample_mode_renamed_and_pool_dilations_dropped():
    _, after, _ = lowered("opset20_grid_sample")
    assert attrs(node(after, "grid_sample"))["mode"] == "bilinear"
    assert "dilations" not in attrs(node(after, "avg_pool"))


def test_mish_decomposed_and_cast_saturate_default_dropped():
    _, after, _ = lowered("opset18_mish")
    assert ops(after) == ["Softplus", "Tanh", "Mul", "Cast"]
    assert attrs(node(after, "cast_saturate")) == {"to": onnx.TensorProto.FLOAT16}


def test_rms_norm_decomposed_by_the_pipeline_and_swish_here():
    """RMSNormalization has one decomposition, decompose-ops' rule; in the pipeline it runs first and
    this pass lowers what it emits."""
    fixed, _ = graphfix.fix(lowered("opset23_rms_norm")[0], trt="8.6", check="none")
    assert ops(fixed) == ["Mul", "ReduceMean", "Add", "Sqrt", "Reciprocal", "Mul", "Mul"] and opset(fixed) == 17
    assert attrs(fixed.graph.node[1])["axes"] == [-1]
    _, swish, _ = lowered("opset24_swish")
    assert ops(swish) == ["Mul", "Sigmoid", "Mul"]


def test_pool_ceil_mode_lowered_where_the_output_size_is_the_same():
    """Regression (node tests test_averagepool_2d_ceil_last_window_starts_on_pad and
    test_maxpool_2d_ceil_output_size_reduce_by_one were lowered, then rolled back by shape inference):
    crossing opset 22 with ceil_mode=1 is allowed only where both size rules agree."""
    before, after, result = lowered("opset22_pool_ceil_same_size")
    assert attrs(node(after, "max_pool"))["ceil_mode"] == 1
    inferred = onnx.shape_inference.infer_shapes(after, strict_mode=True)
    assert [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in inferred.graph.output] == \
        [[1, 1, 2, 2], [1, 1, 3, 3]]
    _, refused, refusal = lowered("opset22_pool_ceil_last_window_refused")
    assert opset(refused) == 22 and not refusal.modified


def test_subgraph_nodes_converted():
    _, after, _ = lowered("opset18_if_subgraph")
    branch = node(after, "branch")
    for a in branch.attribute:
        reduce_node = a.g.node[0]
        assert len(reduce_node.input) == 1 and attrs(reduce_node)["axes"] == [1]


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_node_reported_and_opset_kept(name):
    node_name, why = REFUSED[name]
    before, after, result = lowered(name)
    assert opset(after) == opset(before) and ops(after) == ops(before)
    assert not result.modified
    assert result.counts["nodes_unconvertible"] == 1
    assert any(node_name in w and why in w for w in result.warnings), result.warnings
    assert any(w.startswith(f"kept opset {opset(before)}") for w in result.warnings)
    assert check_rewrite(before, after) == []


# -- TensorRT < 10 idioms --------------------------------------------------------------------------

def test_shape_start_end_becomes_slice_for_trt86_only():
    before, after, result = lowered("opset17_shape_range")
    assert opset(after) == 17
    assert all(not attrs(n) for n in after.graph.node if n.op_type == "Shape")
    assert ops(after).count("Slice") == 2 and result.counts["shape_ranges_sliced"] == 2
    assert_equivalent(before, after, shapes={"x": [1, 5, 8]})
    assert_idempotent(PASS, before)
    _, untouched, result10 = lowered("opset17_shape_range", trt="10.0")
    assert not result10.modified and ops(untouched) == ops(before)


def test_dynamo_block_fixed_for_trt86():
    before, after, result = lowered("opset18_dynamo_block")
    assert "CastLike" not in ops(after) and attrs(node(after, "type_as")) == {"to": onnx.TensorProto.FLOAT}
    assert "num_outputs" not in attrs(node(after, "qkv_split"))
    assert attrs(node(after, "score"))["axes"] == [-1]
    assert not any(attrs(n) for n in after.graph.node if n.op_type == "Shape")
    assert result.counts == {"nodes_converted": 2, "shape_ranges_sliced": 1, "castlike_replaced": 1}
    assert_equivalent(before, after, shapes={"x": [1, 6, 16]})


def test_weight_dequantize_gets_an_int8_zero_point_for_trt86_only():
    before, after, result = lowered("qdq_weights_without_zero_point")
    for name, scale in (("dq_w1", "s1"), ("dq_w2", "s2")):
        dq = node(after, name)
        assert len(dq.input) == 3 and dq.input[2], dq.input
        zero = inits(after)[dq.input[2]]
        assert zero.dtype == np.int8 and zero.shape == inits(after)[scale].shape and not zero.any()
    assert node(after, "dq_x").input == node(before, "dq_x").input      # had a zero point already
    assert result.counts == {"zero_points_added": 2}
    check_rewrite(before, after)
    assert_equivalent(before, after)
    assert_idempotent(PASS, before)
    _, untouched, result10 = lowered("qdq_weights_without_zero_point", trt="10.0")
    assert not result10.modified and ops(untouched) == ops(before)


def test_per_axis_zero_point_follows_the_scale_and_uint8_data_is_left_alone():
    from graphfix.fixtures._make import const, make_model, vi
    nodes = [onnx.helper.make_node("DequantizeLinear", ["w_q", "w_s"], ["w"], name="dq_axis", axis=1),
             onnx.helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
             onnx.helper.make_node("DequantizeLinear", ["u_q", "u_s"], ["u"], name="dq_uint8"),
             onnx.helper.make_node("Add", ["y", "u"], ["z"], name="add")]
    model = make_model(nodes, [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])],
                       [vi("z", onnx.TensorProto.FLOAT, [2, 3])],
                       [const("w_q", np.arange(12).reshape(4, 3) - 6, np.int8), const("w_s", [0.1, 0.2, 0.3], np.float32),
                        const("u_q", [1, 2, 3], np.uint8), const("u_s", 0.5, np.float32)])
    after, result = apply_pass(PASS, model)
    zero = inits(after)[node(after, "dq_axis").input[2]]
    assert zero.shape == (3,) and zero.dtype == np.int8
    assert list(node(after, "dq_uint8").input) == ["u_q", "u_s"]      # 8.6 rejects UINT8 data anyway
    assert result.counts == {"zero_points_added": 1}
    assert_equivalent(model, after)


def test_trt10_keeps_opset_18_to_20_and_idioms():
    before, after, result = lowered("opset18_dynamo_block", trt="10.0")
    assert not result.modified and ops(after) == ops(before) and opset(after) == 18
    before = lowered("opset23_rms_norm")[0]                   # TensorRT 10 parses up to 20
    after, _ = graphfix.fix(before, trt="10.0", check="none")   # decompose-ops, then this pass
    assert opset(after) == 20
    reduce_node = node(after, next(n.name for n in after.graph.node if n.op_type == "ReduceMean"))
    assert len(reduce_node.input) == 2                                # opset-18+ form: axes input
    assert_ort_equivalent(before, after)


def test_trt9_lowers_models_whose_reduce_axes_input_it_ignores():
    """TensorRT 9.x parses opset 19 but reads Reduce* with opset-17 code: axes input ignored."""
    before, after, result = lowered("opset18_reduce_axes_input", trt="9.0")
    assert opset(after) == 17
    assert "axes input is ignored" in next(c for c in result.changes if c.action == "set-opset").details["why"]
    assert_equivalent(before, after)
    _, kept, result = lowered("opset18_scatter", trt="9.0")                  # no such form: opset 18 stays
    assert opset(kept) == 18 and not result.modified


def test_profile_facts_the_pass_reads():
    """The pass decides from the profiles; these facts must stay spelled the way it reads them."""
    from graphfix.passes.target_opset import _has_rule, _imports
    from graphfix.profiles import load_profile

    p86, p9, p10 = load_profile("8.6"), load_profile("9.0"), load_profile("10.0")
    assert p86.max_opset == 17 and _has_rule(p86, "Shape", "shape_slice") and not _imports(p86, "CastLike")
    assert _has_rule(p9, "Shape", "shape_slice") and _imports(p9, "CastLike")
    assert _has_rule(p9, "ReduceMean", "reduce_axes_ignored")
    assert not _has_rule(p10, "Shape", "shape_slice") and not _has_rule(p10, "ReduceMean", "reduce_axes_ignored")


def test_deprecated_group_norm_18_rewritten_for_every_target():
    before, after, result = lowered("opset18_group_norm", trt="10.0")
    assert opset(after) == 18 and "GroupNormalization" not in ops(after)
    assert result.counts == {"deprecated_replaced": 1}
    onnx.checker.check_model(after)              # the input fails it: GroupNormalization-18 is deprecated
    assert_equivalent(before, after)
    assert_idempotent(PASS, before, trt="10.0")


# -- real exports of torch.onnx's dynamo exporter (fixtures/exported) -------------------------------

def _exported(kind: str) -> List[dict]:
    with open(os.path.join(EXPORTED, "manifest.json")) as f:
        return [m for m in json.load(f)["models"] if m["exporter"] == kind]


@pytest.mark.parametrize("entry", _exported("dynamo"), ids=lambda m: m["file"])
def test_dynamo_exports_lowered_for_trt86(entry):
    before = onnx.load(os.path.join(EXPORTED, entry["file"]))
    after, result = apply_pass(PASS, before, "8.6")
    assert opset(before) == 18 and opset(after) == 17
    assert not any(attrs(n) for n in after.graph.node if n.op_type == "Shape")
    assert not any("num_outputs" in attrs(n) for n in after.graph.node if n.op_type == "Split")
    assert check_rewrite(before, after) == []
    assert_equivalent(before, after, shapes={i["name"]: i["sample_shape"] for i in entry["inputs"]})
    assert_idempotent(PASS, before)


@pytest.mark.parametrize("entry", _exported("torchscript"), ids=lambda m: m["file"])
def test_torchscript_exports_untouched(entry):
    before = onnx.load(os.path.join(EXPORTED, entry["file"]))
    _, result = apply_pass(PASS, before, "8.6")
    assert not result.modified and not result.warnings


# -- on the rig: TensorRT parses, builds and matches ONNX Runtime ---------------------------------

TRT_CASES = ["opset18_dynamo_block", "opset18_reduce_axes_input", "opset18_split_num_outputs",
             "opset18_split_dynamic", "opset19_pad_axes", "opset19_resize_axes", "opset20_gelu",
             "opset18_group_norm", "opset21_group_norm", "opset17_shape_range"]


@pytest.mark.trt
@pytest.mark.parametrize("case", TRT_CASES + [m["file"] for m in _exported("dynamo")])
def test_trt_builds_lowered_model(case, tmp_path):
    """TensorRT (8.6 on the rig) parses, builds and matches ONNX Runtime on the lowered model."""
    from graphfix.checks.tensorrt.trt import build_and_compare, parse_in_subprocess
    from graphfix.checks.tensorrt.env import trt_version

    trt = trt_version() or "8.6"
    if case.endswith(".onnx"):
        before = onnx.load(os.path.join(EXPORTED, case))
    else:
        before = build(case)
    after, _ = apply_pass(PASS, before, trt)
    original, fixed = str(tmp_path / "original.onnx"), str(tmp_path / "fixed.onnx")
    onnx.save(before, original)
    onnx.save(after, fixed)
    plain = parse_in_subprocess(original, timeout=300)
    print(f"{case}: original parses on TensorRT {trt}: {plain.parsed} "
          f"({'crashed' if plain.crashed else '; '.join(e['message'] for e in plain.errors[:2])})")
    result = build_and_compare(original, fixed, timeout=600, progress=False)
    print(result.summary())
    assert result.passed, result.detail
