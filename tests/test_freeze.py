"""Input specialization (--freeze NAME=VALUE): a configuration input becomes a constant, the Ifs
it decides are replaced by their taken branch (graphfix.freeze and the pipeline's use of it)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper

import graphfix
from graphfix.checks.ort import run_ort
from graphfix.cli import main
from graphfix.errors import UsageError
from graphfix.fixtures._make import const, make_model, vi
from graphfix.fixtures.dynamic_inputs import sample_rate_config
from graphfix.freeze import feed_as_constant, freeze_inputs, frozen_values, parse_freeze

X = np.linspace(-1, 1, 10, dtype=np.float32).reshape(1, 10)


@pytest.mark.parametrize("rate, factor, inlined", [(16000, 2.0, 1), (8000, 3.0, 2)])
def test_taken_branches_replace_the_ifs_and_outputs_match_the_fed_model(rate, factor, inlined):
    model = sample_rate_config()
    values = frozen_values(model, {"sr": rate})
    frozen, changes = freeze_inputs(model, values)
    assert [i.name for i in frozen.graph.input] == ["x"] and "If" not in [n.op_type for n in frozen.graph.node]
    assert [c["action"] for c in changes] == ["freeze-input"] + ["inline-if"] * inlined
    assert changes[0] == {"action": "freeze-input", "target": "sr", "details": {"value": rate, "dtype": "int64"}}
    onnx.checker.check_model(frozen, full_check=True)
    expected = run_ort(model, {"x": X, "sr": np.array(rate, np.int64)})["y"]
    np.testing.assert_array_equal(run_ort(frozen, {"x": X})["y"], expected)
    np.testing.assert_allclose(expected, X * factor, rtol=1e-6)
    again, more = freeze_inputs(frozen, {})
    assert more == [] and again.SerializeToString() == frozen.SerializeToString()


def test_an_if_the_values_do_not_decide_stays_and_an_outer_value_output_is_copied():
    """cond_x depends on the graph input x: that If stays. The other If's taken branch returns its
    own initializer, which no node produces: an Identity writes it to the If's output."""
    then_outer = helper.make_graph([], "then_const", [], [vi("c", T.FLOAT, [2])],
                                   [const("c", [0.5, -0.5], np.float32)])
    else_neg = helper.make_graph([helper.make_node("Neg", ["x"], ["n"], name="neg")], "else_neg", [],
                                 [vi("n", T.FLOAT, [2])])
    nodes = [helper.make_node("Greater", ["flag", "zero"], ["cond_flag"], name="flag_positive"),
             helper.make_node("If", ["cond_flag"], ["a"], name="by_flag", then_branch=then_outer, else_branch=else_neg),
             helper.make_node("ReduceMax", ["x"], ["mx"], name="max", keepdims=0),
             helper.make_node("Greater", ["mx", "zerof"], ["cond_x"], name="x_positive"),
             helper.make_node("If", ["cond_x"], ["b"], name="by_x", then_branch=then_outer, else_branch=else_neg)]
    model = make_model(nodes, [vi("x", T.FLOAT, [2]), vi("flag", T.INT32, [])],
                       [vi("a", T.FLOAT, [2]), vi("b", T.FLOAT, [2])],
                       [const("zero", 0, np.int32), const("zerof", 0.0, np.float32)])
    frozen, changes = freeze_inputs(model, frozen_values(model, {"flag": 1}))
    assert [(c["action"], c["target"]) for c in changes] == [("freeze-input", "flag"), ("inline-if", "by_flag")]
    ops = [(n.op_type, list(n.input), list(n.output)) for n in frozen.graph.node]
    assert ("Identity", ["gf.freeze.1.c"], ["a"]) in ops and [o[0] for o in ops].count("If") == 1
    assert "gf.freeze.1.c" in {t.name for t in frozen.graph.initializer}
    x = np.array([-1.0, 2.0], np.float32)
    onnx.checker.check_model(frozen, full_check=True)
    ref = run_ort(feed_as_constant(model, {"flag": np.array(1, np.int32)}), {"x": x})
    got = run_ort(frozen, {"x": x})
    assert all(np.array_equal(ref[k], got[k]) for k in ("a", "b"))


