"""`graphfix fix --until-parses`: the parser-error -> pass table and the loop's control, on the CPU.

The parser is a stand-in (model -> ParseOutcome) so every stop condition is reached on purpose; the
`trt`-marked test at the end lets the real TensorRT parser drive the real passes on the rig.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper

from graphfix import fix_loop
from graphfix.checks.tensorrt.trt import ParseOutcome
from graphfix.cli import main
from graphfix.fix_loop import LoopReport, fix_until_parses, passes_for_error, plan_passes
from graphfix.fixtures._make import make_model, vi
from graphfix.registry import PIPELINE_ORDER
from graphfix.report import APPLIED, UNCHANGED, PassReport, Report

INT64_WARNING = ("onnx2trt_utils.cpp:374: Your ONNX model has been generated with INT64 weights, while "
                 "TensorRT does not natively support INT64. Attempting to cast down to INT32.")


def err(message, op=None, node=None):
    return {"node": node, "op": op, "message": message}


# ---------------------------------------------------------------------------------------- the table

@pytest.mark.parametrize("error, expected", [
    (err("UNSUPPORTED_NODE: Assertion failed: creator && \"Plugin not found, are the plugin name, version, "
         "and namespace correct?\"", op="RoiAlign"), ["plugins"]),
    (err("UNSUPPORTED_NODE: No importer registered for op: NonMaxSuppression. Attempting to import as plugin."),
     ["plugins"]),
    (err("getPluginCreator could not find plugin: MyDecoder version: 1", op="MyDecoder"), ["plugins"]),
    (err(INT64_WARNING), ["int64-to-int32"]),
    (err("Concat: all inputs must have the same type, got INT32 and INT64", op="Concat"), ["int64-to-int32"]),
    (err("[myelin] ForeignNode requires bool I/O but node /Where has BOOL input"), ["cast-bool"]),
    (err("UNSUPPORTED_NODE: No importer registered for op: GridSample", op="GridSample"), ["target-opset"]),
    # an op ONNX defines as a function, that no rule or lowering owns: its body joins the plan
    (err("UNSUPPORTED_NODE: No importer registered for op: NegativeLogLikelihoodLoss",
         op="NegativeLogLikelihoodLoss"), ["expand-functions", "target-opset"]),
    (err("This version of TensorRT only supports opset 17 and below"), ["target-opset"]),
    (err("UNSUPPORTED_NODE: No importer registered for op: FancyCustom", op="FancyCustom"), []),
    (err('Assertion failed: inputs.at(1).is_weights() && "The axes input must be an initializer"',
         op="ReduceMean"), ["fold-constants"]),
    (err("INVALID_GRAPH: out of memory"), []),
    # ops with a rewrite rule go to the rule's pass, whatever the parser calls the failure
    (err("UNSUPPORTED_NODE: No importer registered for op: FastGelu. Attempting to import as plugin.",
         op="FastGelu"), ["decompose-contrib"]),
    (err('Assertion failed: creator && "Plugin not found"', op="SkipLayerNormalization"),
     ["decompose-contrib"]),
    (err("No importer registered for op: MatMulInteger", op="MatMulInteger"), ["decompose-quantized"]),
    (err("No importer registered for op: DynamicQuantizeLinear"), ["decompose-quantized"]),
    # a standard op looked up as a plugin: this TensorRT has no importer for it (8.6, CastLike)
    (err('ErrorCode.UNSUPPORTED_NODE: Assertion failed: creator && "Plugin not found, are the plugin name, '
         'version, and namespace correct?"', op="CastLike", node="type_as"), ["target-opset"]),
])
def test_error_to_pass_table(error, expected):
    assert passes_for_error(error) == expected


def test_plan_orders_passes_as_the_pipeline_and_keeps_reasons():
    plan = plan_passes([err("BOOL tensors requires bool I/O", node="w"), err("weird", node="n"),
                        err("No importer registered for op: RoiAlign", op="RoiAlign", node="r")],
                       warnings=[INT64_WARNING, "some other warning"])
    assert plan.passes == [p for p in PIPELINE_ORDER if p in ("int64-to-int32", "cast-bool", "plugins")]
    assert plan.reasons["cast-bool"] == ["w: BOOL tensors requires bool I/O"]
    assert plan.reasons["int64-to-int32"][0].startswith("warning: onnx2trt_utils")
    assert plan.unmapped == [err("weird", node="n")]
    assert json.loads(json.dumps(plan.to_json()))["passes"] == plan.passes


# ------------------------------------------------------------------------------------------ the loop

def int64_model():
    """x[2,3] float --Add(c)--> y, where c is an INT64 constant cast to float.

        c(int64) --Cast(float)--> cf ; x --Add(cf)--> y
    """
    nodes = [helper.make_node("Cast", ["c"], ["cf"], name="cast", to=T.FLOAT),
             helper.make_node("Add", ["x", "cf"], ["y"], name="add")]
    return make_model(nodes, [vi("x", T.FLOAT, [2, 3])], [vi("y", T.FLOAT, [2, 3])],
                      [onnx.numpy_helper.from_array(np.arange(3, dtype=np.int64), "c")])


def has_int64(model) -> bool:
    return any(t.data_type == T.INT64 for t in model.graph.initializer)


class FakeParser:
    """Fails with the INT64 error while the model holds INT64 initializers; records every call."""

    def __init__(self, errors_when_int64=None, crash=False):
        self.calls = 0
        self.crash = crash
        self.errors = errors_when_int64 or [err("INVALID_NODE: INT64 is not supported", op="Cast", node="cast")]

    def __call__(self, model) -> ParseOutcome:
        self.calls += 1
        if self.crash:
            return ParseOutcome(parsed=False, crashed=True, errors=[err("TensorRT crashed (SIGSEGV) while parsing")])
        if has_int64(model):
            return ParseOutcome(parsed=False, crashed=False, errors=list(self.errors), warnings=[INT64_WARNING])
        return ParseOutcome(parsed=True, crashed=False)


def narrowing_fix(changes=True):
    """A stand-in for graphfix.pipeline.fix: turns INT64 initializers into INT32 ones."""
    calls = []

    def fix(model, trt=None, passes=None, check="ort", **kw):
        calls.append(list(passes))
        out = onnx.ModelProto()
        out.CopyFrom(model)
        if changes:
            for t in out.graph.initializer:
                if t.data_type == T.INT64:
                    t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t).astype(np.int32), t.name))
        report = Report(input={}, target={"version": trt, "source": "flag"})
        report.passes = [PassReport(p, APPLIED if changes else UNCHANGED, changes=[{"action": "retype"}] if changes
                                    else []) for p in passes]
        return out, report
    fix.calls = calls
    return fix


@pytest.fixture
def every_pass_allowed(monkeypatch):
    monkeypatch.setattr(fix_loop, "_allowed", lambda passes, skip: list(PIPELINE_ORDER))


def test_loop_runs_mapped_passes_until_it_parses(every_pass_allowed):
    parser, fix = FakeParser(), narrowing_fix()
    model, report = fix_until_parses(int64_model(), trt="8.6", check="none", parse=parser, fix_fn=fix)
    assert not has_int64(model)
    assert fix.calls == [["int64-to-int32"]] and parser.calls == 2
    assert isinstance(report, LoopReport) and report.parses and report.ok
    doc = json.loads(report.dumps())
    assert [r["round"] for r in doc["rounds"]] == [0, 1]
    assert doc["rounds"][0]["plan"]["passes"] == ["int64-to-int32"]
    assert doc["rounds"][0]["passes"] == [{"name": "int64-to-int32", "status": "applied", "changes": 1,
                                           "error": None}]
    assert doc["rounds"][1]["stop"] == "parses" and doc["parses"] is True
    assert "round 0: 1 parser error(s) -> int64-to-int32 applied" in report.summary()


def test_loop_parses_at_once_changes_nothing(every_pass_allowed):
    fix = narrowing_fix()
    model, report = fix_until_parses(int64_model(), trt="8.6", parse=lambda m: ParseOutcome(True, False),
                                     fix_fn=fix)
    assert fix.calls == [] and report.parses and not report.changed
    # the same whole-model checks as graphfix fix on an unchanged model
    assert report.rounds[0]["stop"] == "parses"
    assert [c["kind"] for c in report.checks] == ["ort", "onnx-checker", "trt-check"]


def test_loop_whole_model_check_keeps_the_tolerance_a_pass_declared(every_pass_allowed):
    """graphfix fix and the loop judge a rewrite alike: the loop's final ONNX Runtime check uses the
    tolerance the applied pass declared for its own check (it used to drop it and fail)."""
    def inexact_fix(model, trt=None, passes=None, check="ort", **kw):
        out = onnx.ModelProto()
        out.CopyFrom(model)
        for t in out.graph.initializer:   # INT32 constant, and the sum off by 5e-3 (as a dequantization)
            t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t).astype(np.int32), t.name))
        bias = onnx.numpy_helper.from_array(np.full([2, 3], 5e-3, np.float32), "gf_bias")
        out.graph.initializer.append(bias)
        out.graph.node[-1].output[0] = "y0"
        out.graph.node.append(helper.make_node("Add", ["y0", "gf_bias"], ["y"], name="bias"))
        report = Report(input={}, target={"version": trt, "source": "flag"})
        report.passes = [PassReport(p, APPLIED, changes=[{"action": "retype"}],
                                    check={"kind": "ort", "passed": True, "tolerance": [1e-2, 1e-2]}) for p in passes]
        return out, report
    _, report = fix_until_parses(int64_model(), trt="8.6", parse=FakeParser(), fix_fn=inexact_fix)
    whole = report.checks[0]
    assert whole["kind"] == "ort" and whole["tolerance"] == [1e-2, 1e-2]
    assert whole["passed"] is True and whole["outputs"][0]["max_abs"] > 4e-3
    assert report.parses and report.ok


def test_loop_stops_when_passes_change_nothing(every_pass_allowed):
    model, report = fix_until_parses(int64_model(), trt="8.6", check="none", parse=FakeParser(),
                                     fix_fn=narrowing_fix(changes=False))
    assert not report.parses and not report.ok
    assert report.rounds[-1]["stop"] == "no progress: the passes changed nothing"


def test_loop_stops_when_no_pass_maps(every_pass_allowed):
    parser = FakeParser(errors_when_int64=[err("INVALID_GRAPH: something new", node="add")])
    model, report = fix_until_parses(int64_model(), trt="8.6", parse=parser, fix_fn=narrowing_fix())
    # the INT64 warning alone still maps to int64-to-int32, which then makes it parse
    assert report.parses
    parser.errors = [err("INVALID_GRAPH: something new", node="add")]

    def no_warning(model):
        outcome = parser(model)
        outcome.warnings = []
        return outcome
    _, report = fix_until_parses(int64_model(), trt="8.6", parse=no_warning, fix_fn=narrowing_fix())
    assert not report.parses
    assert report.rounds[0]["stop"] == "no pass maps to the parser's errors"
    assert report.rounds[0]["plan"]["unmapped"] == [err("INVALID_GRAPH: something new", node="add")]


def test_errors_without_a_cause_bring_in_the_passes_check_proposes(every_pass_allowed):
    """8.6 answers a contrib op's empty optional outputs with "Failed to sort the model
    topologically" (no node, seen on the rig): `graphfix check` names the op and decompose-contrib."""
    from graphfix.fixtures import build

    def parser(model):
        if any(n.domain == "com.microsoft" for n in model.graph.node):
            return ParseOutcome(False, False, errors=[err('ErrorCode.INVALID_GRAPH: Assertion failed: toposort('
                                                          'graph.node(), &topoOrder) && "Failed to sort the model '
                                                          'topologically."')])
        return ParseOutcome(True, False)
    model, report = fix_until_parses(build("contrib_skip_layer_norm"), trt="8.6", parse=parser)
    assert report.parses and report.ok, report.summary()
    plan = report.rounds[0]["plan"]
    assert plan["passes"] == ["decompose-contrib"] and len(plan["unmapped"]) == 1
    assert plan["reasons"]["decompose-contrib"][0].startswith("check: skip_ln: custom-domain op")
    assert not any(n.domain == "com.microsoft" for n in model.graph.node)


