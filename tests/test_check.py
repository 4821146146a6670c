"""`graphfix check`: findings on small models per TensorRT version, exit codes, JSON schema, real parser."""
from __future__ import annotations

import functools
import json
import os

import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper

import graphfix
from graphfix import cli
from graphfix.diagnosis import SCHEMA, check_model
from graphfix.fixtures import all_fixtures, build
from graphfix.fixtures._make import make_model, vi


def _problems(result):
    """(rule, severity, fix_pass) of every error / wrong-result finding."""
    return sorted((f.rule, f.severity, f.fix_pass or "") for f in result.findings
                  if f.severity != "warning")


def _warnings(result):
    return sorted((f.rule, f.fix_pass or "") for f in result.findings if f.severity == "warning")


# fixture -> {version: expected problems}; an empty list means clean.
EXPECTED = {
    "check_clean_conv": {"8.6": [], "10.0": [], "11.0": []},
    "check_reduce_axes_input": {"8.6": [("reduce_axes_ignored", "wrong-result", "target-opset")], "10.0": []},
    "check_reduce_axes_runtime": {"8.6": [("const_input", "error", "")], "10.0": [("const_input", "error", "")]},
    "check_reduce_axes_foldable": {"8.6": [("const_input", "error", "fold-constants")],
                                   "10.0": [("const_input", "error", "fold-constants")]},
    "check_scatter_reduction": {"8.6": [("attr_in", "wrong-result", "decompose-ops")], "10.0": []},
    "check_bool_equal": {"8.6": [("dtype", "error", "cast-bool")] * 2, "10.0": []},
    # 2**40 read at run time: no pass can keep it (int64-to-int32 keeps it INT64 and warns)
    "check_int64_weights": {"8.6": [("int64-out-of-range", "wrong-result", "")], "10.0": []},
    "check_unsupported_op": {"8.6": [("unsupported-op", "error", "")], "10.0": [("unsupported-op", "error", "")],
                             "11.0": [("unsupported-op", "error", "")]},
    "check_gridsample_opset20": {"8.6": [("attr_in", "wrong-result", "target-opset")],
                                 "10.13": [("attr_in", "wrong-result", "")]},
    "check_einsum_ellipsis": {"8.6": [("einsum_features", "wrong-result", "decompose-ops")],
                              "10.11": [("einsum_features", "wrong-result", "decompose-ops")], "10.12": []},
    "check_layernorm_decomposed": {"8.6": [], "10.0": []},
    # from the rig (2026-11-21, TensorRT 8.6.0 on an H200): single-class NMS built, ran and matched,
    # so 8.6 no longer predicts an error for it (was ("always", "error", "plugins")); a warning stays
    "check_nms": {"8.6": [], "10.0": []},
    "check_trilu_default_upper": {"8.6": [("attr_missing", "wrong-result", "normalize")]},
    "check_roialign": {"8.6": [("always", "error", "plugins")], "10.0": []},
}


@pytest.mark.parametrize("name, version", [(n, v) for n, per in EXPECTED.items() for v in per])
def test_findings_per_version(name, version):
    result = check_model(build(name), trt=version)
    assert _problems(result) == sorted(EXPECTED[name][version])
    assert result.clean == (not EXPECTED[name][version])


def test_warnings_carry_their_fix():
    ln = check_model(build("check_layernorm_decomposed"), trt="8.6")
    assert ("layernorm-pattern", "fuse-layernorm") in _warnings(ln)
    int64 = check_model(build("check_int64_weights"), trt="8.6")
    assert {("int64-weights", "int64-to-int32"), ("int64-io", "int64-to-int32")} <= set(_warnings(int64))
    high = check_model(build("check_reduce_axes_input"), trt="8.6")
    assert ("max-opset", "target-opset") in _warnings(high)
    assert ("max-opset", "target-opset") not in _warnings(check_model(build("check_reduce_axes_input"), trt="10.0"))


