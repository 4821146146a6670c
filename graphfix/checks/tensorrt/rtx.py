"""The TensorRT-RTX check: parse with the onnx-tensorrt 11.x parser and build ahead of time, on the CPU.

TensorRT for RTX (``pip install graphfix[rtx]``) answers "does this model parse and build on the
11.x line", not "are the numbers right": its builder compiles ahead of time without a GPU, and its
engines cannot run on the GPUs graphfix is validated on. Reports name it accordingly (see
backends.Backend.label). It runs in the same child process as TensorRT 8.6
(graphfix.checks.tensorrt.worker, backend "rtx"), with the same optimization profile
(optimization_profile.derive_profile: the model's dynamic dims or the user's shapes) and the same
parser-error mapping. Its networks are strongly typed: the ONNX's types are the engine's, so there
is no FP16/TF32 flag to set.
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Dict, Optional, Sequence

from ...model_io import load_model
from .trt import TrtCheckResult, fold_events
from .backends import get_backend
from .child import run_worker
from .optimization_profile import derive_profile


def build_only(model_path: str, *, backend: str = "rtx", shapes=None, min_shapes=None, opt_shapes=None,
               max_shapes=None, timing_cache: Optional[str] = None, plugins: Sequence[str] = (),
               timeout: Optional[float] = None, progress: bool = True, optimization_level: Optional[int] = 0,
               engine_path: Optional[str] = None) -> TrtCheckResult:
    """Parse and build MODEL with a backend that does not run engines; ``passed`` = parsed and built.

    Raises InputError/UsageError for unusable models or shapes; whatever TensorRT does wrong,
    crashes included, ends up in the result.
    """
    started = time.perf_counter()
    spec = get_backend(backend)
    model = load_model(model_path).model
    profile, run_shapes = derive_profile(model, shapes, min_shapes, opt_shapes, max_shapes)
    result = TrtCheckResult(model=os.fspath(model_path), precision="as typed in the ONNX", profile=profile,
                            shapes=run_shapes, plugins=[os.fspath(p) for p in plugins], backend=spec.name,
                            label=spec.label(None), build_only=True)
    request: Dict[str, Any] = {
        "mode": "build-only", "backend": spec.name, "model": os.path.abspath(model_path),
        "plugins": [os.path.abspath(p) for p in plugins], "profile": profile,
        "timing_cache": os.path.abspath(timing_cache) if timing_cache else None,
        "optimization_level": optimization_level, "workspace": None,
        "engine_path": os.path.abspath(engine_path) if engine_path else None, "feeds": []}
    with tempfile.TemporaryDirectory(prefix="graphfix-rtx-") as workdir:
        child = run_worker(request, workdir, timeout=timeout, progress=progress, label=spec.name)
        fold_events(result, child, model)
    result.passed = bool(result.parsed and result.built and not result.crashed and not result.timed_out)
    if not result.passed:
        result.log_tail = child.log_tail
    result.seconds = time.perf_counter() - started
    return result