# The first parser error TensorRT 8.6.0 gave for each raw fixture (rig, 2026-11-21, benchmarks/rig_fixtures.py)
PLUGIN_NOT_FOUND = 'ErrorCode.UNSUPPORTED_NODE: Assertion failed: creator && "Plugin not found, are the plugin name, ' \
                   'version, and namespace correct?"'
TOPOSORT = 'ErrorCode.INVALID_GRAPH: Assertion failed: toposort(graph.node(), &topoOrder) && "Failed to sort the ' \
           'model topologically."'
RIG_FIRST_ERRORS = {
    "check_reduce_axes_foldable": (err('ErrorCode.UNSUPPORTED_NODE: Assertion failed: inputAxes.is_weights() && '
                                       '"Axis input must be an initializer!"', "ReduceSum", "sum"), ["fold-constants"]),
    "check_roialign": (err("RuntimeError while parsing: Unable to open library: libnvinfer_vc_plugin.so.8 due to "
                           "libnvinfer_vc_plugin.so.8: cannot open shared object file: No such file or directory"),
                       ["plugins"]),
    "contrib_embed_layer_norm": (err(PLUGIN_NOT_FOUND, "EmbedLayerNormalization", "emb_ln"), ["decompose-contrib"]),
    "contrib_fast_gelu": (err(PLUGIN_NOT_FOUND, "FastGelu", "fast_gelu"), ["decompose-contrib"]),
    "contrib_gelus": (err(PLUGIN_NOT_FOUND, "Gelu", "gelu"), ["decompose-contrib"]),
    "contrib_skip_layer_norm": (err(TOPOSORT), ["decompose-contrib"]),
    "fold_castlike_constant": (err(PLUGIN_NOT_FOUND, "CastLike", "type_as"), ["fold-constants", "target-opset"]),
    "int64_pad_axes_shared": (err('ErrorCode.UNSUPPORTED_NODE: Assertion failed: false && "TensorRT does not '
                                  'support dynamic axes for pad!"', "Pad", "pad"), ["fold-constants", "target-opset"]),
}


