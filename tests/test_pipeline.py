import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

import graphfix
from graphfix import registry
from graphfix.errors import InputError, PipelineOrderError, UsageError
from graphfix.fixtures import build
from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.target import TrtRange


class _BreakRelu(Pass):
    """Deliberately wrong: turns Relu into Abs (changes results), to prove rollback works."""
    info = PassInfo(name="test-breaker", summary="breaks the model", fixes="nothing")

    def run(self, graph):
        result = PassResult()
        for node in graph.nodes:
            if node.op == "Relu":
                node.op = "Abs"
                result.change("break", node.name)
        return result


class _Raises(Pass):
    info = PassInfo(name="test-raiser", summary="raises", fixes="nothing")

    def run(self, graph):
        raise RuntimeError("boom")


@pytest.fixture
def extra_passes(monkeypatch):
    order = list(registry.PIPELINE_ORDER)
    order[1:1] = ["test-breaker", "test-raiser"]   # right after normalize
    monkeypatch.setattr(registry, "PIPELINE_ORDER", order)
    reg = registry.registered()
    monkeypatch.setitem(registry._REGISTRY, "test-breaker", _BreakRelu)
    monkeypatch.setitem(registry._REGISTRY, "test-raiser", _Raises)
    return reg


def test_a_pass_whose_check_fails_is_rolled_back_and_the_run_goes_on(extra_passes):
    model = build("identity_chain")
    fixed, report = graphfix.fix(model, trt="8.6")
    by_name = {p.name: p for p in report.passes}
    assert by_name["test-breaker"].status == "rolled-back"
    assert "ONNX Runtime outputs differ" in by_name["test-breaker"].error
    assert by_name["test-breaker"].check["passed"] is False
    assert "Relu" in [n.op_type for n in fixed.graph.node] and "Abs" not in [n.op_type for n in fixed.graph.node]
    assert by_name["test-raiser"].status == "failed"
    assert "boom" in by_name["test-raiser"].error and "normalize" in by_name["test-raiser"].error
    assert by_name["cleanup"].status == "applied"       # later passes still ran
    assert not report.ok


def test_without_checks_a_breaking_pass_is_not_caught(extra_passes):
    # the check is what catches it: with check="none" the wrong rewrite goes through
    fixed, report = graphfix.fix(build("identity_chain"), trt="8.6", passes="test-breaker", check="none")
    assert "Abs" in [n.op_type for n in fixed.graph.node]


def test_order_validation_rejects_violated_constraints():
    class Late(Pass):
        info = PassInfo(name="late", summary="", fixes="", after=("cleanup",))
    with pytest.raises(PipelineOrderError, match="'late' must run after 'cleanup'"):
        registry.validate_order(["late", "cleanup"], {"late": Late, "cleanup": registry.get_pass("cleanup")})


def test_order_validation_rejects_checkable_after_uncheckable():
    class Plugin(Pass):
        info = PassInfo(name="p", summary="", fixes="", ort_checkable=False)

    class Checkable(Pass):
        info = PassInfo(name="c", summary="", fixes="")
    with pytest.raises(PipelineOrderError, match="runs after 'p'"):
        registry.validate_order(["p", "c"], {"p": Plugin, "c": Checkable})


def test_the_written_order_is_valid():
    registry.validate_order(registry.PIPELINE_ORDER, registry.registered())


def test_unknown_pass_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown pass 'nope'"):
        graphfix.fix(build("identity_chain"), passes="nope")


def test_skip_and_version_gating_are_reported(monkeypatch):
    class Old(Pass):
        info = PassInfo(name="test-old", summary="", fixes="", trt=TrtRange(below="9.0"))

        def run(self, graph):
            return PassResult()
    order = list(registry.PIPELINE_ORDER)
    order.insert(order.index("plugins"), "test-old")   # checkable passes go before plugins
    monkeypatch.setattr(registry, "PIPELINE_ORDER", order)
    registry.registered()
    monkeypatch.setitem(registry._REGISTRY, "test-old", Old)
    _, report = graphfix.fix(build("identity_chain"), trt="10.3", skip="cleanup")
    by_name = {p.name: p for p in report.passes}
    assert by_name["cleanup"].status == "skipped" and "on request" in by_name["cleanup"].error
    assert by_name["test-old"].status == "skipped" and "does not need it" in by_name["test-old"].error
    _, report = graphfix.fix(build("identity_chain"), trt="8.6", passes="test-old")
    assert [p.name for p in report.passes] == ["test-old"] and report.passes[0].status == "unchanged"


