"""TensorRT version profiles: what each TensorRT line's ONNX parser imports, and how.

One JSON file per line (``trt-8.6.json``, ``trt-9.json``, ``trt-10.json``, ``trt-11.json``), each fact
with its source (the ``citations`` table of the file). Passes read the profile to decide what to
rewrite; `graphfix check` reads it to predict parser failures and silently wrong results.

Facts that change inside a line carry a TensorRT version range, so ``load_profile("10.12")`` and
``load_profile("10.3")`` differ where the parser did:

- a value may be written as a list of ``{"since": "10.6", "below": "11.0", "value": ...}`` entries:
  the last entry whose range holds the version wins (``max_opset``, ``dtypes.quantized_only``, an
  op's ``types``);
- an op entry may carry ``available_since`` (ops added within the line);
- a rule may carry ``since`` / ``below``.

JSON schema of a file (all keys but ``ops`` and ``citations`` are also Profile fields)::

    line, since, max_opset, int64_native, myelin_bool_unsafe_ops, bool_rejecting_ops,
    local_functions, dtypes: {native, narrowed: {FROM: TO}, io_only, quantized_only},
    sources: [text], citations: {key: text}, notes,
    ops: {OpType: {supported (default true), available_since, types: [ONNX dtype names],
                   typed_inputs: [indices] | "all" | "outputs", doc, source,
                   rules: [{check, ...params, severity, reason, source, since, below, when}]}}

The check vocabulary (``check``) is implemented by graphfix.diagnosis.predicates; which pass fixes
a finding is not profile data: the passes declare it (graphfix.remedies).
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Optional

from ..target import TrtVersion

_HERE = os.path.dirname(__file__)

SEVERITIES = ("error", "wrong-result", "warning")
SEVERITY_ORDER = {s: i for i, s in enumerate(SEVERITIES)}   # the order `check` lists findings in


@dataclass(frozen=True)
class Profile:
    line: str                                   # "8.6", "9", "10", "11"
    since: TrtVersion                           # first version the profile covers
    max_opset: int                              # highest default-domain opset the parser imports
    int64_native: bool                          # False: the parser narrows INT64 weights to INT32
    myelin_bool_unsafe_ops: FrozenSet[str]      # data-movement ops Myelin rejects with bool I/O
    bool_rejecting_ops: FrozenSet[str]          # ops whose importer refuses bool inputs
    ops: Dict[str, dict] = field(default_factory=dict)   # per-op facts, resolved for `version`
    sources: List[str] = field(default_factory=list)
    version: Optional[TrtVersion] = None        # the version the versioned facts were resolved for
    local_functions: bool = True                # the parser imports model-local ONNX functions
    native_dtypes: FrozenSet[str] = frozenset()           # ONNX dtype names TensorRT has natively
    narrowed_dtypes: Dict[str, str] = field(default_factory=dict)  # imported as another type
    io_only_dtypes: FrozenSet[str] = frozenset()          # only as network inputs/outputs (UINT8)
    quantized_only_dtypes: FrozenSet[str] = frozenset()   # only through Q/DQ (INT8, FP8, ...)
    citations: Dict[str, str] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)   # keys this module does not model

    def op(self, op_type: str) -> Optional[dict]:
        return self.ops.get(op_type)

    def imports(self, op_type: str) -> bool:
        """True when the parser has an importer for this default-domain op."""
        entry = self.ops.get(op_type)
        return bool(entry) and entry.get("supported", True)

    def effective_dtype(self, dtype: str) -> str:
        """The type TensorRT sees for an ONNX dtype name (INT64 -> INT32 on 8.6, DOUBLE -> FLOAT)."""
        return self.narrowed_dtypes.get(dtype, dtype)

    def cite(self, key: Optional[str]) -> str:
        if not key:
            return ""
        return self.citations.get(key, key)


_MODELED = {"line", "since", "max_opset", "int64_native", "myelin_bool_unsafe_ops", "bool_rejecting_ops",
            "ops", "sources", "local_functions", "dtypes", "citations"}


def _in_range(entry: dict, version: TrtVersion) -> bool:
    if entry.get("since") is not None and version < TrtVersion.parse(entry["since"]):
        return False
    if entry.get("below") is not None and version >= TrtVersion.parse(entry["below"]):
        return False
    return True


def _is_versioned(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, dict) and "value" in v for v in value)


def resolve_value(value, version: TrtVersion):
    """A plain value as is; a versioned list -> the value of the last entry whose range holds `version`."""
    if not _is_versioned(value):
        return value
    chosen = None
    for entry in value:
        if _in_range(entry, version):
            chosen = entry["value"]
    return chosen


def _resolve_op(entry: dict, version: TrtVersion) -> Optional[dict]:
    since = entry.get("available_since")
    if since is not None and version < TrtVersion.parse(since):
        return {"supported": False, "source": entry.get("source"), "available_since": since}
    out = {k: resolve_value(v, version) for k, v in entry.items() if k != "rules"}
    rules = [r for r in entry.get("rules", []) if _in_range(r, version)]
    if rules:
        out["rules"] = rules
    return out


def _load(path: str, version: Optional[TrtVersion] = None) -> Profile:
    with open(path) as f:
        data = json.load(f)
    since = TrtVersion.parse(data["since"])
    version = version or since
    dtypes = data.get("dtypes", {})
    ops = {}
    for op_type, entry in data.get("ops", {}).items():
        ops[op_type] = _resolve_op(entry, version)
    return Profile(
        line=data["line"],
        since=since,
        max_opset=int(resolve_value(data["max_opset"], version)),
        int64_native=bool(data["int64_native"]),
        myelin_bool_unsafe_ops=frozenset(data["myelin_bool_unsafe_ops"]),
        bool_rejecting_ops=frozenset(data["bool_rejecting_ops"]),
        ops=ops,
        sources=data.get("sources", []),
        version=version,
        local_functions=bool(data.get("local_functions", True)),
        native_dtypes=frozenset(resolve_value(dtypes.get("native", []), version) or ()),
        narrowed_dtypes=dict(resolve_value(dtypes.get("narrowed", {}), version) or {}),
        io_only_dtypes=frozenset(resolve_value(dtypes.get("io_only", []), version) or ()),
        quantized_only_dtypes=frozenset(resolve_value(dtypes.get("quantized_only", []), version) or ()),
        citations=dict(data.get("citations", {})),
        extra={k: v for k, v in data.items() if k not in _MODELED},
    )


def _profile_files() -> List[str]:
    return sorted(f for f in os.listdir(_HERE) if f.startswith("trt-") and f.endswith(".json"))


@functools.lru_cache(maxsize=None)
def all_profiles() -> List[Profile]:
    """One profile per line, resolved at the line's first version, oldest first."""
    return sorted((_load(os.path.join(_HERE, f)) for f in _profile_files()), key=lambda p: p.since)


@functools.lru_cache(maxsize=None)
def _load_for(version: TrtVersion) -> Profile:
    chosen = None
    for f in _profile_files():
        path = os.path.join(_HERE, f)
        with open(path) as fh:
            since = TrtVersion.parse(json.load(fh)["since"])
        if since <= version and (chosen is None or since > chosen[0]):
            chosen = (since, path)
    if chosen is None:  # older than every line: the oldest line is the closest description
        oldest = all_profiles()[0]
        return _load(os.path.join(_HERE, f"trt-{oldest.line}.json"), oldest.since)
    return _load(chosen[1], version)


def load_profile(version) -> Profile:
    """The profile of the newest line whose first version is <= `version`, resolved for `version`."""
    return _load_for(TrtVersion.parse(version))
