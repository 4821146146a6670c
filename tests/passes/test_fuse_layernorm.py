"""fuse-layernorm: decomposed LayerNorm chains -> LayerNormalization; near misses and RMSNorm reported."""
from __future__ import annotations

import json
import os
from typing import Dict, List

import numpy as np
import onnx
import pytest

from graphfix.checks.structural import check_rewrite
from graphfix.fixtures import build
from gf_testing import apply_pass, assert_equivalent, assert_idempotent, ops

PASS = "fuse-layernorm"
EXPORTED = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "exported")
CHAIN_OPS = {"ReduceMean", "Sub", "Pow", "Sqrt", "Div", "Reciprocal"}

# fixture -> (LayerNormalization count, axis, inputs of the LN: 2 = no bias, 3 = bias)
FUSED = {"ln_pow_div": (1, -1, 3), "ln_mul_reciprocal_no_affine": (1, -1, 2), "ln_opset18_axes_input": (1, -1, 2),
         "ln_fp16_cast_wrappers": (1, -1, 3), "ln_fp16_cast_then_affine": (1, -1, 2), "ln_fp16_native": (1, -1, 3),
         "ln_last_two_axes": (1, -2, 3), "ln_two_layers": (2, -1, 3), "ln_opset13_needs_raise": (1, -1, 3),
         "ln_opset12_old_forms_raised": (1, -1, 3), "ln_opset12_batchnorm_raised": (1, -1, 3)}


def opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def attrs(node: onnx.NodeProto) -> Dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def layernorms(model: onnx.ModelProto) -> List[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "LayerNormalization"]


def inits(model: onnx.ModelProto) -> Dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


def fused(name: str, trt: str = "8.6"):
    model = build(name)
    out, result = apply_pass(PASS, model, trt)
    return model, out, result


@pytest.mark.parametrize("name", sorted(FUSED))
def test_chain_fused_valid_equivalent_idempotent(name):
    count, axis, n_inputs = FUSED[name]
    before, after, result = fused(name)
    lns = layernorms(after)
    assert len(lns) == count and result.counts["layernorms_fused"] == count
    assert all(attrs(n)["axis"] == axis and len(n.input) == n_inputs for n in lns)
    assert not CHAIN_OPS & set(ops(after)), ops(after)
    assert opset(after) >= 17
    assert not result.warnings
    assert check_rewrite(before, after) == []
    assert_equivalent(before, after)
    assert_idempotent(PASS, before)


def test_epsilon_and_parameters_carried():
    before, after, result = fused("ln_pow_div")
    ln = layernorms(after)[0]
    assert attrs(ln)["epsilon"] == pytest.approx(1e-5)
    assert list(ln.input) == ["x", "ln.gamma", "ln.beta"]          # the model's own gamma and beta
    change = next(c for c in result.changes if c.action == "fuse")
    assert change.target == "ln.mean" and change.details["nodes_removed"] == 9


def test_missing_gamma_gets_ones_and_eps_constant_node_removed():
    _, after, _ = fused("ln_mul_reciprocal_no_affine")
    ln = layernorms(after)[0]
    assert attrs(ln)["epsilon"] == pytest.approx(1e-6)
    assert inits(after)[ln.input[1]].tolist() == [1.0] * 16
    assert ops(after) == ["LayerNormalization"]                      # the eps Constant went too


def test_opset18_axes_input_and_broadcast_gamma_reshaped():
    _, after, _ = fused("ln_opset18_axes_input")
    assert opset(after) == 18
    scale = inits(after)[layernorms(after)[0].input[1]]
    assert scale.shape == (16,)                                      # [1,1,16] laid out as the normalized shape


def test_fp16_cast_wrappers_keep_float32_computation():
    _, after, _ = fused("ln_fp16_cast_wrappers")
    assert ops(after) == ["Cast", "LayerNormalization", "Cast"]
    ln = layernorms(after)[0]
    assert ln.input[0] == "x32" and inits(after)[ln.input[1]].dtype == np.float32


