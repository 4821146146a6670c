"""The pass contract: what a pass declares about itself, what it returns, and how it is given context.

A pass mutates a ``gs.Graph`` in place and returns a PassResult. "Modified" is derived from the
recorded changes, so a pass cannot claim a change without saying what it was.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from .target import TrtRange, TrtVersion, resolve_target

JsonValue = Any  # str, int, float, bool, None, list or dict of those


@dataclass(frozen=True)
class PassInfo:
    """A pass described as data; `graphfix passes` and the report are generated from these."""
    name: str                      # stable kebab-case: CLI token and report key
    summary: str                   # one line
    fixes: str                     # the TensorRT symptom, ideally the parser's own text
    trt: TrtRange = TrtRange()     # TensorRT versions that need the pass
    ort_checkable: bool = True     # False when ONNX Runtime cannot run the result (plugins)
    needs: Tuple[str, ...] = ()    # Python modules required at run time
    after: Tuple[str, ...] = ()    # passes that must come earlier when both run
    before: Tuple[str, ...] = ()   # passes that must come later when both run
    default: bool = True           # part of the default pipeline (when the target needs it)
    # The rows of the table of remedies this pass answers for (graphfix.remedies: the `check`
    # findings, missing ops and parser errors it fixes); `check`, the fix loop and the docs read them.
    # None: not declared (a test holds every built-in pass to declaring it, () included).
    remedies: Optional[Tuple[Any, ...]] = None

    def to_json(self) -> dict:
        return {"name": self.name, "summary": self.summary, "fixes": self.fixes,
                "trt": str(self.trt), "ort_checkable": self.ort_checkable,
                "needs": list(self.needs), "after": list(self.after), "before": list(self.before),
                "default": self.default, "remedies": [r.to_json() for r in self.remedies or ()]}


@dataclass(frozen=True)
class Change:
    action: str                    # e.g. "fold", "retype", "insert-cast", "fuse", "remove-node"
    target: str                    # node or tensor name
    details: Dict[str, JsonValue] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"action": self.action, "target": self.target, "details": self.details}


_COUNT_KEY = re.compile(r"[a-z0-9]+(_[a-z0-9]+)*")


@dataclass
class PassResult:
    changes: List[Change] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    counts: Dict[str, int] = field(default_factory=dict)
    # (atol, rtol) for floating outputs in this pass's ONNX Runtime check, when its rewrite is exact
    # only up to a known error (dequantization); None keeps the per-dtype defaults.
    tolerance: Optional[Tuple[float, float]] = None

    def change(self, action: str, target: str, details: Optional[Dict[str, JsonValue]] = None) -> None:
        self.changes.append(Change(action, str(target), dict(details or {})))

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def count(self, key: str, n: int = 1) -> None:
        if not _COUNT_KEY.fullmatch(key):   # report keys are snake_case in every pass
            raise ValueError(f"count key '{key}' is not snake_case (e.g. 'casts_inserted')")
        self.counts[key] = self.counts.get(key, 0) + n

    @property
    def modified(self) -> bool:
        return bool(self.changes)


@dataclass
class PassContext:
    """What a pass may know beyond the graph: the target TensorRT and the user's options."""
    target: TrtVersion = field(default_factory=lambda: resolve_target().version)
    int32_io: bool = False                   # allow changing INT64 graph inputs/outputs to INT32
    fold_size_limit: int = 64 * 1024 * 1024  # bytes: folded tensors larger than this stay computed
    options: Dict[str, Any] = field(default_factory=dict)  # pass-specific extras
    # The ModelProto the graph was imported from (read-only): model-level facts a gs.Graph drops,
    # such as ir_version and initializers that no node uses. Set by the pipeline before each pass.
    model: Optional[Any] = None


class Pass:
    """Base class of every pass. Subclasses set ``info`` and implement ``run``."""
    info: ClassVar[PassInfo]

    def __init__(self, context: Optional[PassContext] = None):
        self.context = context or PassContext()

    def run(self, graph) -> PassResult:  # graph: onnx_graphsurgeon.Graph
        raise NotImplementedError