def test_inlined_nodes_get_unique_names():
    """Silero VAD's branches hold unnamed Constants and each If is called If_0 in its own scope:
    inlined, they would all be 'If_0/Constant' (the checker refuses duplicate node names)."""
    def branch(name, scale):
        nodes = [helper.make_node("Constant", [], [f"{name}_c{k}"], value=helper.make_tensor("v", T.FLOAT, [], [scale]))
                 for k in range(2)]
        nodes += [helper.make_node("Add", [f"{name}_c0", f"{name}_c1"], [f"{name}_s"]),
                  helper.make_node("Mul", ["x", f"{name}_s"], [f"{name}_y"])]
        return helper.make_graph(nodes, name, [], [vi(f"{name}_y", T.FLOAT, [2])])
    nodes = [helper.make_node("Greater", ["flag", "zero"], ["cond"], name="positive"),
             helper.make_node("If", ["cond"], ["a"], name="If_0", then_branch=branch("t1", 1.0),
                              else_branch=branch("e1", 2.0)),
             helper.make_node("If", ["cond"], ["b"], name="If_0_b", then_branch=branch("t2", 3.0),
                              else_branch=branch("e2", 4.0)),
             helper.make_node("Add", ["a", "b"], ["y"], name="If_0/Constant")]   # a name inlining would make
    model = make_model(nodes, [vi("x", T.FLOAT, [2]), vi("flag", T.INT32, [])], [vi("y", T.FLOAT, [2])],
                       [const("zero", 0, np.int32)])
    frozen, _ = freeze_inputs(model, frozen_values(model, {"flag": 1}))
    names = [n.name for n in frozen.graph.node]
    assert len(names) == len(set(names)) and "If" not in [n.op_type for n in frozen.graph.node]
    onnx.checker.check_model(frozen, full_check=True)
    x = np.array([-1.0, 2.0], np.float32)
    np.testing.assert_array_equal(run_ort(frozen, {"x": x})["y"], x * 2 + x * 6)


def test_pipeline_reports_the_freeze_checks_it_and_changes_only_the_asked_signature():
    model = sample_rate_config()
    fixed, report = graphfix.fix(model, trt="8.6", freeze={"sr": 16000})
    rec = report.passes[0]
    assert rec.name == "freeze-inputs" and rec.status == "applied"
    assert rec.counts == {"inputs_frozen": 1, "ifs_inlined": 1} and rec.check["passed"] is True
    assert report.ok, report.summary()
    assert [i.name for i in fixed.graph.input] == ["x"]
    assert [(o.name, o.type) for o in fixed.graph.output] == [(o.name, o.type) for o in model.graph.output]
    assert report.inputs["runnable"] and report.checks[0]["passed"] is True   # checked: sr is no longer unknown
    again, second = graphfix.fix(fixed, trt="8.6", check="none")
    assert [p.name for p in second.passes if p.status == "applied"] == []
    assert again.SerializeToString() == fixed.SerializeToString()


def test_bad_freeze_requests_are_usage_errors(tmp_path, capsys):
    model = sample_rate_config()
    with pytest.raises(UsageError, match=r"no model input named rate \(inputs: x, sr\)"):
        frozen_values(model, {"rate": 16000})
    with pytest.raises(UsageError, match="does not fit the input's type int64"):
        frozen_values(model, {"sr": 16000.5})
    with pytest.raises(UsageError, match="sr has shape scalar; the value has shape 2"):
        frozen_values(model, {"sr": [8000, 16000]})
    assert parse_freeze(["sr=16000,mode=[1,2]", "on=true"]) == {"sr": 16000, "mode": [1, 2], "on": True}
    with pytest.raises(UsageError, match="bad --freeze entry"):
        parse_freeze("sr")
    src = str(tmp_path / "sr.onnx")
    onnx.save(model, src)
    assert main(["fix", src, "-o", str(tmp_path / "o.onnx"), "--freeze", "sample_rate=16000"]) == 2
    assert "no model input named sample_rate" in capsys.readouterr().err
    assert main(["fix", src, "-o", str(tmp_path / "o.onnx"), "--trt", "8.6", "--freeze", "sr=8000", "--quiet"]) == 0
    assert [i.name for i in onnx.load(str(tmp_path / "o.onnx")).graph.input] == ["x"]