def test_node_names_and_sources_are_reported():
    result = check_model(build("check_scatter_reduction"), trt="8.6")
    finding = next(f for f in result.findings if f.severity == "wrong-result")
    assert (finding.node, finding.op) == ("scatter", "ScatterElements")
    assert "reduction" in finding.reason and finding.source


def test_unnamed_nodes_get_a_stable_display_name():
    model = make_model([helper.make_node("Det", ["x"], ["y"])], [vi("x", T.FLOAT, [2, 2])], [vi("y", T.FLOAT, [])])
    finding = check_model(model, trt="10.0").findings[0]
    assert finding.node == "<Det#0>"


def test_dtypes_trt_does_not_have():
    model = make_model([helper.make_node("Cast", ["x"], ["y"], to=T.INT16)], [vi("x", T.FLOAT, [3])],
                       [vi("y", T.INT16, [3])])
    rules = {f.rule for f in check_model(model, trt="10.0").findings if f.severity == "error"}
    assert {"cast_to_supported", "unsupported-dtype"} <= rules


def test_uint8_only_through_a_cast():
    through_cast = make_model([helper.make_node("Cast", ["x"], ["y"], to=T.FLOAT)], [vi("x", T.UINT8, [3])],
                              [vi("y", T.FLOAT, [3])])
    assert check_model(through_cast, trt="8.6").clean
    into_relu = make_model([helper.make_node("Identity", ["x"], ["y"])], [vi("x", T.UINT8, [3])],
                           [vi("y", T.UINT8, [3])])
    assert "io-only-dtype" in {f.rule for f in check_model(into_relu, trt="8.6").findings}


def test_subgraph_nodes_are_checked():
    """Nodes inside an If branch are checked too, named under their owner."""
    branch = helper.make_graph([helper.make_node("Det", ["x"], ["b"], name="inner_det")], "then", [],
                               [vi("b", T.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["c"], name="inner_sum", axes=[1],
                                                keepdims=0)], "else", [], [vi("c", T.FLOAT, [2])])
    model = make_model([helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=branch,
                                         else_branch=other)],
                       [vi("cond", T.BOOL, []), vi("x", T.FLOAT, [2, 2, 2])], [vi("y", T.FLOAT, [2])], opset=11)
    det = [f for f in check_model(model, trt="10.0").findings if f.op == "Det"]
    assert det and det[0].node.startswith("branch/") and det[0].node.endswith("inner_det")


def _rules(model, trt):
    return {f.rule for f in check_model(model, trt=trt).findings if f.severity != "warning"}


def test_ignored_axes_input_matters_only_when_not_all_axes():
    import numpy as np
    from graphfix.fixtures._make import const

    def reduce(axes):
        return make_model([helper.make_node("ReduceMax", ["x", "axes"], ["y"], keepdims=1)],
                          [vi("x", T.FLOAT, [2, 3])], [vi("y", T.FLOAT, None)],
                          [const("axes", axes, np.int64)], opset=18)
    assert "reduce_axes_ignored" in _rules(reduce([1]), "8.6")
    assert "reduce_axes_ignored" not in _rules(reduce([0, -1]), "8.6")   # all axes: same result


def _reduce_mean(x_shape, axes_nodes, axes_name, inputs=(), keepdims=1, inits=()):
    nodes = list(axes_nodes) + [helper.make_node("ReduceMean", ["x", axes_name], ["y"], keepdims=keepdims)]
    return make_model(nodes, [vi("x", T.FLOAT, x_shape)] + list(inputs), [vi("y", T.FLOAT, None)], list(inits),
                      opset=18)


