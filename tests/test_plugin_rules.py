"""The rule framework: plugin field typing, the registry and user rules (API, rule files, CLI),
version gating, and plugins emitted as ONNX local functions (TensorRT >= 10.7)."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from graphfix.cli import main
from graphfix.checks.ort import ort_can_load
from graphfix.errors import UsageError
from graphfix.fixtures import build
from graphfix.plugin_rules import (PLUGIN, PLUGIN_DOMAIN, FieldError, Match, NearMiss, PluginSpec, Rule, get_rule,
                                   load_rule_file, plugin_attr, register_rule, registered_rules, unregister_rule)
from graphfix.target import TrtRange
from gf_testing import apply_pass, assert_equivalent, assert_idempotent, ops


# -- plugin fields: the parser's type mapping ----------------------------------------------------------
def test_plugin_attr_maps_python_values_to_parser_field_types():
    assert plugin_attr("flag", True) == 1 and plugin_attr("flag", np.bool_(False)) == 0
    assert plugin_attr("n", np.int64(7)) == 7 and isinstance(plugin_attr("n", np.int64(7)), int)
    assert plugin_attr("x", np.float32(0.5)) == 0.5
    assert plugin_attr("ks", [1, 2]) == [1, 2] and plugin_attr("fs", [1.0, 2]) == [1.0, 2.0]
    t = plugin_attr("w", np.ones(3, np.float16))
    assert isinstance(t, gs.Constant) and t.values.dtype == np.float16


@pytest.mark.parametrize("value,why", [(2 ** 31, "int32"), (np.ones(2, np.int64), "dtype int64"),
                                       (np.ones(2, np.uint8), "dtype uint8"), ({"a": 1}, "unsupported")])
def test_plugin_attr_refuses_what_the_parser_cannot_import(value, why):
    with pytest.raises(FieldError, match=why):
        plugin_attr("f", value)


def test_every_builtin_plugin_rule_declares_its_plugin_and_versions():
    plugin_rules = registered_rules(kind=PLUGIN)
    assert {r.name for r in plugin_rules} >= {"efficient-nms", "roi-align", "group-norm", "skip-layer-norm-plugin",
                                              "fast-gelu-plugin"}
    for rule in plugin_rules:
        assert rule.plugin.name and rule.plugin.version and rule.plugin.source, rule.name
        assert rule.option, f"{rule.name}: every plugin rule can be asked for on any target"
    assert not get_rule("fast-gelu-plugin").plugin.ships.contains(__import__("graphfix").TrtVersion(11, 0))
    assert get_rule("efficient-nms").changes_outputs and not get_rule("efficient-nms").function_ok


# -- user rules ------------------------------------------------------------------------------------
class ReluPlugin(Rule):
    """A user's rule: Relu -> MyRelu_TRT with a float field and an int field."""
    name = "my-relu"
    summary = "Relu -> MyRelu_TRT"
    anchor_ops = ("Relu",)
    plugin = PluginSpec("MyRelu_TRT", "2", namespace="mine", ships=TrtRange(since="8.6"))
    needed = TrtRange(below="9.0")
    option = "my_relu"
    function_ok = True

    def match(self, graph, node, ctx):
        if node.name == "skip-me":
            return NearMiss(node.name, "asked to skip")
        return Match(anchor=node.name, nodes=[node], inputs=list(node.inputs), outputs=list(node.outputs),
                     fields={"slope": 0.0, "mode": 1})


@pytest.fixture
def relu_rule():
    register_rule(ReluPlugin)
    yield get_rule("my-relu")
    unregister_rule("my-relu")


def relu_model(name="relu"):
    from onnx import TensorProto, helper
    from graphfix.fixtures._make import make_model, vi
    return make_model([helper.make_node("Relu", ["x"], ["y"], name=name)], [vi("x", TensorProto.FLOAT, [2, 3])],
                      [vi("y", TensorProto.FLOAT, [2, 3])])


def test_registered_user_rule_builds_a_plugin_node(relu_rule):
    fixed, result = apply_pass("plugins", relu_model(), trt="8.6")
    node = fixed.graph.node[0]
    assert (node.op_type, node.domain) == ("MyRelu_TRT", PLUGIN_DOMAIN)
    a = {x.name: x for x in node.attribute}
    assert a["slope"].type == onnx.AttributeProto.FLOAT and a["mode"].type == onnx.AttributeProto.INT
    assert a["plugin_version"].s == b"2" and a["plugin_namespace"].s == b"mine"
    assert list(node.input) == ["x"] and list(node.output) == ["y"]
    assert result.changes[0].details == {"rule": "my-relu", "replaced": ["Relu"], "plugin": "MyRelu_TRT v2"}
    assert {d.domain for d in fixed.opset_import} >= {"", PLUGIN_DOMAIN}
    onnx.checker.check_model(fixed)                        # the custom domain keeps the checker happy
    assert_idempotent("plugins", relu_model(), trt="8.6")


