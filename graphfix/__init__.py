"""graphfix: make ONNX models build and run correctly on NVIDIA TensorRT, and prove it.

    fixed, report = graphfix.fix("model.onnx", trt="8.6", check="ort")
    assert report.ok, report.summary()

Nothing here imports tensorrt or onnxruntime at import time. The public names are loaded on first
use (PEP 562), so that `import graphfix.cli` (and `graphfix -h`) does not pay for onnx and numpy.
"""
from __future__ import annotations

import importlib

from .errors import (CheckError, GraphfixError, InputError, OutputError, PassError,
                     PipelineOrderError, UsageError)

__version__ = "0.1.0"

# public name -> the submodule that defines it
_LAZY = {"fix": "pipeline", "load_model": "model_io", "save_model": "model_io", "Report": "report",
         "Pass": "pass_api", "PassContext": "pass_api", "PassInfo": "pass_api", "PassResult": "pass_api",
         "register_pass": "registry", "DEFAULT_TRT": "target", "TrtRange": "target", "TrtVersion": "target",
         "resolve_target": "target"}

__all__ = ["fix", "load_model", "save_model", "Report", "Pass", "PassInfo", "PassResult", "PassContext",
           "register_pass", "TrtRange", "TrtVersion", "resolve_target", "DEFAULT_TRT", "GraphfixError",
           "InputError", "OutputError", "UsageError", "PassError", "PipelineOrderError", "CheckError"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'graphfix' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
