"""`graphfix fix` options of plugin substitution and decomposition, and the PassContext options they set."""
from __future__ import annotations

from typing import Any, Dict


def add_plugin_arguments(parser) -> None:
    g = parser.add_argument_group("plugins and decompositions")
    g.add_argument("--nms-plugin", action="store_true",
                   help="replace NonMaxSuppression and its post-processing head by EfficientNMS_TRT "
                        "(opt-in on every target); the graph outputs become num_detections, detection_boxes, "
                        "detection_scores, detection_classes")
    g.add_argument("--plugin-rules", action="append", default=[], metavar="FILE",
                   help="Python file that registers rewrite rules with graphfix.plugin_rules.register_rule "
                        "(repeatable; see docs/plugins.md)")
    g.add_argument("--plugin-as-function", action="store_true",
                   help="TensorRT >= 10.7: emit each plugin as an ONNX local function whose body is the "
                        "original subgraph (TensorRT picks the plugin, ONNX Runtime runs the body)")
    g.add_argument("--contrib-plugins", action="store_true",
                   help="ONNX Runtime contrib ops with a TensorRT plugin (SkipLayerNormalization, FastGelu) "
                        "become that plugin instead of standard ONNX ops")
    g.add_argument("--rules", metavar="NAMES",
                   help="comma-separated rules to apply on any target, e.g. roi-align,group-norm "
                        "(see docs/plugins.md)")
    g.add_argument("--disable-rules", metavar="NAMES", help="comma-separated rules not to apply")
    g.add_argument("--dequantize", choices=["exact", "float"], default="exact",
                   help="integer/dynamic-quantized ops -> float ops with dequantized weights; exact (default): "
                        "keep the dynamic activation quantization as float ops (same results as ONNX "
                        "Runtime); float: float activations (smaller graph, results move toward the float model)")


def plugin_options(args) -> Dict[str, Any]:
    """Load the user's rule files and return the PassContext.options the flags ask for."""
    from ..errors import UsageError
    from ..plugin_rules.registry import get_rule, load_rule_file
    for path in getattr(args, "plugin_rules", None) or []:
        load_rule_file(path)
    options: Dict[str, Any] = {}
    if getattr(args, "nms_plugin", False):
        options["nms"] = True
    if getattr(args, "plugin_as_function", False):
        options["plugin_as_function"] = True
    if getattr(args, "contrib_plugins", False):
        options["contrib_plugins"] = True
    for name in _names(getattr(args, "rules", None)):
        rule = get_rule(name)
        if not rule.option:
            raise UsageError(f"rule '{name}' cannot be asked for (it has no option)")
        options[rule.option] = True
    disabled = _names(getattr(args, "disable_rules", None))
    if disabled:
        for name in disabled:
            get_rule(name)                      # unknown names are usage errors
        options["disable_rules"] = disabled
    if getattr(args, "dequantize", "exact") != "exact":
        options["dequantize"] = args.dequantize
    return options


def _names(text):
    return [n.strip() for n in (text or "").split(",") if n.strip()]
