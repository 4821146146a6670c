"""decompose-ops: standard ops TensorRT 8.6 computes wrong or cannot import -> ops it computes right,
checked in ONNX Runtime (and against an exact numpy reference for integer scatter), named by check."""
import numpy as np
import onnx
import pytest

import graphfix

from graphfix.diagnosis import check_model
from graphfix.fixtures import build
from gf_testing import apply_pass, assert_equivalent, assert_idempotent, ops

SCATTER = ["scatter_elements_add_duplicates", "scatter_elements_max_axis0", "scatter_elements_add_int32",
           "scatternd_mul_duplicates", "scatternd_min_elements"]
OTHER = ["bitwise_int32_ops", "center_crop_pad_const", "col2im_fold_overlap", "hardmax_middle_axis",
         "lppool_p3_same_upper", "avgpool_dilated_exclude_pad"]
OPSET23 = ["attention_gqa_causal_3d", "attention_bool_mask_4d", "attention_kv_cache_softcap",
           "rotary_interleaved_partial_4d", "rotary_halves_3d"]
EINSUM = ["einsum_diagonal", "einsum_ellipsis_attention_scores", "einsum_broadcast_batch_matmul",
          "einsum_uppercase_projection", "einsum_ellipsis_misc"]


def _run(model, feeds):
    """ONNX Runtime's outputs; onnx's reference evaluator where the installed ONNX Runtime cannot load
    the opset (opset 23 needs ONNX Runtime >= 1.22; the oldest supported is 1.18)."""
    from graphfix.checks.ort import ort_can_load
    if not ort_can_load(model):
        from onnx.reference import ReferenceEvaluator
        return ReferenceEvaluator(model).run(None, feeds)
    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.mark.parametrize("fixture", SCATTER + EINSUM + OTHER + OPSET23)
def test_rewritten_equivalent_idempotent_and_named_by_check(fixture):
    model = build(fixture)
    from graphfix.checks.ort import ort_can_load
    if not ort_can_load(model):   # opset 23 on ONNX Runtime < 1.22: test_opset23_ops_match_the_onnx_reference judges it
        pytest.skip(f"the installed ONNX Runtime cannot load {fixture} (opset 23)")
    findings = [f for f in check_model(model, trt="8.6").findings if f.node]
    assert findings and all(f.fix_pass == "decompose-ops" for f in findings)
    fixed, result = apply_pass("decompose-ops", model)
    assert result.modified and not result.warnings
    assert not {"Einsum", "ScatterElements", "ScatterND"} & set(ops(fixed))
    onnx.checker.check_model(fixed, full_check=True)
    assert_equivalent(model, fixed)
    assert_idempotent("decompose-ops", model)
    whole, report = graphfix.fix(model, trt="8.6")   # the pipeline leaves nothing for check to flag
    assert report.ok
    assert {p["name"]: p["status"] for p in report.to_json()["passes"]}["decompose-ops"] == "applied"
    assert not [f for f in check_model(whole, trt="8.6").findings if f.node and f.severity != "warning"]


def test_scatter_duplicates_reduce_exactly():
    """Duplicates are the point of a reduction: compare with a numpy loop (integers: exact)."""
    model = build("scatter_elements_add_int32")
    fixed, _ = apply_pass("decompose-ops", model)
    data = np.arange(12, dtype=np.int32).reshape(2, 6)
    upd = np.array([[100, 10, 1], [7, 70, 700]], np.int32)
    want = data.copy()
    for i, row in enumerate([[5, 5, 0], [1, 1, 1]]):
        for j, k in enumerate(row):
            want[i, k] += upd[i, j]
    got = _run(fixed, {"data": data, "upd": upd})[0]
    np.testing.assert_array_equal(got, want)
    # constant indices: the one-hot mask is computed in the pass (fold-constants ran before it)
    assert ops(fixed) == ["Unsqueeze", "Where", "ReduceSum", "Transpose", "Add"]
    masks = [i for i in fixed.graph.initializer if i.data_type == onnx.TensorProto.BOOL]
    assert len(masks) == 1 and list(masks[0].dims) == [2, 3, 6]


def test_scatternd_mul_duplicate_rows():
    model = build("scatternd_mul_duplicates")
    fixed, _ = apply_pass("decompose-ops", model)
    data = np.full((4, 3), 2.0, np.float32)
    upd = np.array([[1, 2, 3], [4, 5, 6], [0.5, 0.5, 0.5]], np.float32)
    want = data.copy()
    want[1] *= upd[0] * upd[1]
    want[3] *= upd[2]
    np.testing.assert_array_equal(_run(fixed, {"data": data, "upd": upd})[0], want)


