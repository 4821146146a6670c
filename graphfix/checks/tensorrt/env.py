"""Whether a real TensorRT path is available here, decided without importing tensorrt in-process
(a broken CUDA setup can abort the interpreter on import)."""
from __future__ import annotations

import functools
import importlib.util
import platform
import subprocess
import sys
from typing import Any, Dict, Optional

_PROBE = ("import tensorrt as trt; b = trt.Builder(trt.Logger(trt.Logger.ERROR)); "
          "assert b is not None; print(trt.__version__)")


def _builder_unavailable(module: str, probe: str, what: str, missing: str, suffix: str = "") -> Optional[str]:
    """None when `module` imports and a builder starts in a child process; else why not."""
    if importlib.util.find_spec(module) is None:
        return missing
    try:
        proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return f"{what} builder did not start within 120 s"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"{what} builder does not start here{suffix}: {tail[0]}"
    return None


@functools.lru_cache(maxsize=1)
def trt_unavailable_reason() -> Optional[str]:
    """None when tensorrt imports and a builder starts (so a GPU is usable); else why not."""
    return _builder_unavailable("tensorrt", _PROBE, "tensorrt", "tensorrt is not installed", " (no GPU?)")


def require_tensorrt(what: str, probe=None) -> None:
    """The one rule for what needs TensorRT (`validate`, `fix --check trt`, `fix --until-parses`):
    refuse before doing any work, with one line (exit 2 in the CLI). `probe` defaults to
    trt_unavailable_reason."""
    reason = (probe or trt_unavailable_reason)()
    if reason is not None:
        from ...errors import UsageError
        raise UsageError(f"{what} needs TensorRT: {reason} (README: 'Installing TensorRT')")


def trt_version() -> Optional[str]:
    if trt_unavailable_reason() is not None:
        return None
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    return proc.stdout.strip() or None


def environment() -> Dict[str, Any]:
    """Versions of Python, the ONNX/TensorRT stack and the GPU, for evidence files."""
    from importlib import metadata
    env: Dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("tensorrt", "tensorrt-rtx-cu12-bindings", "onnx", "onnxruntime", "polygraphy", "onnx-graphsurgeon",
                 "numpy", "graphfix"):
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[dist] = None
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        env["gpu"] = gpu.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        env["gpu"] = None
    return env


# TensorRT-RTX builds ahead of time on the CPU: a builder that starts is all it needs (no GPU).
_RTX_PROBE = ("import tensorrt_rtx_bindings as trt; b = trt.Builder(trt.Logger(trt.Logger.ERROR)); "
              "assert b is not None; print(trt.__version__)")


@functools.lru_cache(maxsize=1)
def rtx_unavailable_reason() -> Optional[str]:
    """None when the TensorRT-RTX wheels import and a builder starts; else why not."""
    return _builder_unavailable("tensorrt_rtx_bindings", _RTX_PROBE, "TensorRT-RTX",
                                "TensorRT-RTX is not installed (pip install graphfix[rtx])")


def backend_unavailable_reason(backend: str) -> Optional[str]:
    """trt_unavailable_reason or rtx_unavailable_reason, by backend name (graphfix.checks.tensorrt.backends)."""
    return rtx_unavailable_reason() if backend == "rtx" else trt_unavailable_reason()