def _cyclic_model():
    nodes = [onnx.helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
             onnx.helper.make_node("Relu", ["a"], ["b"], name="n2")]
    graph = onnx.helper.make_graph(nodes, "g", [onnx.helper.make_tensor_value_info("x", 1, [2])],
                                   [onnx.helper.make_tensor_value_info("b", 1, [2])])
    return onnx.helper.make_model(graph)


def _dangling_model():
    nodes = [onnx.helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")]
    graph = onnx.helper.make_graph(nodes, "g", [onnx.helper.make_tensor_value_info("x", 1, [2])],
                                   [onnx.helper.make_tensor_value_info("y", 1, [2])])
    return onnx.helper.make_model(graph)


def test_cycles_and_dangling_inputs_are_input_errors():
    with pytest.raises(InputError, match="cycle through nodes n1 -> n2|cycle through nodes n2 -> n1"):
        graphfix.fix(_cyclic_model())
    with pytest.raises(InputError, match="node 'adder' reads 'ghost'"):
        graphfix.fix(_dangling_model())


def test_output_is_deterministic_and_report_is_json():
    import json
    a, ra = graphfix.fix(build("messy_graph"), trt="8.6")
    b, rb = graphfix.fix(build("messy_graph").SerializeToString(), trt="8.6")
    assert a.SerializeToString() == b.SerializeToString()
    doc = json.loads(ra.dumps())
    assert doc["schema"] == "graphfix.report/1"
    assert {"ok", "changed", "target", "input", "output", "passes", "checks", "seconds"} <= set(doc)
    assert doc["target"] == {"version": "8.6", "source": "flag"}
    assert doc["checks"][0]["kind"] == "ort" and doc["checks"][0]["passed"] is True


def test_gs_graph_input_is_accepted():
    graph = gs.import_onnx(build("identity_chain"))
    fixed, report = graphfix.fix(graph, trt="8.6")
    assert report.ok and len(fixed.graph.node) == 3


def test_a_rewrite_ort_cannot_check_is_applied_but_reported_unchecked(monkeypatch):
    # e.g. an opset-23 model on an ONNX Runtime that stops at opset 21: the model before the
    # pass cannot run, so the rewrite is neither confirmed nor refuted, and the report says so
    from graphfix.checks import ort
    def refuse(model):
        raise RuntimeError("opset 23 is not supported")
    monkeypatch.setattr(ort, "_session", refuse)
    fixed, report = graphfix.fix(build("identity_chain"), trt="8.6", passes="cleanup")
    rec = report.passes[0]
    assert rec.status == "applied" and rec.check["unchecked"] is True
    assert any("not checked in ONNX Runtime" in w for w in rec.warnings)
    assert report.checks[0]["skipped"] is True and report.checks[0]["passed"] is None
    assert "skipped" in report.summary()


# Passes after fold-constants that build shape values (decompose-contrib's positions and mask_index,
# the opset raise's Softmax restore, target-opset's GroupNormalization): on static shapes they emit
# initializers, else fold-constants folded their Shape nodes on a second run.
SHAPE_VALUE_FIXTURES = ["contrib_embed_layer_norm", "contrib_embed_layer_norm_no_mask",
                        "contrib_embed_layer_norm_dynamic", "ln_opset12_old_forms_raised", "opset18_group_norm",
                        "opset21_group_norm", "opset21_group_norm_dynamic"]


@pytest.mark.parametrize("trt", ["8.6", "10.0"])
@pytest.mark.parametrize("name", SHAPE_VALUE_FIXTURES)
def test_second_fix_changes_nothing_where_passes_build_shape_values(name, trt):
    fixed, report = graphfix.fix(build(name), trt=trt, check="ort")
    assert report.ok, report.summary()
    again, second = graphfix.fix(fixed, trt=trt, check="none")
    assert [(p.name, p.changes[:2]) for p in second.passes if p.status == "applied"] == []
    assert again.SerializeToString() == fixed.SerializeToString()
    shapes = [n for n in fixed.graph.node if n.op_type == "Shape"]
    assert bool(shapes) == name.endswith("_dynamic")   # a Shape only where a dim is dynamic


# Inputs for the checks (issue 11): a model the default sizes cannot run is run at sizes that work,
# and one that runs on no generated input is "unchecked", never blamed on a pass.

def test_pass_checked_at_sizes_the_search_found():
    fixed, report = graphfix.fix(build("dyn_reflect_pad"), trt="8.6")
    folded = next(p for p in report.passes if p.name == "fold-constants")
    assert folded.status == "applied" and folded.check["passed"] is True
    assert report.inputs["shapes"] == {"x": [1, 1, 16]} and report.inputs["tries"] == 3
    assert report.ok and report.checks[0]["passed"] is True
    assert "inputs for the checks: x 1x1x16" in report.summary()


def test_original_that_cannot_run_is_unchecked_and_no_pass_is_rolled_back():
    from graphfix.fixtures.dynamic_inputs import sample_rate_config
    fixed, report = graphfix.fix(sample_rate_config(), trt="8.6")
    applied = [p for p in report.passes if p.status == "applied"]
    assert applied and not [p for p in report.passes if p.status in ("rolled-back", "failed")]
    assert all(p.check["unchecked"] is True and p.check["passed"] is None for p in applied)
    assert report.checks[0]["unchecked"] is True and report.checks[0]["passed"] is None
    assert not report.ok and report.verdict == "UNCHECKED"
    assert "--inputs FILE.npz" in report.summary() and report.summary().splitlines()[-1].startswith("UNCHECKED")
    doc = report.to_json()
    assert doc["ok"] is False and doc["inputs"]["runnable"] is False


def test_given_input_values_make_the_check_run():
    from graphfix.fixtures.dynamic_inputs import sample_rate_config
    fixed, report = graphfix.fix(sample_rate_config(), trt="8.6", inputs={"sr": np.array(16000, dtype=np.int64)},
                                 shapes={"n": 32})
    assert report.ok, report.summary()
    assert report.inputs["shapes"] == {"x": [1, 32], "sr": []} and report.inputs["given_values"] == ["sr"]
    assert report.checks[0]["passed"] is True


def test_unknown_shape_names_are_refused_even_without_checks():
    with pytest.raises(UsageError, match=r"no model input named x_ \(inputs: x; dim symbols: samples\)"):
        graphfix.fix(build("dyn_reflect_pad"), trt="8.6", check="none", shapes={"x_": [1, 1, 16]})
    with pytest.raises(UsageError, match="no dim symbol named sample "):
        graphfix.fix(build("dyn_reflect_pad"), trt="8.6", shapes={"sample": 16})


# One verdict (issue 11): ok only when ONNX Runtime agrees AND `graphfix check` finds no error or
# wrong result left in the output for the target; what remains is listed with what would fix it.

def test_ok_needs_check_clean_on_the_output():
    from graphfix.diagnosis import check_model
    fixed, report = graphfix.fix(build("check_reduce_axes_runtime"), trt="8.6")
    assert report.checks[0]["kind"] == "ort" and report.checks[0]["passed"] is True
    verdict = report.checks[-1]
    assert verdict["kind"] == "trt-check" and verdict["passed"] is False
    assert [(r["op"], r["severity"], r["remedy"].split(";")[0]) for r in verdict["remaining"]] == \
        [("ReduceSum", "error", "no automatic fix")]
    assert "by hand: make that input a constant" in verdict["remaining"][0]["remedy"]
    assert not check_model(fixed, trt="8.6").clean        # the same facts `graphfix check` reports
    assert not report.ok and report.verdict == "NOT OK"
    text = report.summary()
    assert "graphfix check for TensorRT 8.6: FAILED" in text and "(ReduceSum)" in text and "-> no automatic fix" in text


def test_remaining_finding_names_the_flag_that_fixes_it():
    fixed, report = graphfix.fix(build("check_reduce_axes_foldable"), trt="8.6", skip="fold-constants")
    remaining = report.checks[-1]["remaining"]
    assert remaining and all(r["remedy"] == "pass 'fold-constants' fixes it: remove it from --skip" for r in remaining)
    fixed, report = graphfix.fix(build("check_reduce_axes_foldable"), trt="8.6")
    assert report.ok and report.checks[-1] == {**report.checks[-1], "passed": True, "remaining": []}


@pytest.mark.parametrize("name", ["example_encoder_block", "check_reduce_axes_runtime", "nms_gather_head",
                                  "int64_custom_op_boundary", "dyn_kv_cache"])
def test_ok_agrees_with_check_on_the_output(name):
    from graphfix.diagnosis import check_model
    fixed, report = graphfix.fix(build(name), trt="8.6")
    ort_ok = all(c.get("passed") or c.get("skipped") for c in report.checks if c["kind"] == "ort")
    assert report.ok == (ort_ok and check_model(fixed, trt="8.6").clean), report.summary()