@pytest.mark.parametrize("name", sorted(RIG_FIRST_ERRORS))
def test_loop_plans_the_right_passes_for_errors_seen_on_the_rig(name, every_pass_allowed):
    """Round 0 gets the error TensorRT 8.6 really gave; later rounds a stand-in parser that fails
    on what `graphfix check` calls an error. The plan must pick the passes that fix the fixture."""
    from graphfix.diagnosis import check_model
    from graphfix.fixtures import build
    first, expected = RIG_FIRST_ERRORS[name]
    rounds = []

    def parser(model):
        rounds.append(model)
        if len(rounds) == 1:
            return ParseOutcome(False, False, errors=[first])
        errors = [err(f.reason, f.op, f.node) for f in check_model(model, trt="8.6").findings if f.severity == "error"]
        return ParseOutcome(not errors, False, errors=errors)
    _, report = fix_until_parses(build(name), trt="8.6", parse=parser)
    assert report.rounds[0]["plan"]["passes"] == expected, report.rounds[0]["plan"]
    assert report.parses and report.ok, report.summary()


def test_a_parser_crash_brings_in_the_passes_check_proposes(every_pass_allowed):
    """TensorRT 8.6 segfaults on dynamo opset-18 exports (the rig: bert/gpt2/llama/t5). A stand-in
    parser crashes the same way while the model is above opset 17; the loop must run what `check`
    proposes (target-opset, with its folding) and go on until the model parses."""
    import os
    exported = os.path.join(os.path.dirname(__file__), "..", "fixtures", "exported", "llama_dynamo18.onnx")

    def parser(model):
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        if opset > 17:
            return ParseOutcome(False, True, errors=[err("TensorRT crashed (SIGSEGV) while parsing")])
        return ParseOutcome(True, False)
    model, report = fix_until_parses(onnx.load(exported), trt="8.6", parse=parser)
    assert report.parses and report.ok, report.summary()
    first = report.rounds[0]
    assert first["parse"]["crashed"] and first["plan"]["passes"] == ["fold-constants", "target-opset"]
    assert first["plan"]["reasons"]["target-opset"][0].startswith("check: ")


