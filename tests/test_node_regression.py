"""Regression net on a fixed sample of ONNX's backend node tests (benchmarks/node_tests_regression.py
runs all ~1,600): after graphfix, each model's ONNX Runtime outputs still match the expected
outputs shipped with it whenever the original's did, and graphfix never crashes on them.

The sample covers the ops the passes touch (Reduce*, Split, Slice, Reshape, Expand, Concat, Cast,
LayerNormalization and its decomposed form, Where, Gather, Pad, Resize, ...); it is chosen by the
rule in node_tests_regression.sample_models and spelled out here so a reader sees what runs.
The node tests ship in onnx wheels up to 1.19; where the installed onnx lacks them they are fetched
once into ~/.cache/graphfix (pip download onnx==1.19.1) or read from $GRAPHFIX_NODE_TESTS.
"""
import importlib.util
import os

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_SPEC = importlib.util.spec_from_file_location(
    "node_tests_regression", os.path.join(_HERE, "..", "benchmarks", "node_tests_regression.py"))
nr = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(nr)

# Printed by `python benchmarks/node_tests_regression.py --print-sample` (onnx 1.19.1 node tests).
SAMPLE = [
    "test_attention_4d_diff_heads_mask4d_padded_kv_expanded",
    "test_attention_4d_expanded",
    "test_attention_4d_gqa_with_past_and_present_expanded",
    "test_attention_4d_with_past_and_present_qk_matmul_bias_4d_mask_causal_expanded",
    "test_cast_FLOAT4E2M1_to_FLOAT",
    "test_cast_UINT4_to_UINT8",
    "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ_expanded",
    "test_center_crop_pad_crop_expanded",
    "test_concat_2d_axis_1",
    "test_concat_3d_axis_negative_1",
    "test_dynamicquantizelinear_max_adjusted_expanded",
    "test_edge_pad",
    "test_expand_dim_changed",
    "test_expand_dim_unchanged",
    "test_gather_1",
    "test_gather_negative_indices",
    "test_layer_normalization_2d_axis_negative_1_expanded",
    "test_layer_normalization_3d_axis0_epsilon",
    "test_layer_normalization_4d_axis3_expanded",
    "test_layer_normalization_4d_axis_negative_1",
    "test_layer_normalization_4d_axis_negative_1_expanded_ver18",
    "test_logsoftmax_negative_axis_expanded",
    "test_nllloss_NCd1_weight_expanded",
    "test_range_float_type_positive_delta",
    "test_range_int32_type_negative_delta",
    "test_reduce_l2_default_axes_keepdims_random_expanded",
    "test_reduce_l2_do_not_keepdims_example",
    "test_reduce_l2_empty_set",
    "test_reduce_l2_keep_dims_random",
    "test_reduce_max_default_axes_keepdims_random",
    "test_reduce_max_empty_set",
    "test_reduce_max_keepdims_random",
    "test_reduce_mean_do_not_keepdims_example",
    "test_reduce_mean_keepdims_example",
    "test_reduce_mean_negative_axes_keepdims_example",
    "test_reduce_min_default_axes_keepdims_random",
    "test_reduce_min_empty_set",
    "test_reduce_min_keepdims_random",
    "test_reduce_prod_do_not_keepdims_example",
    "test_reduce_prod_empty_set",
    "test_reduce_prod_keepdims_random",
    "test_reduce_sum_empty_axes_input_noop_example",
    "test_reduce_sum_negative_axes_keepdims_example",
    "test_reduce_sum_square_do_not_keepdims_random_expanded",
    "test_reshape_negative_dim",
    "test_reshape_reordered_last_dims",
    "test_resize_downsample_sizes_cubic",
    "test_resize_upsample_scales_nearest_axes_3_2",
    "test_rms_normalization_2d_axis0_expanded",
    "test_rotary_embedding_no_position_ids_interleaved_expanded",
    "test_slice_default_steps",
    "test_slice_negative_axes",
    "test_split_equal_parts_2d",
    "test_split_variable_parts_default_axis_opset13",
    "test_top_k_negative_axis",
    "test_top_k_smallest",
    "test_unsqueeze_axis_1",
    "test_unsqueeze_two_axes",
    "test_where_example",
    "test_where_long_example",
]

TARGETS = ("8.6", "10.0")   # 8.6 runs the INT64 narrowing; 10 must leave INT64 alone


@pytest.fixture(scope="module")
def node_root():
    root = nr.find_node_tests()
    if root is None:
        message = (f"ONNX node tests not found and could not be fetched (pip download "
                   f"onnx=={nr.NODE_TESTS_ONNX_VERSION}); set GRAPHFIX_NODE_TESTS to their directory")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


def test_sample_is_what_the_rule_picks(node_root):
    assert len(SAMPLE) == nr.SAMPLE_SIZE
    assert nr.sample_models(node_root) == SAMPLE


@pytest.mark.parametrize("trt", TARGETS)
@pytest.mark.parametrize("name", SAMPLE)
def test_fixed_model_matches_expected_outputs(node_root, name, trt):
    rec = nr.run_case(node_root, name, trt=trt)
    assert rec["fix"] == "ok", rec["fix"]
    if rec["before"] == "match":
        assert rec["after"] == "match", f"graphfix broke it: {rec['after']}; passes: {rec['pass_problems']}"
    elif rec["before"].startswith("mismatch"):
        # ONNX Runtime disagrees with the expected outputs already: graphfix must not change its answer
        assert rec["same_as_original"], rec.get("differs_from_original")
    else:
        # ONNX Runtime cannot run the original (an exotic dtype it cannot feed, a missing kernel):
        # the fixed model may not run either, but must not run and give other answers
        assert rec["after"] == "match" or rec["after"].startswith("error"), (rec["before"], rec["after"])


# Node tests on which a pass once failed or was rolled back (found by the full run): each pass now
# applies, leaves the model alone or is skipped with a reason, and the outputs still match.
PASS_PROBLEMS_FIXED = [
    # int64-to-int32: a constant read as Pad axes (INT64-only for ONNX shape inference) was narrowed
    "test_attention_4d_diff_heads_mask4d_padded_kv_expanded",
    "test_center_crop_pad_crop_axes_chw_expanded",
    "test_center_crop_pad_crop_axes_hwc_expanded",
    "test_center_crop_pad_crop_negative_axes_hwc_expanded",
    # normalize, target-opset: graphsurgeon could not export optional values (graph_utils round trip)
    "test_identity_opt",
    "test_if_opt",
    "test_loop16_seq_none",
    "test_optional_get_element_optional_sequence",
    "test_optional_get_element_optional_tensor",
    "test_optional_has_element_empty_optional_input",
    "test_optional_has_element_optional_input",
    "test_optional_has_element_tensor_input",
    # target-opset: ceil_mode pooling lowered across opset 22's last-window rule (now refused)
    "test_averagepool_2d_ceil_last_window_starts_on_pad",
    "test_maxpool_2d_ceil_output_size_reduce_by_one",
]


@pytest.mark.parametrize("name", PASS_PROBLEMS_FIXED)
def test_former_pass_problems_stay_fixed(node_root, name):
    rec = nr.run_case(node_root, name, trt="8.6")
    assert rec["fix"] == "ok", rec["fix"]
    assert rec["pass_problems"] == []
    if "Failed to load model" in (rec["before"] or ""):   # an opset newer than this ONNX Runtime (< 1.23)
        pytest.skip(f"the installed ONNX Runtime cannot load the original: {rec['before'][:120]}")
    assert rec["after"] == rec["before"], (rec["before"], rec["after"])
    assert rec["same_as_original"] is not False, rec.get("differs_from_original")
