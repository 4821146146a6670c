"""graphfix: make ONNX models build and run correctly on NVIDIA TensorRT, and prove it.

    fixed, report = graphfix.fix("model.onnx", trt="8.6", check="ort")
    assert report.ok, report.summary()

Nothing here imports tensorrt or onnxruntime at import time.
"""
from .errors import (CheckError, GraphfixError, InputError, OutputError, PassError,
                     PipelineOrderError, UsageError)
from .model_io import load_model, save_model
from .pass_api import Pass, PassContext, PassInfo, PassResult
from .pipeline import fix
from .registry import register_pass
from .report import Report
from .target import DEFAULT_TRT, TrtRange, TrtVersion, resolve_target

__version__ = "0.1.0"

__all__ = ["fix", "load_model", "save_model", "Report", "Pass", "PassInfo", "PassResult", "PassContext",
           "register_pass", "TrtRange", "TrtVersion", "resolve_target", "DEFAULT_TRT", "GraphfixError",
           "InputError", "OutputError", "UsageError", "PassError", "PipelineOrderError", "CheckError"]