def test_a_parser_crash_with_nothing_to_try_stops(every_pass_allowed):
    def crashes(model):
        return ParseOutcome(False, True, errors=[err("TensorRT crashed (SIGSEGV) while parsing")])
    _, report = fix_until_parses(int64_model(), trt="8.6", parse=crashes, fix_fn=narrowing_fix())
    assert [r.get("stop") for r in report.rounds] == ["the parser crashed"] and not report.ok


def test_target_opset_brings_the_folding_it_needs():
    plan = plan_passes([err("This version of TensorRT only supports opset 17 and below")])
    assert plan.passes == ["fold-constants", "target-opset"]
    assert plan.reasons["fold-constants"] == ["target-opset lowers only constant axes, pads and sizes"]


def test_the_node_domain_decides_between_contrib_and_onnx_ops():
    gelu20 = make_model([helper.make_node("Gelu", ["x"], ["y"], name="g")], [vi("x", T.FLOAT, [2])],
                        [vi("y", T.FLOAT, [2])], opset=20)
    (e,) = fix_loop.with_domains([err(PLUGIN_NOT_FOUND, "Gelu", "g")], gelu20)
    assert e["domain"] == "" and passes_for_error(e) == ["target-opset"]
    assert passes_for_error({**e, "domain": "com.microsoft"}) == ["decompose-contrib"]


def test_loop_stops_on_same_errors_after_a_change(every_pass_allowed):
    def stubborn(model):
        return ParseOutcome(False, False, errors=[err("INT64 still here", node="cast")])
    _, report = fix_until_parses(int64_model(), trt="8.6", check="none", parse=stubborn, fix_fn=narrowing_fix())
    assert [r.get("stop") for r in report.rounds] == [None, "no progress: the same parser errors after the passes"]


