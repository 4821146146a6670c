"""The rule registry: built-in rule families plus the user's rules (Python API or a rule file).

    from graphfix.plugin_rules import Rule, PluginSpec, register_rule

    @register_rule
    class MyPlugin(Rule):
        name = "my-plugin"
        ...

``graphfix fix --plugin-rules my_rules.py`` imports such a file (see docs/plugins.md).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from typing import Dict, List, Optional, Type, Union

from ..errors import UsageError
from .rule import DECOMPOSE, PLUGIN, Rule

BUILTIN_MODULES = ("nms", "roi_align", "group_norm", "contrib", "quantized", "scatter_reduce", "einsum",
                   "elementwise", "crop_pad", "col2im", "hardmax", "pool_conv", "attention", "rms_norm", "mod")

_RULES: Dict[str, Rule] = {}
_builtins_loaded = False


def register_rule(rule: Union[Rule, Type[Rule]], *, replace: bool = False):
    """Register a rule (class or instance); usable as a class decorator. Returns what it was given.

    A second rule with the same name is an error unless ``replace=True`` (a user rule may replace a
    built-in one of the same name that way).
    """
    instance = rule() if isinstance(rule, type) else rule
    if not isinstance(instance, Rule):
        raise UsageError(f"register_rule: {rule!r} is not a graphfix.plugin_rules.Rule")
    _validate(instance)
    existing = _RULES.get(instance.name)
    if existing is not None and not replace and type(existing) is not type(instance):
        raise UsageError(f"rule '{instance.name}' is already registered ({type(existing).__module__}."
                         f"{type(existing).__name__}); pass replace=True to replace it")
    _RULES[instance.name] = instance
    return rule


def unregister_rule(name: str) -> None:
    _RULES.pop(name, None)


def _validate(rule: Rule) -> None:
    if not rule.name or rule.name != rule.name.lower() or " " in rule.name:
        raise UsageError(f"rule {type(rule).__name__}: name must be non-empty kebab-case, got {rule.name!r}")
    if rule.kind not in (PLUGIN, DECOMPOSE):
        raise UsageError(f"rule '{rule.name}': kind must be '{PLUGIN}' or '{DECOMPOSE}'")
    if rule.kind == PLUGIN and rule.plugin is None:
        raise UsageError(f"rule '{rule.name}': a plugin rule needs a PluginSpec")
    if rule.kind == DECOMPOSE and rule.family not in ("contrib", "quantized", "ops"):
        raise UsageError(f"rule '{rule.name}': a decompose rule's family must be 'contrib', 'quantized' or 'ops'")
    if not rule.anchor_ops:
        raise UsageError(f"rule '{rule.name}': anchor_ops is empty")


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(f"{__package__}.{module}")


def registered_rules(kind: Optional[str] = None, family: Optional[str] = None) -> List[Rule]:
    """Rules sorted by name (deterministic application order), filtered by kind/family."""
    _load_builtins()
    out = [r for _, r in sorted(_RULES.items())]
    if kind is not None:
        out = [r for r in out if r.kind == kind]
    if family is not None:
        out = [r for r in out if r.family == family]
    return out


def get_rule(name: str) -> Rule:
    _load_builtins()
    if name not in _RULES:
        raise UsageError(f"unknown rule '{name}' (known: {', '.join(sorted(_RULES))})")
    return _RULES[name]


def load_rule_file(path: str):
    """Import a user's rule module from a file path; its ``register_rule`` calls register its rules.

    The module is cached under a name derived from its absolute path, so loading a file twice
    registers its rules once.
    """
    _load_builtins()
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise UsageError(f"{path}: rule file not found")
    digest = hashlib.sha1(full.encode()).hexdigest()[:12]
    mod_name = f"graphfix_user_rules_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, full)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except UsageError:
        del sys.modules[mod_name]
        raise
    except Exception as exc:
        del sys.modules[mod_name]
        raise UsageError(f"{path}: importing the rule file failed: {type(exc).__name__}: {exc}") from exc
    return module
