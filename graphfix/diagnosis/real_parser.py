"""`graphfix check --real-parser`: the real parser's verdict beside the prediction.

Which real TensorRT a profile's line is checked against is data: the profile's ``real_backend``
(default "trt", the installed tensorrt; "rtx" for the 11.x line: TensorRT-RTX's 11.x parser and its
ahead-of-time builder, graphfix.checks.tensorrt.rtx). Both run in child processes and never raise here.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Optional

import onnx


@contextlib.contextmanager
def _model_file(path: Optional[str], model: onnx.ModelProto):
    """`path`, or a temporary copy of `model` (removed afterwards) for a parser that reads a file."""
    if path is not None:
        yield path
        return
    fd, tmp = tempfile.mkstemp(suffix=".onnx", prefix="graphfix-check-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(model.SerializeToString())
        yield tmp
    finally:
        os.unlink(tmp)


def run_real_parser(path: Optional[str], model: onnx.ModelProto) -> dict:
    """The real TensorRT parser's verdict, when TensorRT and a GPU are here; never raises."""
    from ..checks.tensorrt.env import trt_unavailable_reason
    reason = trt_unavailable_reason()
    if reason is not None:
        return {"available": False, "reason": reason}
    try:
        from ..checks.tensorrt.trt import parse_in_subprocess
    except ImportError as exc:
        return {"available": False, "reason": f"real parser unavailable ({exc})"}
    try:
        with _model_file(path, model) as file:
            outcome = parse_in_subprocess(file)
        return {"available": True, "reason": "", "parsed": bool(outcome.parsed), "crashed": bool(outcome.crashed),
                "errors": [dict(e) for e in outcome.errors]}
    except Exception as exc:  # the real parser is evidence beside the prediction, not a requirement
        return {"available": False, "reason": f"real parser unavailable ({type(exc).__name__}: {exc})"}


def run_rtx_parser(path: Optional[str], model: onnx.ModelProto) -> dict:
    """TensorRT-RTX's verdict (11.x parser, then an ahead-of-time build on the CPU); never raises."""
    from ..checks.tensorrt.backends import get_backend
    from ..checks.tensorrt.env import rtx_unavailable_reason
    label = get_backend("rtx").label(None)
    reason = rtx_unavailable_reason()
    if reason is not None:
        return {"available": False, "reason": reason, "backend": "rtx", "label": label}
    try:
        from ..checks.tensorrt.rtx import build_only
        with _model_file(path, model) as file:
            outcome = build_only(file, progress=False)
        return {"available": True, "reason": "", "backend": "rtx", "label": outcome.label or label,
                "parsed": bool(outcome.parsed), "built": bool(outcome.built), "crashed": bool(outcome.crashed),
                "errors": [dict(e) for e in outcome.errors]}
    except Exception as exc:  # evidence beside the prediction, not a requirement
        return {"available": False, "reason": f"TensorRT-RTX unavailable ({type(exc).__name__}: {exc})",
                "backend": "rtx", "label": label}


def run_backend_parser(profile, path: Optional[str], model: onnx.ModelProto) -> dict:
    """The verdict of the real parser the profile's line names (``real_backend``)."""
    if profile.extra.get("real_backend") == "rtx":
        return run_rtx_parser(path, model)
    return run_real_parser(path, model)