def test_loop_stops_on_a_parser_crash_and_at_the_round_limit(every_pass_allowed):
    _, report = fix_until_parses(int64_model(), trt="8.6", parse=FakeParser(crash=True), fix_fn=narrowing_fix())
    assert report.rounds[0]["stop"] == "the parser crashed" and not report.ok

    counter = {"n": 0}

    def ever_new(model):
        counter["n"] += 1
        return ParseOutcome(False, False, errors=[err(f"INT64 problem #{counter['n']}")])
    _, report = fix_until_parses(int64_model(), trt="8.6", check="none", parse=ever_new,
                                 fix_fn=narrowing_fix(), max_rounds=2)
    assert len(report.rounds) == 3 and report.rounds[-1]["stop"] == "round limit (2) reached"


def test_loop_respects_skip():
    """The real _allowed: --skip removes a pass from the loop's choices."""
    from graphfix.registry import registered
    if "int64-to-int32" not in registered():
        pytest.skip("int64-to-int32 is not registered in this checkout")
    _, report = fix_until_parses(int64_model(), trt="8.6", skip="int64-to-int32", parse=FakeParser(),
                                 fix_fn=narrowing_fix())
    assert report.rounds[0]["stop"] == "no pass maps to the parser's errors"
    assert report.rounds[0]["plan"]["not_allowed_or_unavailable"] == ["int64-to-int32"]


def test_loop_with_the_real_pipeline_checks_the_result(every_pass_allowed):
    """The real graphfix.pipeline.fix runs the chosen pass; the final model is ORT-checked."""
    from graphfix.registry import registered
    if "int64-to-int32" not in registered():
        pytest.skip("int64-to-int32 is not registered in this checkout")
    model, report = fix_until_parses(int64_model(), trt="8.6", parse=FakeParser())
    ran = [p.name for p in report.passes]
    assert ran and set(ran) <= {"int64-to-int32"}
    if report.parses:   # the pass narrowed the constant: the whole result was compared in ORT
        assert report.checks and report.checks[0]["kind"] == "ort" and report.checks[0]["passed"]


def test_cli_until_parses_needs_tensorrt(monkeypatch, tmp_path, capsys):
    from graphfix.checks.tensorrt import env as trt_env
    monkeypatch.setattr(trt_env, "trt_unavailable_reason", lambda: "tensorrt is not installed")
    src = tmp_path / "m.onnx"
    onnx.save(int64_model(), str(src))
    code = main(["fix", str(src), "-o", str(tmp_path / "out.onnx"), "--until-parses", "--trt", "8.6"])
    assert code == 2
    assert "--until-parses needs TensorRT: tensorrt is not installed" in capsys.readouterr().err


# Raw fixtures TensorRT 8.6 did not parse, and that parsed after `graphfix fix` (rig, 2026-11-21):
# the loop, driven by the parser's own errors, must get each of them to parse too.
LOOP_MUST_PARSE = ("check_reduce_axes_foldable", "check_roialign", "contrib_embed_layer_norm",
                   "contrib_embed_layer_norm_dynamic", "contrib_embed_layer_norm_no_mask", "contrib_fast_gelu",
                   "contrib_gelus", "contrib_skip_layer_norm", "contrib_skip_layer_norm_opset13",
                   "fold_castlike_constant", "int64_pad_axes_shared")


def _loop_fixtures():
    from graphfix.fixtures import trt_basic
    return sorted(set(trt_basic.trt_test_fixtures()) | set(LOOP_MUST_PARSE))


@pytest.mark.trt
@pytest.mark.parametrize("name", _loop_fixtures())
def test_trt_until_parses_on_fixtures(name):
    """On the rig: each fixture, parser-driven, ends parsing or says why it stopped; the ones the
    full pipeline makes parse, the loop makes parse too."""
    from graphfix.fixtures import all_fixtures
    from graphfix.target import installed_trt_version
    stops = ("parses", "the parser crashed", "no progress: the passes changed nothing",
             "no progress: the same parser errors after the passes", "no pass maps to the parser's errors",
             f"round limit ({fix_loop.MAX_ROUNDS}) reached")
    version = installed_trt_version() or "8.6"
    model, report = fix_until_parses(all_fixtures()[name](), trt=version)
    last = report.rounds[-1]
    assert last["stop"] in stops, last
    assert report.parses == (last["stop"] == "parses"), report.summary()
    if name.startswith("trt_"):
        assert report.parses and len(report.rounds) == 1, report.summary()
    if name in LOOP_MUST_PARSE and version.startswith("8."):
        assert report.parses and len(report.rounds) >= 2, report.summary()
        assert report.ok, report.summary()     # and the final model matches the original in ORT