def test_user_rule_near_miss_and_version_gating(relu_rule):
    _, missed = apply_pass("plugins", relu_model("skip-me"), trt="8.6")
    assert missed.warnings == ["my-relu: skip-me not rewritten: asked to skip"]
    assert missed.counts == {"near_miss_my_relu": 1}
    _, not_needed = apply_pass("plugins", relu_model(), trt="10.3")
    assert not not_needed.modified and not not_needed.warnings
    asked, _ = apply_pass("plugins", relu_model(), trt="10.3", options={"my_relu": True})
    assert ops(asked) == ["MyRelu_TRT"]
    _, disabled = apply_pass("plugins", relu_model(), trt="8.6", options={"disable_rules": ["my-relu"]})
    assert not disabled.modified


def test_rule_whose_plugin_the_target_lacks_warns(relu_rule):
    _, result = apply_pass("plugins", relu_model(), trt="8.5", options={"my_relu": True})
    assert not result.modified
    assert result.warnings == ["my-relu: not applied, TensorRT 8.5 does not ship plugin MyRelu_TRT v2 "
                               "(shipped in >=8.6)"]


def test_register_rule_validates(relu_rule):
    class Nameless(ReluPlugin):
        name = ""

    class NoPlugin(ReluPlugin):
        name = "no-plugin"
        plugin = None

    class Other(ReluPlugin):
        pass
    with pytest.raises(UsageError, match="kebab-case"):
        register_rule(Nameless)
    with pytest.raises(UsageError, match="needs a PluginSpec"):
        register_rule(NoPlugin)
    with pytest.raises(UsageError, match="already registered"):
        register_rule(Other)
    register_rule(Other, replace=True)
    assert type(get_rule("my-relu")) is Other


RULE_FILE = '''
from graphfix.plugin_rules import Match, PluginSpec, Rule, register_rule
from graphfix.target import TrtRange


@register_rule
class SigmoidPlugin(Rule):
    name = "file-sigmoid"
    summary = "Sigmoid -> FileSigmoid_TRT"
    anchor_ops = ("Sigmoid",)
    plugin = PluginSpec("FileSigmoid_TRT")
    option = "file_sigmoid"
    default = False

    def match(self, graph, node, ctx):
        return Match(anchor=node.name, nodes=[node], inputs=list(node.inputs), outputs=list(node.outputs),
                     fields={"alpha": 1.5})
'''


def sigmoid_model(path):
    from onnx import TensorProto, helper
    from graphfix.fixtures._make import make_model, vi
    model = make_model([helper.make_node("Sigmoid", ["x"], ["y"], name="sig")], [vi("x", TensorProto.FLOAT, [2])],
                       [vi("y", TensorProto.FLOAT, [2])])
    onnx.save(model, str(path))


def test_rule_file_loads_once(tmp_path):
    path = tmp_path / "rules.py"
    path.write_text(RULE_FILE)
    try:
        first = load_rule_file(str(path))
        assert load_rule_file(str(path)) is first
        assert get_rule("file-sigmoid").plugin.name == "FileSigmoid_TRT"
    finally:
        unregister_rule("file-sigmoid")


def test_rule_file_errors_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_rule_file(str(tmp_path / "missing.py"))
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(UsageError, match="boom"):
        load_rule_file(str(bad))


def test_cli_plugin_rules_flag(tmp_path, capsys):
    rules, model, out = tmp_path / "cli_rules.py", tmp_path / "m.onnx", tmp_path / "out.onnx"
    rules.write_text(RULE_FILE.replace("file-sigmoid", "cli-sigmoid").replace("file_sigmoid", "cli_sigmoid")
                     .replace("SigmoidPlugin", "CliSigmoid"))
    sigmoid_model(model)
    try:
        # the rule is opt-in through its option; a user file can also make it default
        assert main(["fix", str(model), "-o", str(out), "--trt", "8.6", "--plugin-rules", str(rules),
                     "--quiet"]) == 0
        assert [n.op_type for n in onnx.load(str(out)).graph.node] == ["Sigmoid"]
        get_rule("cli-sigmoid").__class__.default = True
        assert main(["fix", str(model), "-o", str(out), "--trt", "8.6", "--plugin-rules", str(rules),
                     "--quiet"]) == 0
        node = onnx.load(str(out)).graph.node[0]
        assert node.op_type == "FileSigmoid_TRT"
    finally:
        unregister_rule("cli-sigmoid")


