"""TensorRT version profiles: what each TensorRT line's ONNX parser imports, and how.

One JSON file per line (``trt-8.6.json``, ``trt-10.json``, ...), each fact with its source. Passes
read the profile to decide what to rewrite; `graphfix check` reads it to predict parser failures.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional

from ..target import TrtVersion

_HERE = os.path.dirname(__file__)


@dataclass(frozen=True)
class Profile:
    line: str                                   # "8.6", "10", ...
    since: TrtVersion                           # first version the profile covers
    max_opset: int                              # highest default-domain opset the parser imports
    int64_native: bool                          # False: the parser narrows INT64 weights to INT32
    myelin_bool_unsafe_ops: FrozenSet[str]      # data-movement ops Myelin rejects with bool I/O
    bool_rejecting_ops: FrozenSet[str]          # ops whose importer refuses bool inputs
    ops: Dict[str, dict] = field(default_factory=dict)   # per-op facts (see the JSON files)
    sources: List[str] = field(default_factory=list)

    def op(self, op_type: str) -> Optional[dict]:
        return self.ops.get(op_type)


def _load(path: str) -> Profile:
    with open(path) as f:
        data = json.load(f)
    return Profile(
        line=data["line"],
        since=TrtVersion.parse(data["since"]),
        max_opset=int(data["max_opset"]),
        int64_native=bool(data["int64_native"]),
        myelin_bool_unsafe_ops=frozenset(data["myelin_bool_unsafe_ops"]),
        bool_rejecting_ops=frozenset(data["bool_rejecting_ops"]),
        ops=data.get("ops", {}),
        sources=data.get("sources", []),
    )


@functools.lru_cache(maxsize=None)
def all_profiles() -> List[Profile]:
    files = sorted(f for f in os.listdir(_HERE) if f.startswith("trt-") and f.endswith(".json"))
    return sorted((_load(os.path.join(_HERE, f)) for f in files), key=lambda p: p.since)


def load_profile(version) -> Profile:
    """The profile of the newest line whose first version is <= `version`."""
    version = TrtVersion.parse(version)
    chosen = None
    for profile in all_profiles():
        if profile.since <= version:
            chosen = profile
    return chosen or all_profiles()[0]
