"""Version-aware rewrite rules: subgraph -> TensorRT plugin, and op -> standard ONNX decompositions.

Public API (see docs/plugins.md):

    Rule, PluginSpec, Match, NearMiss   the rule contract (rule.py)
    register_rule(rule)                 add a rule (class or instance; also a class decorator)
    load_rule_file(path)                import a user's rule module (``graphfix fix --plugin-rules``)
    registered_rules(kind, family)      the rules, sorted by name
    Builder                             what a rule's rewrite() builds with (build.py)

Which pass fixes what (the ops a rule rewrites away, the `check` findings it removes, its flag) is
read from the rules by graphfix.remedies, the table of remedies.

Built-in families: nms (EfficientNMS_TRT), roi_align (ROIAlign_TRT), group_norm
(GroupNormalizationPlugin), contrib (ONNX Runtime com.microsoft ops: plugins and decompositions),
quantized (integer / dynamic-quantized ops -> float ops), ops (standard ops a TensorRT version lacks or
computes wrong, per its profile: scatter_reduce, einsum, elementwise, crop_pad, col2im, hardmax, pool_conv, attention, rms_norm, mod; ops_base.py).
"""
from __future__ import annotations

import importlib

# Loaded on first use (PEP 562): importing this package must not pay
# for onnx and numpy, which build.py needs.
_LAZY = {"PLUGIN_DOMAIN": "build", "Builder": "build", "FieldError": "build", "FunctionBody": "build",
         "default_function_body": "build", "plugin_attr": "build", "get_rule": "registry",
         "load_rule_file": "registry", "register_rule": "registry",
         "registered_rules": "registry", "unregister_rule": "registry", "DECOMPOSE": "rule", "PLUGIN": "rule",
         "Match": "rule", "NearMiss": "rule", "PluginSpec": "rule", "Rule": "rule"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = ["Rule", "PluginSpec", "Match", "NearMiss", "Builder", "FunctionBody", "FieldError",
           "register_rule", "unregister_rule", "registered_rules", "get_rule", "load_rule_file",
           "default_function_body", "plugin_attr", "PLUGIN", "DECOMPOSE", "PLUGIN_DOMAIN"]