def test_ignored_axes_input_harmless_cases_measured_on_8_6():
    """Ignoring the axes (reducing everything) gives the same result when the axes are empty, when
    computed axes name every axis, or when the axes left out have size 1 and keepdims = 1: such
    LayerNorm/RMSNorm/Reduce node tests matched on TensorRT 8.6.0 (rig 2026-11-21)."""
    import numpy as np
    from graphfix.fixtures._make import const
    empty_input = _reduce_mean([3, 2, 2], [], "axes", inputs=[vi("axes", T.INT64, [0])])
    assert "reduce_axes_ignored" not in _rules(empty_input, "8.6")
    # axes = Range(0, Size(Shape(x)), 1): every axis, computed from a static shape
    computed = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Size", ["s"], ["rank"]),
                helper.make_node("Range", ["zero", "rank", "one"], ["axes"])]
    consts = [const("zero", 0, np.int64), const("one", 1, np.int64)]
    assert "reduce_axes_ignored" not in _rules(_reduce_mean([3, 4], computed, "axes", inits=consts), "8.6")
    computed[2] = helper.make_node("Range", ["one", "rank", "one"], ["axes"])   # axes [1] only
    assert "reduce_axes_ignored" in _rules(_reduce_mean([3, 4], computed, "axes", inits=consts), "8.6")
    # the axes left out have size 1: same values, same shape with keepdims = 1, not with keepdims = 0
    axis1 = [const("axes", [1], np.int64)]
    assert "reduce_axes_ignored" not in _rules(_reduce_mean([1, 12], [], "axes", inits=axis1), "8.6")
    assert "reduce_axes_ignored" in _rules(_reduce_mean([1, 12], [], "axes", inits=axis1, keepdims=0), "8.6")
    assert "reduce_axes_ignored" in _rules(_reduce_mean([3, 4], [], "axes", inits=axis1), "8.6")


def test_reduce_log_sum_axes_must_be_an_initializer_on_8_6():
    """ReduceLogSum is imported through ReduceSum, which reads the axes input (measured: 'Axis input
    must be an initializer!' for a graph-input axes), so the axes are not ignored but required constant."""
    import numpy as np
    from graphfix.fixtures._make import const

    def logsum(inputs, inits):
        return make_model([helper.make_node("ReduceLogSum", ["x", "axes"], ["y"], keepdims=1)],
                          [vi("x", T.FLOAT, [3, 4])] + inputs, [vi("y", T.FLOAT, None)], inits, opset=18)
    runtime = check_model(logsum([vi("axes", T.INT64, [1])], []), trt="8.6")
    assert _problems(runtime) == [("const_input", "error", "")]
    assert check_model(logsum([], [const("axes", [1], np.int64)]), trt="8.6").clean


def test_nms_with_several_classes_is_ordered_differently_on_8_6():
    """Measured: single-class NMS matched; two classes gave the same count in another order
    (TensorRT sorts a batch item's boxes by score across classes)."""
    import numpy as np
    from graphfix.fixtures._make import const

    def nms(classes):
        return make_model([helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou"], ["sel"],
                                            name="nms")],
                          [vi("boxes", T.FLOAT, [1, 6, 4]), vi("scores", T.FLOAT, [1, classes, 6])],
                          [vi("sel", T.INT64, ["n", 3])],
                          [const("max_out", [2], np.int64), const("iou", [0.5], np.float32)])
    assert _problems(check_model(nms(2), trt="8.6")) == [("dim_equals", "wrong-result", "")]
    assert check_model(nms(1), trt="8.6").clean
    assert check_model(nms(2), trt="10.0").clean


def _pool(op, x_shape, opset, **attrs):
    return make_model([helper.make_node(op, ["x"], ["y"], name="pool", ceil_mode=1, **attrs)],
                      [vi("x", T.FLOAT, x_shape)], [vi("y", T.FLOAT, None)], opset=opset)


def test_pool_ceil_last_window_in_padding_at_opset_22():
    """Opset 22 drops a last ceil-mode window that starts in the right padding; TensorRT 8.6 kept it
    (measured: [1, 1, 2, 2] where ONNX gives [1, 1, 1, 1])."""
    assert "pool_ceil_last_window" in _rules(_pool("MaxPool", [1, 1, 2, 2], 22, kernel_shape=[1, 1],
                                                    strides=[2, 2]), "8.6")
    assert "pool_ceil_last_window" in _rules(_pool("AveragePool", [1, 3, 2, 2], 22, kernel_shape=[3, 3],
                                                    strides=[3, 3], pads=[1, 1, 1, 1]), "8.6")
    # the same node at opset 21 means the larger size; a last window inside the input changes nothing
    assert "pool_ceil_last_window" not in _rules(_pool("MaxPool", [1, 1, 2, 2], 21, kernel_shape=[1, 1],
                                                        strides=[2, 2]), "8.6")
    assert "pool_ceil_last_window" not in _rules(_pool("MaxPool", [1, 1, 4, 4], 22, kernel_shape=[3, 3],
                                                        strides=[2, 2]), "8.6")
    assert "pool_ceil_last_window" not in _rules(_pool("MaxPool", [1, 1, "h", "w"], 22, kernel_shape=[1, 1],
                                                        strides=[2, 2]), "8.6")