def test_cli_bad_rule_file_exits_2(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    sigmoid_model(model)
    assert main(["fix", str(model), "-o", str(tmp_path / "o.onnx"), "--plugin-rules", str(tmp_path / "nope.py")]) == 2
    assert "rule file not found" in capsys.readouterr().err


def test_cli_nms_plugin_flag(tmp_path):
    model, out = tmp_path / "nms.onnx", tmp_path / "out.onnx"
    onnx.save(build("nms_topk_head"), str(model))
    assert main(["fix", str(model), "-o", str(out), "--trt", "10.3", "--quiet"]) == 0
    assert "NonMaxSuppression" in [n.op_type for n in onnx.load(str(out)).graph.node]
    assert main(["fix", str(model), "-o", str(out), "--trt", "10.3", "--nms-plugin", "--quiet"]) == 0
    fixed = onnx.load(str(out))
    assert [n.op_type for n in fixed.graph.node] == ["EfficientNMS_TRT"]
    assert [o.name for o in fixed.graph.output][0] == "num_detections"


# -- plugins as ONNX local functions ----------------------------------------------------------------
@pytest.mark.parametrize("fixture,option,plugin", [
    ("roi_align_16", "roi_align", "ROIAlign_TRT"),
    ("group_norm_torch", "group_norm", "GroupNormalizationPlugin"),
    ("contrib_fast_gelu", "contrib_plugins", "CustomGeluPluginDynamic"),
])
def test_plugin_as_function_runs_in_onnx_runtime(fixture, option, plugin):
    model = build(fixture)
    opts = {option: True, "plugin_as_function": True}
    fixed, result = apply_pass("plugins", model, trt="10.8", options=opts)
    node = next(n for n in fixed.graph.node if n.op_type == plugin)
    assert node.domain == PLUGIN_DOMAIN
    attrs = {a.name for a in node.attribute}
    assert {"plugin_version", "plugin_namespace"} <= attrs      # TensorRT picks the plugin by these
    funcs = [(f.domain, f.name) for f in fixed.functions]
    assert funcs == [(PLUGIN_DOMAIN, plugin)]
    onnx.checker.check_model(fixed, full_check=True)
    assert ort_can_load(fixed)
    assert_equivalent(model, fixed)                             # ONNX Runtime inlines the original subgraph
    assert_idempotent("plugins", model, trt="10.8", **{"options": opts})


def test_functions_are_shared_across_weights_and_split_by_other_differences():
    model = build("group_norm_three_layers")
    fixed, _ = apply_pass("plugins", model, trt="10.8", options={"group_norm": True, "plugin_as_function": True})
    calls = [n for n in fixed.graph.node if n.op_type == "GroupNormalizationPlugin"]
    assert [n.domain for n in calls] == [PLUGIN_DOMAIN, PLUGIN_DOMAIN, PLUGIN_DOMAIN + ".1"]   # eps 1e-5, 1e-5, 1e-6
    assert sorted((f.domain, f.name) for f in fixed.functions) == [
        (PLUGIN_DOMAIN, "GroupNormalizationPlugin"), (PLUGIN_DOMAIN + ".1", "GroupNormalizationPlugin")]
    assert_equivalent(model, fixed)


def test_plugin_as_function_needs_tensorrt_10_7_and_a_same_function_plugin():
    _, old = apply_pass("plugins", build("roi_align_16"), trt="8.6", options={"plugin_as_function": True})
    assert any("needs >= 10.7" in w for w in old.warnings), old.warnings
    fixed, nms = apply_pass("plugins", build("nms_topk_head"), trt="10.8",
                            options={"nms": True, "plugin_as_function": True})
    assert not fixed.functions
    assert any("does not compute what the replaced subgraph computes" in w for w in nms.warnings)


def test_cli_rules_and_disable_rules(tmp_path, capsys):
    model, out = tmp_path / "gn.onnx", tmp_path / "out.onnx"
    onnx.save(build("group_norm_torch"), str(model))
    assert main(["fix", str(model), "-o", str(out), "--trt", "10.3", "--quiet"]) == 0
    assert "GroupNormalizationPlugin" not in [n.op_type for n in onnx.load(str(out)).graph.node]
    assert main(["fix", str(model), "-o", str(out), "--trt", "10.3", "--rules", "group-norm", "--quiet"]) == 0
    assert "GroupNormalizationPlugin" in [n.op_type for n in onnx.load(str(out)).graph.node]
    assert main(["fix", str(model), "-o", str(out), "--trt", "8.6", "--disable-rules", "group-norm", "--quiet"]) == 0
    assert "GroupNormalizationPlugin" not in [n.op_type for n in onnx.load(str(out)).graph.node]
    assert main(["fix", str(model), "-o", str(out), "--rules", "nope", "--quiet"]) == 2
    assert "unknown rule 'nope'" in capsys.readouterr().err
