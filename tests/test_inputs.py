"""Inputs for the ONNX Runtime checks: user shapes per input and per symbol, given values, and the
search for sizes on which the original model runs (graphfix.checks.inputs / input_search)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper

from graphfix.checks.input_search import candidates, choose_inputs, symbol_minima
from graphfix.checks.inputs import concrete_shapes, load_input_values, split_shapes
from graphfix.checks.ort import compare_models, run_ort
from graphfix.errors import InputError, UsageError
from graphfix.fixtures import build
from graphfix.fixtures._make import make_model, vi
from graphfix.fixtures.dynamic_inputs import sample_rate_config


def _model_with_dims(*inputs):
    """Identity per input; `inputs` are (name, dims) pairs."""
    nodes = [helper.make_node("Identity", [n], [f"{n}_out"], name=f"id_{n}") for n, _ in inputs]
    return make_model(nodes, [vi(n, T.FLOAT, d) for n, d in inputs],
                      [vi(f"{n}_out", T.FLOAT, d) for n, d in inputs])


def test_concrete_shapes_takes_symbols_and_computes_expressions():
    model = _model_with_dims(("ids", ["batch", "seq"]), ("past", ["batch", 2, "past"]),
                             ("mask", ["batch", "past + seq"]), ("anon", [None, 3]))
    dims = concrete_shapes(model)
    assert dims == {"ids": (1, 4), "past": (1, 2, 4), "mask": (1, 8), "anon": (1, 3)}
    dims = concrete_shapes(model, {"seq": 128, "past": [2, 2, 5]})
    assert dims == {"ids": (2, 128), "past": (2, 2, 5), "mask": (2, 133), "anon": (1, 3)}


def test_split_shapes_refuses_unknown_names_listing_the_real_ones():
    model = _model_with_dims(("ids", ["batch", "seq"]))
    assert split_shapes(model, {"ids": [1, 8], "seq": 8}) == ({"ids": (1, 8)}, {"seq": 8})
    with pytest.raises(UsageError, match=r"no dim symbol named sq \(symbols: batch, seq"):
        split_shapes(model, {"sq": 128})
    with pytest.raises(UsageError, match=r"no model input named idz \(inputs: ids; dim symbols: batch, seq\)"):
        split_shapes(model, {"idz": [1, 8]})


def test_input_values_are_checked_against_the_inputs(tmp_path):
    model = sample_rate_config()
    path = tmp_path / "values.npz"
    np.savez(path, sr=np.array(16000, dtype=np.int64))
    assert load_input_values(model, str(path))["sr"] == 16000
    with pytest.raises(UsageError, match="no model input named 'rate'"):
        load_input_values(model, {"rate": np.array(1)})
    with pytest.raises(UsageError, match="'sr' is int32, the input is int64"):
        load_input_values(model, {"sr": np.array(16000, dtype=np.int32)})
    with pytest.raises(UsageError, match="'x' has shape 4, the input is 1xn"):
        load_input_values(model, {"x": np.zeros(4, np.float32)})
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz: not a NumPy .npz file"):
        load_input_values(model, str(tmp_path / "bad.npz"))


def test_minima_come_from_pooling_windows_and_pads():
    assert symbol_minima(build("dyn_max_pool")) == {"len": 5}       # kernel 7, pads 1 + 1
    pad = make_model([helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")],
                     [vi("x", T.FLOAT, [1, "n"])], [vi("y", T.FLOAT, [1, None])],
                     [onnx.numpy_helper.from_array(np.array([0, 6, 0, 2], np.int64), "pads")])
    assert symbol_minima(pad) == {"n": 7}                           # reflect by 6 needs 7


def test_candidates_start_at_the_defaults_and_never_repeat():
    tried = list(candidates({"B": 0, "past": 2, "seq": 1, "total": 1}, {"seq": 5}))
    assert tried[0] == {"B": 1, "past": 4, "seq": 5, "total": 4}
    assert {"B": 1, "past": 4, "seq": 5, "total": 9} in tried      # one length the sum of two others
    assert {"B": 1, "past": 0, "seq": 5, "total": 4} in tried      # an empty cache
    assert tried[-1] == {"B": 1, "past": 1024, "seq": 1024, "total": 1024}
    assert list(candidates({"B": 0, "seq": 1}, {}, fixed={"past": 3, "n": 5}))[1] == {"B": 1, "seq": 8}
    assert len({tuple(sorted(c.items())) for c in tried}) == len(tried)


@pytest.mark.parametrize("name, shapes", [
    ("dyn_reflect_pad", {"x": (1, 1, 16)}),                    # grown: reflect by 8 needs 9
    ("dyn_max_pool", {"x": (1, 3, 5)}),                         # the minimum read off the graph
    ("dyn_kv_cache", {"past": (1, 4, 8), "x": (1, 4, 8), "attention_mask": (1, 8)}),
])
def test_search_finds_sizes_on_which_the_model_runs(name, shapes):
    model = build(name)
    choice = choose_inputs(model)
    assert choice.runnable, choice.error
    assert choice.shapes == shapes
    outputs = run_ort(model, choice.feeds[0])
    assert all(v.size > 0 for v in outputs.values())
    result = compare_models(model, model)       # the standalone check searches the same way
    assert result.passed and not result.unchecked


def test_user_sizes_are_kept_and_symbols_they_carry_hold_everywhere():
    model = build("dyn_kv_cache")
    choice = choose_inputs(model, shapes={"past_len": 3, "x": [2, 5, 8]})
    assert choice.runnable
    assert choice.shapes == {"past": (2, 3, 8), "x": (2, 5, 8), "attention_mask": (2, 8)}


def test_configuration_input_unchecked_with_the_flag_to_pass_then_runs_with_values():
    model = sample_rate_config()
    choice = choose_inputs(model)
    assert not choice.runnable and choice.loadable
    text = choice.explain()
    assert "could not run the original model" in text and "--inputs FILE.npz" in text and "'sr'" in text
    result = compare_models(model, model)
    assert result.unchecked and not result.passed
    given = choose_inputs(model, values={"sr": np.array(8000, dtype=np.int64)})
    assert given.runnable and given.given == ["sr"] and int(given.feeds[0]["sr"]) == 8000
    out = run_ort(model, given.feeds[0])["y"]
    np.testing.assert_allclose(out, given.feeds[0]["x"] * 3)


def test_tensorrt_profile_min_respects_the_minima_and_opt_the_search():
    """The TensorRT check's optimization profile: min where the pooling window fits, opt at the
    sizes ONNX Runtime ran (the reflect pad's Constants are folded by then, so its minimum shows)."""
    import graphfix
    from graphfix.checks.tensorrt.optimization_profile import derive_profile
    profile, run = derive_profile(build("dyn_max_pool"))
    assert profile["x"] == {"min": [1, 3, 5], "opt": [1, 3, 5], "max": [2, 3, 10]}
    fixed, report = graphfix.fix(build("dyn_reflect_pad"), trt="8.6")
    profile, run = derive_profile(fixed, opt_shapes=report.inputs["shapes"])
    assert profile["x"] == {"min": [1, 1, 9], "opt": [1, 1, 16], "max": [1, 1, 32]} and run["x"] == [1, 1, 16]
    profile, _ = derive_profile(build("dyn_kv_cache"), shapes={"seq": 2, "past_len": 3, "total_len": 5})
    assert profile["attention_mask"] == {"min": [1, 5], "opt": [1, 5], "max": [2, 5]}