def test_loop_trip_count_from_a_float_input():
    """Measured: 'network input that is shape tensor must have type Int32' for a Loop whose trip count
    is computed from FLOAT graph inputs (Range's function body); INT32 inputs built."""
    def loop(dtype):
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("Identity", ["acc"], ["acc_out"])],
            "body", [vi("i", T.INT64, []), vi("cond_in", T.BOOL, []), vi("acc", dtype, [])],
            [vi("cond_out", T.BOOL, []), vi("acc_out", dtype, [])])
        nodes = [helper.make_node("Sub", ["limit", "start"], ["span"]),
                 helper.make_node("Cast", ["span"], ["span_f"], to=T.FLOAT),
                 helper.make_node("Ceil", ["span_f"], ["trips_f"]),
                 helper.make_node("Cast", ["trips_f"], ["trips"], to=T.INT64),
                 helper.make_node("Loop", ["trips", "", "start"], ["out"], name="loop", body=body)]
        return make_model(nodes, [vi("start", dtype, []), vi("limit", dtype, [])], [vi("out", dtype, [])],
                          opset=13)
    assert _problems(check_model(loop(T.FLOAT), trt="8.6")) == [("float_input_to_shape", "error", "")]
    assert "float_input_to_shape" not in _rules(loop(T.INT32), "8.6")


def test_random_dtype_must_be_float_on_8_6():
    """Measured: RandomUniformLike with dtype = DOUBLE failed with 'Unsupported data type'."""
    def random_like(dtype):
        return make_model([helper.make_node("RandomUniformLike", ["x"], ["y"], dtype=dtype)],
                          [vi("x", T.FLOAT, [4])], [vi("y", dtype, [4])])
    assert "attr_in" in _rules(random_like(T.DOUBLE), "8.6")
    assert "attr_in" not in _rules(random_like(T.FLOAT), "8.6")


def test_uint8_inputs_into_equal_on_8_6():
    """Measured: Equal took UINT8 network inputs (and matched); Greater, Add, ... refused them."""
    def binary(op, out_type):
        return make_model([helper.make_node(op, ["a", "b"], ["y"])], [vi("a", T.UINT8, [4]), vi("b", T.UINT8, [4])],
                          [vi("y", out_type, [4])])
    assert check_model(binary("Equal", T.BOOL), trt="8.6").clean
    assert "io-only-dtype" in _rules(binary("Greater", T.BOOL), "8.6")
    assert "io-only-dtype" in _rules(binary("Add", T.UINT8), "8.6")


def test_runtime_float_scales_cannot_become_a_shape():
    model = make_model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")],
                       [vi("x", T.FLOAT, [1, 1, 2, 2]), vi("scales", T.FLOAT, [4])], [vi("y", T.FLOAT, None)])
    for version in ("8.6", "10.0"):
        assert "float_shape_input" in _rules(model, version)


def test_loop_scan_outputs_need_a_trip_count():
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["x"], ["scan"])],
        "body", [vi("i", T.INT64, []), vi("cond_in", T.BOOL, [])],
        [vi("cond_out", T.BOOL, []), vi("scan", T.FLOAT, [2])])
    model = make_model([helper.make_node("Loop", ["", "cond"], ["ys"], name="loop", body=body)],
                       [vi("cond", T.BOOL, []), vi("x", T.FLOAT, [2])], [vi("ys", T.FLOAT, None)], opset=13)
    found = [f for f in check_model(model, trt="8.6").findings if f.rule == "loop_scan_without_trip_count"]
    assert found and found[0].severity == "wrong-result"
    found = [f for f in check_model(model, trt="10.0").findings if f.rule == "loop_scan_without_trip_count"]
    assert found and found[0].severity == "error"