def test_einsum_becomes_matmul():
    fixed, result = apply_pass("decompose-ops", build("einsum_ellipsis_attention_scores"))
    assert "MatMul" in ops(fixed) and "Transpose" in ops(fixed)
    assert result.changes[0].details["equation"] == "...qd,...kd->...qk"


def test_einsum_diagonal_is_taken_exactly():
    fixed, result = apply_pass("decompose-ops", build("einsum_diagonal"))
    assert "Einsum" not in ops(fixed) and "Where" in ops(fixed) and not result.warnings
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    a[0, 1] = np.inf                       # off the diagonal: must not leak into the result
    np.testing.assert_array_equal(_run(fixed, {"x0": a})[0], np.diagonal(a))


def test_einsum_unknown_rank_ellipsis_is_refused_with_a_note_and_check_names_no_fix():
    model = build("einsum_diagonal")
    model.graph.input[0].type.tensor_type.ClearField("shape")
    fixed, result = apply_pass("decompose-ops", model)
    assert not result.modified and ops(fixed) == ["Einsum"]
    assert any("unknown rank" in w for w in result.warnings)
    flagged = [f for f in check_model(model, trt="8.6").findings if f.rule == "einsum_features"]
    assert flagged and all(f.fix_pass is None for f in flagged)


def test_attention_whose_qk_output_is_used_is_left_to_expand_functions():
    """decompose-ops refuses it (near miss); check names the fallback, ONNX's function body."""
    model = build("attention_bool_mask_4d")
    model.graph.node[0].output.extend(["", "", "qk"])
    model.graph.output.append(onnx.helper.make_tensor_value_info("qk", onnx.TensorProto.FLOAT, [1, 2, 3, 5]))
    finding = next(f for f in check_model(model, trt="8.6").findings if f.op == "Attention")
    assert finding.rule == "unsupported-op" and finding.fix_pass == "expand-functions"
    _, result = apply_pass("decompose-ops", model)
    assert not result.modified and any("qk_matmul_output" in w for w in result.warnings)
    assert next(f for f in check_model(build("attention_bool_mask_4d"), trt="8.6").findings
                if f.op == "Attention").fix_pass == "decompose-ops"


@pytest.mark.parametrize("trt, fixtures", [
    ("10.12", ("scatter_elements_add_duplicates", "einsum_ellipsis_attention_scores")),
    ("11.0", ("einsum_ellipsis_attention_scores",)),
])
def test_not_applied_where_the_profile_computes_it(trt, fixtures):
    for fixture in fixtures:
        _, result = apply_pass("decompose-ops", build(fixture), trt=trt)
        assert not result.modified


def test_applied_on_11_where_tensorrt_rtx_refused_it():
    """The 11.x profile learned from TensorRT-RTX 1.7 that ScatterElements reductions are refused
    ('Unsupported reduction type'): the same rule rewrites them there, with no code branch."""
    assert apply_pass("decompose-ops", build("scatter_elements_add_duplicates"), trt="11.0")[1].modified


def test_applied_per_the_targets_profile():
    """TensorRT 10.3 computes ScatterElements reductions but rejects ScatterND's (profile trt-10)."""
    assert not apply_pass("decompose-ops", build("scatter_elements_add_duplicates"), trt="10.3")[1].modified
    assert apply_pass("decompose-ops", build("scatternd_mul_duplicates"), trt="10.3")[1].modified


def test_bitwise_exact_over_the_whole_int32_range():
    """Extremes included (INT32_MIN/MAX, -1, 0): the arithmetic never overflows."""
    fixed, result = apply_pass("decompose-ops", build("bitwise_int32_ops"))
    assert not {"BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot"} & set(ops(fixed))
    lo, hi = np.iinfo(np.int32).min, np.iinfo(np.int32).max
    a = np.array([[lo, hi, -1, 0], [5, -6, lo, hi], [12345, -98765, 7, -8]], np.int32)
    b = np.array([[hi, lo, lo, -1], [3, -3, -1, 0], [-1, 255, -2, 1 << 30]], np.int32)
    got = _run(fixed, {"a": a, "b": b})
    for value, want in zip(got, [a & b, a | b, a ^ b, ~a]):
        np.testing.assert_array_equal(value, want)