def test_tensorrt_check_of_a_frozen_output_compares_with_the_original_fed_the_values(tmp_path, monkeypatch):
    """`fix --freeze sr=8000 --check trt`: the child compares the output with the original fed
    sr=8000 (a file without the sr input), on the given values without sr, at the checks' sizes."""
    from graphfix.checks.tensorrt import trt
    seen = {}

    def fake_build(original, fixed, **options):
        seen["inputs"] = [i.name for i in onnx.load(original).graph.input]
        seen["sr"] = [onnx.numpy_helper.to_array(t).tolist() for t in onnx.load(original).graph.initializer
                      if t.name == "sr"]
        seen["options"] = options
        return trt.TrtCheckResult(model=fixed, precision="fp32", passed=True)

    monkeypatch.setattr(trt, "trt_unavailable_reason", lambda: None)
    monkeypatch.setattr(trt, "build_and_compare", fake_build)
    src, values = str(tmp_path / "sr.onnx"), str(tmp_path / "v.npz")
    onnx.save(sample_rate_config(), src)
    np.savez(values, sr=np.array(16000, np.int64), x=np.ones((1, 6), np.float32))
    code = main(["fix", src, "-o", str(tmp_path / "o.onnx"), "--trt", "8.6", "--freeze", "sr=8000",
                 "--inputs", values, "--check", "trt", "--quiet"])
    assert code == 0
    assert seen["inputs"] == ["x"] and seen["sr"] == [8000]
    assert list(seen["options"]["inputs"]) == ["x"] and seen["options"]["opt_shapes"] == {"x": [1, 6]}


def test_static_shapes_pin_dims_per_input_and_per_symbol():
    from graphfix.fixtures import build
    from graphfix.freeze import pin_shapes
    model = build("if_rank_depends_on_input")                      # x[2,T]
    pinned, changes = pin_shapes(model, {"x": [2, 5]})
    assert [d.dim_value for d in pinned.graph.input[0].type.tensor_type.shape.dim] == [2, 5]
    assert changes == [{"action": "static-shape", "target": "x", "details": {"from": "2xT", "to": "2x5"}}]
    by_symbol, _ = pin_shapes(model, {"T": 1})
    assert [d.dim_value for d in by_symbol.graph.input[0].type.tensor_type.shape.dim] == [2, 1]
    assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_param == "T"     # the input is untouched
    for bad, text in [({"x": [2]}, "rank 2"), ({"x": [3, 5]}, "dim 0 of x is 2, not 3"), ({"y": [1]}, "no model input"),
                      ({"S": 4}, "no dim symbol")]:
        with pytest.raises(UsageError, match=text):
            pin_shapes(model, bad)


@pytest.mark.parametrize("size, squeezed", [(1, True), (5, False)])
def test_static_shapes_let_the_pipeline_decide_a_size_test(size, squeezed):
    """x.squeeze(1) of a dynamic dim is a TensorRT error (branch ranks differ at run time); with the
    size pinned the If is decided and goes, and the outputs match the original at that size."""
    from graphfix.diagnosis import check_model
    from graphfix.fixtures import build
    model = build("if_rank_depends_on_input")
    fixed, report = graphfix.fix(model, trt="8.6", static_shapes={"T": size})
    assert "If" not in [n.op_type for n in fixed.graph.node] and report.ok, report.summary()
    rec = next(p for p in report.passes if p.name == "freeze-inputs")
    assert rec.counts["inputs_pinned"] == 1 and rec.changes[0]["details"]["to"] == f"2x{size}"
    assert not [f for f in check_model(fixed, trt="8.6").findings if f.rule == "if_branch_shapes"]
    x = np.linspace(-1, 1, 2 * size, dtype=np.float32).reshape(2, size)
    np.testing.assert_allclose(run_ort(fixed, {"x": x})["y"], run_ort(model, {"x": x})["y"], rtol=1e-6)
    assert [f for f in check_model(model, trt="8.6").findings if f.rule == "if_branch_shapes"]   # before: flagged