def test_qdq_needs_a_zero_point_on_8_6():
    import numpy as np
    from graphfix.fixtures._make import const
    model = make_model([helper.make_node("QuantizeLinear", ["x", "s"], ["q"]),
                        helper.make_node("DequantizeLinear", ["q", "s"], ["y"])],
                       [vi("x", T.FLOAT, [4])], [vi("y", T.FLOAT, [4])], [const("s", 0.1, np.float32)])
    assert "input_required" in _rules(model, "8.6")
    assert "io-only-dtype" in _rules(model, "10.0")   # no zero point: ONNX makes the result UINT8
    with_zp = make_model([helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
                          helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"])],
                         [vi("x", T.FLOAT, [4])], [vi("y", T.FLOAT, [4])],
                         [const("s", 0.1, np.float32), const("zp", 0, np.int8)])
    assert check_model(with_zp, trt="8.6").clean and check_model(with_zp, trt="10.0").clean


# --- command line -----------------------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    def save(name):
        path = tmp_path / f"{name}.onnx"
        onnx.save(build(name), str(path))
        return str(path)
    return save


def test_cli_exit_codes(saved, tmp_path, capsys):
    assert cli.main(["check", saved("check_clean_conv"), "--trt", "8.6", "--no-real-parser"]) == 0
    assert cli.main(["check", saved("check_scatter_reduction"), "--trt", "8.6", "--no-real-parser"]) == 1
    assert cli.main(["check", saved("check_scatter_reduction"), "--trt", "10.0", "--no-real-parser"]) == 0
    assert cli.main(["check", str(tmp_path / "missing.onnx"), "--trt", "8.6"]) == 2
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all \xff\xfe")
    assert cli.main(["check", str(junk), "--trt", "8.6"]) == 2
    assert cli.main(["check", saved("check_clean_conv"), "--trt", "banana"]) == 2
    capsys.readouterr()


def test_cli_table(saved, capsys):
    assert cli.main(["check", saved("check_reduce_axes_input"), "--trt", "8.6", "--no-real-parser"]) == 1
    out = capsys.readouterr().out
    assert "wrong-result" in out and "ReduceMean" in out and "target-opset" in out
    assert "problems remain" in out
    assert cli.main(["check", saved("check_unsupported_op"), "--trt", "8.6", "--no-real-parser"]) == 1
    assert "no automatic fix" in capsys.readouterr().out


def test_cli_json_schema(saved, capsys):
    assert cli.main(["check", saved("check_nms"), "--trt", "8.6", "--json", "--no-real-parser"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == SCHEMA
    assert set(doc) == {"schema", "model", "target", "profile", "clean", "counts", "findings", "real_parser"}
    assert doc["target"] == {"version": "8.6", "source": "flag"}
    assert doc["profile"]["line"] == "8.6" and doc["clean"] is True   # warnings only (see EXPECTED)
    assert doc["real_parser"] is None
    assert sum(doc["counts"].values()) == len(doc["findings"])
    for f in doc["findings"]:
        assert set(f) == {"node", "op", "severity", "reason", "fix_pass", "source", "rule"}
        assert f["severity"] in ("error", "wrong-result", "warning")
        assert f["fix_pass"] is None or isinstance(f["fix_pass"], str)
        assert isinstance(f["reason"], str) and isinstance(f["source"], str)
    nms = [f for f in doc["findings"] if f["op"] == "NonMaxSuppression"]
    assert nms and nms[0]["fix_pass"] == "plugins" and nms[0]["node"] == "nms"
    assert nms[0]["severity"] == "warning"


# --- the real parser, beside the prediction -------------------------------------------------------------

def test_real_parser_absent_is_reported(saved, monkeypatch, capsys):
    import graphfix.checks.tensorrt.env as trt_env
    monkeypatch.setattr(trt_env, "trt_unavailable_reason", lambda: "tensorrt is not installed")
    assert cli.main(["check", saved("check_clean_conv"), "--trt", "8.6", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["real_parser"] == {"available": False, "reason": "tensorrt is not installed"}


def test_real_parser_function_missing(saved, monkeypatch, capsys):
    import graphfix.checks.tensorrt.trt as trt_check
    import graphfix.checks.tensorrt.env as trt_env
    monkeypatch.setattr(trt_env, "trt_unavailable_reason", lambda: None)
    monkeypatch.delattr(trt_check, "parse_in_subprocess", raising=False)
    assert cli.main(["check", saved("check_clean_conv"), "--trt", "8.6"]) == 0
    assert "real parser unavailable" in capsys.readouterr().out


def test_real_parser_errors_beside_the_table(saved, monkeypatch, capsys):
    from types import SimpleNamespace

    import graphfix.checks.tensorrt.trt as trt_check
    import graphfix.checks.tensorrt.env as trt_env
    calls = []

    def fake_parse(path, plugins=()):
        calls.append(path)
        return SimpleNamespace(parsed=False, crashed=False,
                               errors=[{"node": "det", "op": "Det", "message": "No importer registered for op: Det"}])

    monkeypatch.setattr(trt_env, "trt_unavailable_reason", lambda: None)
    monkeypatch.setattr(trt_check, "parse_in_subprocess", fake_parse, raising=False)
    path = saved("check_unsupported_op")
    assert cli.main(["check", path, "--trt", "8.6"]) == 1
    out = capsys.readouterr().out
    assert calls == [path]
    assert "real TensorRT parser: failed" in out and "No importer registered for op: Det (predicted)" in out
    assert cli.main(["check", path, "--trt", "8.6", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["real_parser"]["available"] is True and doc["real_parser"]["errors"][0]["op"] == "Det"


def test_fixture_files_round_trip(saved):
    """A model on disk gives the same findings as the in-memory one (external path handling)."""
    path = saved("check_gridsample_opset20")
    on_disk = check_model(path, trt="8.6")
    in_memory = check_model(build("check_gridsample_opset20"), trt="8.6")
    assert [f.to_json() for f in on_disk.findings] == [f.to_json() for f in in_memory.findings]
    assert os.path.basename(on_disk.model) == "check_gridsample_opset20.onnx"


# -------------------------------------------------------- the fix column keeps its word (all fixtures)

@functools.lru_cache(maxsize=None)
def _claimed_fixes(name):
    """The 8.6 problems `check` says a pass fixes, for one fixture (checked once per session)."""
    return tuple(f for f in check_model(build(name), trt="8.6").findings if f.severity != "warning" and f.fix_pass
                 and not f.flag)   # a fix that needs a flag is not claimed for plain `graphfix fix`


CLAIMS_A_FIX = [n for n in sorted(all_fixtures()) if _claimed_fixes(n)]


def test_fixtures_exercise_every_kind_of_fix_claim():
    claimed = {f.fix_pass for n in CLAIMS_A_FIX for f in _claimed_fixes(n)}
    assert claimed >= {"fold-constants", "target-opset", "cast-bool", "plugins", "decompose-contrib",
                       "decompose-quantized"}, claimed


@pytest.mark.parametrize("name", CLAIMS_A_FIX)
def test_a_finding_that_names_a_pass_is_gone_after_graphfix_fix(name):
    """`check` says which pass fixes each problem (contrib and quantized ops, CastLike, opset-20
    Gelu included); after `graphfix fix` for the same target no such problem is left."""
    model = build(name)
    before = _claimed_fixes(name)
    fixed, report = graphfix.fix(model, trt="8.6", check="none")
    after = check_model(fixed, trt="8.6")
    left = [(f.op, f.rule) for f in after.findings if f.severity != "warning"]
    assert not set(left) & {(f.op, f.rule) for f in before}, (left, report.summary())
