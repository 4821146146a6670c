"""The TensorRT builds graphfix can drive, as data: which module to import, what it can do, how to name it.

Two backends sit behind the one child-process worker (graphfix.checks.tensorrt.worker):

- ``trt``: the ``tensorrt`` package (8.6 on the GPU rig, 10.x where installed): parse, build with
  precision flags, run the engine and compare it with ONNX Runtime;
- ``rtx``: TensorRT for RTX (``tensorrt-rtx-cu12-libs``/``-bindings``, module
  ``tensorrt_rtx_bindings``): the onnx-tensorrt 11.x parser and an ahead-of-time builder that runs on
  any CPU. Its networks are strongly typed (the ONNX's types are the engine's: no FP16/INT8 builder
  flags), and it cannot run engines on the GPUs graphfix is validated on, so it parses and builds only.

Nothing here imports TensorRT; the worker calls ``import_module`` in the child.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Optional, Tuple

# TensorRT-RTX's Python module is `tensorrt_rtx_bindings`; Polygraphy (0.53.6) imports it as
# `tensorrt_rtx` when POLYGRAPHY_USE_TENSORRT_RTX=1, so the worker registers the alias.
POLYGRAPHY_RTX_ALIAS = "tensorrt_rtx"


@dataclass(frozen=True)
class Backend:
    name: str                 # the CLI token: --backend NAME, fix --check NAME
    module: str               # Python module of the TensorRT build
    runs_engines: bool        # False: parse and build only (no engine run, no comparison)
    precision_flags: bool     # FP16/TF32/INT8 builder flags exist (False: strongly typed networks)
    timing_cache_prefix: str  # ~/.cache/graphfix/<prefix>-<version>.timing-cache
    label_format: str         # {version}: full version; {short}: major.minor
    polygraphy_config: str    # "module:Class" of the Polygraphy config loader the worker builds with

    def label(self, version: Optional[str]) -> str:
        """How reports name the build that ran, e.g. 'TensorRT 8.6.0' or
        'TensorRT-RTX 1.7 (parser 11.x, ahead-of-time build, not run)'."""
        version = version or "?"
        return self.label_format.format(version=version, short=".".join(version.split(".")[:2]))

    def config_loader(self):
        """Polygraphy's config loader class for this build (imported in the worker only)."""
        module, name = self.polygraphy_config.split(":")
        return getattr(importlib.import_module(module), name)

    polygraphy_alias: Optional[str] = None   # module name Polygraphy imports it as, in its RTX mode
    benign_errors: Tuple[str, ...] = ()      # logged errors that say nothing about the model (left out)

    def import_module(self):
        """Import the TensorRT module in the worker (never in graphfix's own process)."""
        mod = importlib.import_module(self.module)
        if self.polygraphy_alias:
            os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1"   # read by polygraphy.config on import
            sys.modules.setdefault(self.polygraphy_alias, mod)
            if "polygraphy.config" in sys.modules:             # imported earlier: flip it too
                sys.modules["polygraphy.config"].USE_TENSORRT_RTX = True
        return mod


BACKENDS = {
    "trt": Backend(name="trt", module="tensorrt", runs_engines=True, precision_flags=True, timing_cache_prefix="trt",
                   label_format="TensorRT {version}", polygraphy_config="polygraphy.backend.trt:CreateConfig"),
    "rtx": Backend(name="rtx", module="tensorrt_rtx_bindings", runs_engines=False, precision_flags=False,
                   timing_cache_prefix="trt-rtx",
                   label_format="TensorRT-RTX {short} (parser 11.x, ahead-of-time build, not run)",
                   # Polygraphy's RTX config: ahead-of-time compute-capability targets
                   polygraphy_config="polygraphy.backend.tensorrt_rtx:CreateConfigRTX",
                   polygraphy_alias=POLYGRAPHY_RTX_ALIAS,
                   # no usable GPU here: TensorRT-RTX logs these while building ahead of time, and builds
                   benign_errors=("CUDA driver version is insufficient", "no CUDA-capable device")),
}
DEFAULT_BACKEND = "trt"


def get_backend(name: Optional[str]) -> Backend:
    from ...errors import UsageError
    key = name or DEFAULT_BACKEND
    if key not in BACKENDS:
        raise UsageError(f"unknown TensorRT backend '{key}' (choose from {', '.join(sorted(BACKENDS))})")
    return BACKENDS[key]