def test_fp16_affine_after_cast_stays_outside():
    _, after, _ = fused("ln_fp16_cast_then_affine")
    assert ops(after) == ["Cast", "LayerNormalization", "Cast", "Mul", "Add"]
    assert inits(after)[layernorms(after)[0].input[1]].dtype == np.float32


def test_fp16_native_chain_becomes_fp16_layernorm():
    _, after, result = fused("ln_fp16_native")
    assert inits(after)[layernorms(after)[0].input[1]].dtype == np.float16
    assert next(c for c in result.changes if c.action == "fuse").details["dtype"] == "FLOAT16"


def test_last_two_axes_positive():
    _, after, _ = fused("ln_last_two_axes")
    assert inits(after)[layernorms(after)[0].input[1]].shape == (4, 8)


def test_opset13_raised_then_fused():
    before, after, result = fused("ln_opset13_needs_raise")
    assert opset(before) == 13 and opset(after) == 17
    assert result.changes[0].action == "raise-opset" and result.changes[0].details == {"from": 13, "to": 17}


def test_opset12_forms_converted_by_the_raise():
    _, after, _ = fused("ln_opset12_old_forms_raised")
    split = next(n for n in after.graph.node if n.op_type == "Split")
    assert "split" not in attrs(split) and inits(after)[split.input[1]].tolist() == [8, 8]
    assert ops(after)[:4] == ["Split", "Flatten", "Softmax", "Reshape"]  # pre-13 Softmax meaning
    # the static shape to restore is an initializer, not a Shape node (fold-constants would fold it)
    assert inits(after)[after.graph.node[3].input[1]].tolist() == [2, 4, 8]


def test_raise_refused_leaves_model_and_says_why():
    before, after, result = fused("ln_opset9_upsample_refused")
    assert not result.modified and opset(after) == 9 and ops(after) == ops(before)
    assert result.counts == {"layernorms_skipped": 1}
    assert "opset 9 cannot be raised to 17" in result.warnings[0] and "'upsample' (Upsample)" in result.warnings[0]


def test_near_misses_reported_good_chain_fused():
    before, after, result = fused("ln_near_misses")
    assert result.counts == {"near_misses": 4, "layernorms_fused": 1}
    expected = {"ln_eps.mean": "eps is not a constant",
                "ln_shared.mean": "'ln_shared.d' (x - mean) is used elsewhere (by expose_d)",
                "ln_axes.mean": "axes [1] are not the trailing axes",
                "ln_wide.mean": "gamma of shape [4, 16] broadcasts over axes outside the normalized ones"}
    for anchor, why in expected.items():
        assert any(f"LayerNorm at node '{anchor}' not fused" in w and why in w for w in result.warnings), (anchor, result.warnings)
    assert ops(after).count("ReduceMean") == 8 and len(layernorms(after)) == 1
    assert_equivalent(before, after)
    assert_idempotent(PASS, before)


def test_rmsnorm_recognised_not_fused():
    before, after, result = fused("rmsnorm_chains")
    assert not result.modified and ops(after) == ops(before)
    assert result.counts == {"rmsnorm_seen": 2}
    assert any("'t5.mean'" in w and "Reciprocal -> Mul" in w and "no mean subtraction" in w for w in result.warnings)
    assert any("'div.mean'" in w and "Mul(x, x)" in w for w in result.warnings)


def test_not_fused_when_target_parses_below_opset_17(monkeypatch):
    import graphfix.passes.fuse_layernorm as module

    class Old:
        max_opset = 16
    monkeypatch.setattr(module, "load_profile", lambda version: Old())
    before, after, result = fused("ln_pow_div")
    assert not result.modified and ops(after) == ops(before)
    assert result.counts == {"layernorms_skipped": 1}
    assert "parses opset 16 at most" in result.warnings[0]


def test_trt10_fuses_at_opset_18():
    before, after, result = fused("ln_opset18_axes_input", trt="10.0")
    assert opset(after) == 18 and len(layernorms(after)) == 1
    assert_equivalent(before, after)


# -- real TorchScript exports at opset 14 (fixtures/exported) ------------------------------------