def test_static_shapes_on_the_command_line(tmp_path, capsys):
    from graphfix.fixtures import build
    from graphfix.model_io import save_model
    src, out = str(tmp_path / "m.onnx"), str(tmp_path / "o.onnx")
    save_model(build("if_rank_depends_on_input"), src)
    assert main(["fix", src, "-o", out, "--trt", "8.6"]) == 1            # the If stays: NOT OK
    assert main(["fix", src, "-o", out, "--trt", "8.6", "--static-shapes", "x:2x4"]) == 0
    assert "If" not in [n.op_type for n in onnx.load(out).graph.node]
    assert main(["fix", src, "-o", out, "--static-shapes", "x:4"]) == 2
    assert "--static-shapes: x has rank 2" in capsys.readouterr().err


@pytest.mark.parametrize("gain, branch", [(0.5, "then_branch"), (0.125, "else_branch")])
def test_an_if_nested_in_a_branch_that_stays_is_decided_by_a_float_value(gain, branch):
    """The inner If sits in the branch of an If on x (run-time): it is inlined there, the outer one
    stays. Its condition compares the frozen float 0.5 (or 0.125) with 0.25: computed exactly."""
    from graphfix.fixtures.dynamic_inputs import gain_config_in_branch
    model = gain_config_in_branch()
    values = frozen_values(model, {"gain": gain, "mode": 1})
    frozen, changes = freeze_inputs(model, values)
    assert [(c["action"], c["target"]) for c in changes] == [("freeze-input", "gain"), ("freeze-input", "mode"),
                                                              ("inline-if", "inner")]
    assert changes[2]["details"] == {"condition": "on", "branch": branch, "nodes": 1, "inside": "outer/then_branch"}
    outer = [n for n in frozen.graph.node if n.op_type == "If"]
    assert len(outer) == 1 and [i.name for i in frozen.graph.input] == ["x"]
    then_ops = [n.op_type for a in outer[0].attribute if a.name == "then_branch" for n in a.g.node]
    assert "If" not in then_ops and ("Mul" if branch == "then_branch" else "Sub") in then_ops
    onnx.checker.check_model(frozen, full_check=True)
    fed = feed_as_constant(model, values)
    for x in (X.reshape(2, 5)[:, :3], -np.abs(X.reshape(2, 5)[:, :3]) - 1):   # both outer branches
        np.testing.assert_array_equal(run_ort(frozen, {"x": x})["y"], run_ort(fed, {"x": x})["y"])
    again, more = freeze_inputs(frozen, {})
    assert more == [] and again.SerializeToString() == frozen.SerializeToString()


def test_a_rolled_back_freeze_counts_only_what_stayed(monkeypatch):
    """A freeze whose check fails keeps the inputs frozen and nothing else: its counts say so (no
    inlined If, no pinned input), as its changes do."""
    import graphfix.freeze as freeze
    real = freeze.freeze_inputs

    def wrong(model, values):   # inlines, then breaks the taken branch's factor
        out, changes = real(model, values)
        for t in out.graph.initializer:
            if t.name == "two":
                t.CopyFrom(onnx.numpy_helper.from_array(np.array([5.0], np.float32), "two"))
        return out, changes

    monkeypatch.setattr(freeze, "freeze_inputs", wrong)
    fixed, report = graphfix.fix(sample_rate_config(), trt="8.6", freeze={"sr": 16000}, static_shapes={"n": 6})
    rec = report.passes[0]
    assert rec.status == "rolled-back" and "differ" in rec.error
    assert rec.counts == {"inputs_frozen": 1, "ifs_inlined": 0}
    assert [c["action"] for c in rec.changes] == ["freeze-input"]
    np.testing.assert_allclose(run_ort(fixed, {"x": X})["y"], X * 2, rtol=1e-6)
