"""The registry of passes and the pipeline order, written by a person and validated, never re-sorted."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Type, Union

from .errors import PipelineOrderError, UsageError
from .pass_api import Pass

# The one pipeline order. Passes whose result ONNX Runtime cannot run (plugins) go last but cleanup.
PIPELINE_ORDER: List[str] = [
    "normalize",
    "fold-constants",
    "expand-functions",
    "unify-if",
    "bound-topk",
    "decompose-contrib",
    "decompose-quantized",
    "decompose-ops",
    "target-opset",
    "int64-to-int32",
    "emulate-types",
    "cast-bool",
    "fuse-layernorm",
    "precision",
    "plugins",
    "cleanup",
]

_REGISTRY: Dict[str, Type[Pass]] = {}


def register_pass(cls: Type[Pass]) -> Type[Pass]:
    """Class decorator: adds a pass to the registry under ``cls.info.name``."""
    name = cls.info.name
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise PipelineOrderError(
            f"pass name '{name}' registered twice ({existing.__module__} and {cls.__module__}); "
            "is a second copy of graphfix.passes importable as a top-level 'passes'?")
    if name not in PIPELINE_ORDER:
        raise PipelineOrderError(f"pass '{name}' is not in registry.PIPELINE_ORDER")
    _REGISTRY[name] = cls
    return cls


def _load_builtin_passes() -> None:
    import graphfix.passes  # noqa: F401  (importing registers every built-in pass)


def registered() -> Dict[str, Type[Pass]]:
    _load_builtin_passes()
    return dict(_REGISTRY)


def ordered_passes() -> List[Type[Pass]]:
    """Registered passes in pipeline order (order validated first)."""
    reg = registered()
    validate_order(PIPELINE_ORDER, reg)
    return [reg[name] for name in PIPELINE_ORDER if name in reg]


def get_pass(name: str) -> Type[Pass]:
    reg = registered()
    if name not in reg:
        raise UsageError(f"unknown pass '{name}' (known: {', '.join(n for n in PIPELINE_ORDER if n in reg)})")
    return reg[name]


def split_names(names: Union[str, Sequence[str], None]) -> Optional[List[str]]:
    """'a, b' or ['a', 'b'] -> ['a', 'b']; None stays None (no selection)."""
    if names is None:
        return None
    if isinstance(names, str):
        names = names.split(",")
    return [n.strip() for n in names if n.strip()]


def allowed_passes(passes=None, skip=None) -> List[str]:
    """Registered pass names in pipeline order: those in `passes` (all when None) less those in `skip`
    (comma-separated text or lists); an unknown name is a UsageError."""
    reg = registered()
    wanted, skipped = split_names(passes), set(split_names(skip) or [])
    for name in (wanted or []) + sorted(skipped):
        if name not in reg:
            raise UsageError(f"unknown pass '{name}' (known: {', '.join(n for n in PIPELINE_ORDER if n in reg)})")
    return [n for n in PIPELINE_ORDER if n in reg and n not in skipped and (wanted is None or n in wanted)]


def validate_order(order: List[str], reg: Dict[str, Type[Pass]]) -> None:
    """Raise PipelineOrderError if `order` breaks any pass's `after`/`before` constraints."""
    position = {name: i for i, name in enumerate(order)}
    for name in order:
        cls = reg.get(name)
        if cls is None:
            continue
        info = cls.info
        for earlier in info.after:
            if earlier in position and position[earlier] > position[name]:
                raise PipelineOrderError(f"'{name}' must run after '{earlier}'")
        for later in info.before:
            if later in position and position[later] < position[name]:
                raise PipelineOrderError(f"'{name}' must run before '{later}'")
    checkables = [n for n in order if n in reg and n != "cleanup"]
    seen_unchecked = None
    for name in checkables:
        if not reg[name].info.ort_checkable:
            seen_unchecked = name
        elif seen_unchecked is not None:
            raise PipelineOrderError(
                f"'{name}' is ONNX-Runtime-checkable but runs after '{seen_unchecked}', which is not")