def test_bitwise_int16_goes_through_int32():
    model = build("bitwise_int16_and")
    fixed, _ = apply_pass("decompose-ops", model)
    assert ops(fixed).count("Cast") == 3 and "BitwiseAnd" not in ops(fixed)
    a = np.array([-32768, 32767, -1, 0, -300], np.int16)
    b = np.array([-1, -32768, 12345, -1, 0x0F0F], np.int16)
    np.testing.assert_array_equal(_run(fixed, {"a": a, "b": b})[0], a & b)
    assert_idempotent("decompose-ops", model)


def test_center_crop_pad_is_slice_and_pad():
    fixed, result = apply_pass("decompose-ops", build("center_crop_pad_const"))
    assert ops(fixed) == ["Slice", "Pad"]
    x = np.arange(90, dtype=np.float32).reshape(1, 5, 6, 3)
    want = np.zeros((1, 4, 9, 3), np.float32)
    want[:, :, 1:7, :] = x[:, 0:4, :, :]        # crop 5 -> 4 from (5-4)//2 = 0; pad 6 -> 9: 1 before
    np.testing.assert_array_equal(_run(fixed, {"x": x})[0], want)


def _col2im_loop(cols, image, block, strides, pads):
    """Col2Im by its definition, 2-D: add each column's block into the padded image, cut the pads."""
    n, ck, _ = cols.shape
    k = block[0] * block[1]
    padded = np.zeros((n, ck // k, image[0] + pads[0] + pads[2], image[1] + pads[1] + pads[3]), cols.dtype)
    rows = (padded.shape[2] - block[0]) // strides[0] + 1
    columns = (padded.shape[3] - block[1]) // strides[1] + 1
    blocks = cols.reshape(n, ck // k, block[0], block[1], rows, columns)
    for r in range(rows):
        for c in range(columns):
            padded[:, :, r * strides[0]:r * strides[0] + block[0],
                   c * strides[1]:c * strides[1] + block[1]] += blocks[:, :, :, :, r, c]
    return padded[:, :, pads[0]:padded.shape[2] - pads[2], pads[1]:padded.shape[3] - pads[3]]


def test_col2im_is_a_one_hot_conv_transpose():
    model = build("col2im_fold_overlap")
    fixed, _ = apply_pass("decompose-ops", model)
    assert ops(fixed) == ["Reshape", "ConvTranspose", "Pad"]   # the uncovered row is zero-filled
    conv = next(n for n in fixed.graph.node if n.op_type == "ConvTranspose")
    attrs = {a.name: list(a.ints) or a.i for a in conv.attribute}
    assert attrs["group"] == 2 and attrs["pads"] == [1, 0, 0, 0]   # end pads less the uncovered row/column
    cols = np.random.default_rng(5).integers(-8, 8, (1, 12, 9)).astype(np.float32)   # small integers: sums exact
    want = _col2im_loop(cols, [7, 8], [3, 2], [2, 3], [1, 0, 0, 1])
    np.testing.assert_array_equal(_run(fixed, {"cols": cols})[0], want)
    np.testing.assert_array_equal(_run(model, {"cols": cols})[0], want)


def test_hardmax_takes_the_first_of_tied_maxima():
    """Ties are where Hardmax is easy to get wrong (ArgMax/TopK tie order is not ONNX's); numpy's
    argmax returns the first maximum, as ONNX specifies."""
    model = build("hardmax_middle_axis")
    fixed, _ = apply_pass("decompose-ops", model)
    assert "Hardmax" not in ops(fixed) and "ArgMax" not in ops(fixed)
    x = np.array([[[1, 5, 2], [3, 5, 2], [3, 0, 2], [0, 5, -1]],
                  [[-1, -2, -3], [-1, -2, -3], [-4, -2, -3], [-1, -2, -3]]], np.float32)
    want = np.zeros_like(x)
    np.put_along_axis(want, np.argmax(x, axis=1)[:, None, :], 1.0, axis=1)
    np.testing.assert_array_equal(_run(fixed, {"x": x})[0], want)
    np.testing.assert_array_equal(_run(model, {"x": x})[0], want)


def _pool_windows(x, kernel, strides, dilations, pads):
    """Every 2-D pooling window by its definition: (values, in-input mask) per output position."""
    n, c, h, w = x.shape
    padded = np.zeros((n, c, h + pads[0] + pads[2], w + pads[1] + pads[3]), x.dtype)
    inside = np.zeros(padded.shape[2:], bool)
    padded[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + w] = x
    inside[pads[0]:pads[0] + h, pads[1]:pads[1] + w] = True
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    rows = (padded.shape[2] - span[0]) // strides[0] + 1
    cols = (padded.shape[3] - span[1]) // strides[1] + 1
    for r in range(rows):
        for q in range(cols):
            sl = (slice(r * strides[0], r * strides[0] + span[0], dilations[0]),
                  slice(q * strides[1], q * strides[1] + span[1], dilations[1]))
            yield r, q, padded[:, :, sl[0], sl[1]], inside[sl]


def test_pooling_via_conv_matches_the_definition():
    rng = np.random.default_rng(11)
    fixed, _ = apply_pass("decompose-ops", build("avgpool_dilated_exclude_pad"))
    assert ops(fixed) == ["Conv", "Div"]
    x = rng.integers(-8, 8, (2, 2, 6, 7)).astype(np.float32)
    want = np.zeros((2, 2, 6, 4), np.float32)
    for r, q, window, inside in _pool_windows(x, [2, 3], [1, 1], [2, 2], [1, 1, 1, 0]):
        want[:, :, r, q] = window.sum(axis=(2, 3)) / inside.sum()      # pads not counted
    np.testing.assert_allclose(_run(fixed, {"x": x})[0], want, rtol=1e-6)
    fixed, _ = apply_pass("decompose-ops", build("lppool_p3_same_upper"))
    assert ops(fixed) == ["Abs", "Pow", "Conv", "Pow"]
    x = rng.standard_normal((1, 3, 7, 6)).astype(np.float32)
    want = np.zeros((1, 3, 4, 3), np.float64)
    # SAME_UPPER, stride 2: H 7 -> 4 needs 2 pad rows (1 before, 1 after); W 6 -> 3 needs 0
    for r, q, window, _ in _pool_windows(x.astype(np.float64), [3, 2], [2, 2], [1, 1], [1, 0, 1, 0]):
        want[:, :, r, q] = (np.abs(window) ** 3).sum(axis=(2, 3)) ** (1 / 3)
    np.testing.assert_allclose(_run(fixed, {"x": x})[0], want, rtol=1e-5)


def _skip_old_onnx_reference():
    """onnx 1.19's reference Attention gives NaN on fully masked rows where onnx >= 1.20's (and ONNX
    Runtime, and the rewrite) give 0 (seen on the oldest supported set, .ci/deps-matrix oldest)."""
    version = tuple(int(p) for p in onnx.__version__.split(".")[:2])
    if version < (1, 20):
        pytest.skip(f"onnx {onnx.__version__}: its reference Attention differs on fully masked rows")


@pytest.mark.parametrize("fixture", OPSET23)
def test_opset23_ops_match_the_onnx_reference(fixture):
    """onnx.reference.ReferenceEvaluator implements Attention/RotaryEmbedding exactly as specified:
    the rewrite run in ONNX Runtime must agree with it on the original (not only with ORT's kernels)."""
    from onnx.reference import ReferenceEvaluator
    model = build(fixture)
    if fixture.startswith("attention"):
        _skip_old_onnx_reference()
    fixed, _ = apply_pass("decompose-ops", model)
    assert not {"Attention", "RotaryEmbedding"} & set(ops(fixed))
    rng = np.random.default_rng(3)
    feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in model.graph.input}
    want = ReferenceEvaluator(model).run(None, feeds)
    got = _run(fixed, feeds)
    assert len(got) == len(want)   # present_key / present_value too, where the model has them
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_attention_short_mask_is_padded_like_the_reference():
    """A mask covering only the new keys is padded with -inf for the cached ones (onnx.reference;
    ONNX Runtime 1.32 refuses such a mask, so only the reference judges this case)."""
    from onnx.reference import ReferenceEvaluator
    _skip_old_onnx_reference()
    model = build("attention_kv_cache_softcap")
    mask = next(i for i in model.graph.initializer if i.name == "mask")
    mask.CopyFrom(onnx.numpy_helper.from_array(np.array([[0.0, -1.5], [0.5, 0.0]], np.float32), "mask"))
    fixed, _ = apply_pass("decompose-ops", model)
    assert "Attention" not in ops(fixed)
    rng = np.random.default_rng(5)
    feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in model.graph.input}
    for g, w in zip(_run(fixed, feeds), ReferenceEvaluator(model).run(None, feeds)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
