"""Child process of `graphfix doctor`: import TensorRT or TensorRT-RTX, start a builder, load the plugin
libraries, and print what happened as one JSON line.

Run as ``python -m graphfix.doctor.probe tensorrt|tensorrt_rtx_bindings|- [LIBRARY ...]`` (``-``: load the
libraries only), never imported by
graphfix: importing TensorRT or loading its libraries can abort the interpreter on a broken CUDA
setup, and that must end this process, not `graphfix doctor`.
"""
from __future__ import annotations

import ctypes
import json
import sys
from typing import Any, Dict, List


def _load(paths: List[str]) -> Dict[str, Any]:
    loaded = {}
    for path in paths:
        try:
            ctypes.CDLL(path, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
            loaded[path] = None
        except OSError as exc:
            loaded[path] = str(exc)
    return loaded


def mapped_libraries() -> List[str]:
    """The TensorRT/CUDA/cuDNN libraries this process really loaded (Linux: /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if line.rstrip().endswith(tuple("0123456789o"))}
    except OSError:
        return []
    keep = ("libnvinfer", "libnvonnxparser", "libcudart", "libcudnn", "libcublas", "libtensorrt", "libcuda.so")
    return sorted(p for p in paths if p.startswith("/") and any(k in p.rsplit("/", 1)[-1] for k in keep))



def message_logger(trt, messages: List[str]):
    """A TensorRT logger that keeps warnings and errors in `messages` (8.6 logs "CUDA initialization
    failure with error: 35" as a warning, then returns no builder)."""
    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            if severity in (trt.Logger.INTERNAL_ERROR, trt.Logger.ERROR, trt.Logger.WARNING):
                messages.append(str(msg))
    return Logger()


def probe(module: str, libraries: List[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"module": module, "imported": False, "libraries": {}}
    if module == "-":       # no Python bindings (a C++ install): only try to load the libraries
        out["libraries"] = _load(libraries)
        return out
    try:
        trt = __import__(module)
    except BaseException as exc:  # an ImportError or the OSError of a missing libnvinfer
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    out.update(imported=True, version=getattr(trt, "__version__", None), file=getattr(trt, "__file__", None))
    out["libraries"] = _load(libraries)
    messages: List[str] = []
    logger = message_logger(trt, messages)
    try:
        builder = trt.Builder(logger)
    except BaseException as exc:
        builder = None
        messages.append(f"{type(exc).__name__}: {exc}")
    out["builder"] = builder is not None
    out["builder_errors"] = messages[:5]
    out["loaded"] = mapped_libraries()
    if builder is not None:
        for flag in ("platform_has_fast_fp16", "platform_has_fast_int8", "platform_has_tf32"):
            try:
                value = getattr(builder, flag)
            except Exception:
                continue
            out[flag] = bool(value)
    return out


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1], sys.argv[2:])), flush=True)
