"""The TensorRT version a run targets, and where that choice came from.

Resolution order: an explicit ``--trt VERSION``; else the installed ``tensorrt`` distribution's
version read from package metadata (never importing tensorrt, which needs CUDA); else DEFAULT_TRT.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from .errors import UsageError

# Default when nothing says otherwise: the oldest release of the current 10.x line, so that every
# restriction that any 10.x parser has is taken into account. Documented in the README.
DEFAULT_TRT = "10.0"
# The oldest TensorRT graphfix has a profile for; an older target would silently get the 8.6 facts.
MIN_SUPPORTED_TRT = "8.6"

_TRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu13", "tensorrt-lean",
                      "tensorrt-dispatch", "tensorrt_libs", "tensorrt-cu12-libs")


@dataclass(frozen=True, order=True)
class TrtVersion:
    major: int
    minor: int = 0

    @classmethod
    def parse(cls, text: "str | TrtVersion") -> "TrtVersion":
        if isinstance(text, TrtVersion):
            return text
        m = re.fullmatch(r"\s*(\d+)(?:\.(\d+|x))?(?:\.[\dx]+)*\s*", str(text))
        if not m:
            raise UsageError(f"not a TensorRT version: {text!r} (expected e.g. 8.6 or 10.3)")
        minor = m.group(2)
        return cls(int(m.group(1)), 0 if minor in (None, "x") else int(minor))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True)
class TrtRange:
    """Half-open range of TensorRT versions: ``since <= v < below``; None means unbounded."""
    since: Optional[str] = None
    below: Optional[str] = None

    def contains(self, version: TrtVersion) -> bool:
        if self.since is not None and version < TrtVersion.parse(self.since):
            return False
        if self.below is not None and version >= TrtVersion.parse(self.below):
            return False
        return True

    def __str__(self) -> str:
        if self.since is None and self.below is None:
            return "all"
        parts = []
        if self.since is not None:
            parts.append(f">={self.since}")
        if self.below is not None:
            parts.append(f"<{self.below}")
        return ",".join(parts)


@dataclass(frozen=True)
class Target:
    version: TrtVersion
    source: str  # "flag", "installed tensorrt X.Y.Z" or "default"

    def to_json(self) -> dict:
        return {"version": str(self.version), "source": self.source}


def installed_trt_version() -> Optional[str]:
    """Version of an installed TensorRT Python distribution, from metadata only (no import)."""
    from importlib import metadata

    for dist in _TRT_DISTRIBUTIONS:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def resolve_target(trt: "str | TrtVersion | None" = None) -> Target:
    if trt is not None:
        return _supported(Target(TrtVersion.parse(trt), "flag"))
    installed = installed_trt_version()
    if installed:
        return _supported(Target(TrtVersion.parse(installed), f"installed tensorrt {installed}"))
    return Target(TrtVersion.parse(DEFAULT_TRT), "default")


def _supported(target: Target) -> Target:
    if target.version < TrtVersion.parse(MIN_SUPPORTED_TRT):
        raise UsageError(f"TensorRT {target.version} ({target.source}) is not supported: graphfix targets "
                         f"TensorRT {MIN_SUPPORTED_TRT} and newer")
    return target