def _exported(opset_wanted: int) -> List[dict]:
    with open(os.path.join(EXPORTED, "manifest.json")) as f:
        return [m for m in json.load(f)["models"] if m["opset"] == opset_wanted]


@pytest.mark.parametrize("entry", _exported(14), ids=lambda m: m["file"])
def test_torchscript_opset14_exports_raised_and_fused(entry):
    before = onnx.load(os.path.join(EXPORTED, entry["file"]))
    after, result = apply_pass(PASS, before, "8.6")
    assert opset(after) == 17 and result.counts == {"layernorms_fused": 5}   # 2 layers x 2 + final/embeddings
    assert "Sqrt" not in ops(after)
    assert check_rewrite(before, after) == []
    assert_equivalent(before, after, shapes={i["name"]: i["sample_shape"] for i in entry["inputs"]})
    assert_idempotent(PASS, before)


# -- on the rig: FP16 engines of the fused models match ONNX Runtime ------------------------------

TRT_CASES = ["ln_pow_div", "ln_fp16_cast_wrappers", "ln_last_two_axes", "ln_two_layers", "ln_opset13_needs_raise"]


@pytest.mark.trt
@pytest.mark.parametrize("case", TRT_CASES + [m["file"] for m in _exported(14)])
def test_trt_fp16_fused_matches_ort(case, tmp_path):
    """TensorRT FP16 engines: the fused model within FP16 tolerance of ONNX Runtime (FP32 original)."""
    from graphfix.checks.tensorrt.trt import build_and_compare
    from graphfix.checks.tensorrt.env import trt_version

    before = onnx.load(os.path.join(EXPORTED, case)) if case.endswith(".onnx") else build(case)
    after, _ = apply_pass(PASS, before, trt_version() or "8.6")
    original, fixed = str(tmp_path / "original.onnx"), str(tmp_path / "fused.onnx")
    onnx.save(before, original)
    onnx.save(after, fixed)
    unfused = build_and_compare(original, original, fp16=True, timeout=600, progress=False)
    result = build_and_compare(original, fixed, fp16=True, timeout=600, progress=False)
    print(f"{case}: unfused FP16: {unfused.detail}\n{case}: fused FP16:   {result.detail}")
    assert result.passed, result.detail


def test_batchnorm_renamed_statistics_do_not_block_the_raise():
    """Issue 11: 'input 3 is 'mean' in BatchNormalization-9 but 'input_mean' in BatchNormalization-15'
    refused the raise; a renamed formal parameter is not a change of meaning."""
    before, after, result = fused("ln_opset12_batchnorm_raised")
    assert opset(before) == 12 and opset(after) == 17 and len(layernorms(after)) == 1
    bn = next(n for n in after.graph.node if n.op_type == "BatchNormalization")
    assert list(bn.input) == ["x", "bn.scale", "bn.B", "bn.mean", "bn.var"]
    assert not result.warnings
    assert_equivalent(before, after)
    assert_idempotent(PASS, after)


def test_all_fusions_spliced_in_one_walk_equal_fusing_one_chain_at_a_time(monkeypatch):
    """The pass edits the node lists once for all chains (Splice); the result is byte-identical to
    editing them chain by chain (fuse without a splice), Constant-node scalars dropped alike."""
    from graphfix.fixtures.shapes import transformer_like
    from graphfix.passes import fuse_layernorm
    model = transformer_like(3, seed=0)   # six chains; epsilon and exponent as Constant nodes
    batched, result = apply_pass(PASS, model, "10.0")
    assert result.counts["layernorms_fused"] == 6
    real = fuse_layernorm.fuse
    monkeypatch.setattr(fuse_layernorm, "fuse", lambda chain, names, facts, matcher, splice=None:
                        real(chain, names, facts, matcher))
    one_by_one, _ = apply_pass(PASS, model, "10.0")
    assert batched.SerializeToString() == one_by_one.SerializeToString()
    assert not any(n.op_type == "Constant" and not any(n.output[0] in m.input for m in batched.graph.node)
                   for n in batched.graph.node)
    assert_equivalent(model, batched)
