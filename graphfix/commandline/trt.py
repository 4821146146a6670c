"""The TensorRT flags shared by `graphfix validate` and `graphfix fix --check trt|rtx`, and the glue
from those flags to the checks (graphfix.checks.tensorrt.trt / .rtx, which take plain options, never argparse).

Building the command line parser (`graphfix -h`) imports nothing heavy from here: the checks are
imported inside the functions.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict

from ..errors import UsageError
from .shapes import parse_shapes

# flags that only mean something when an engine is built: dest -> flag text
ENGINE_FLAGS = {"fp16": "--fp16", "tf32": "--tf32", "min_shapes": "--min-shapes", "opt_shapes": "--opt-shapes",
                "max_shapes": "--max-shapes", "timing_cache": "--timing-cache", "trt_timeout": "--trt-timeout"}


def add_trt_arguments(parser, *, shapes: bool = True) -> None:
    g = parser.add_argument_group("TensorRT")
    g.add_argument("--fp16", action="store_true", help="build with FP16 enabled (tolerance 1e-2)")
    g.add_argument("--tf32", action="store_true", help="build with TF32 enabled (tolerance 1e-2)")
    if shapes:
        g.add_argument("--shapes", help="fixed input shapes (min = opt = max), e.g. input_ids:1x128,mask:1x128")
    g.add_argument("--min-shapes", help="profile min shapes, e.g. input_ids:1x1 (default: 1 per dynamic axis)")
    g.add_argument("--opt-shapes", help="profile opt shapes, also the shapes the engine is run at")
    g.add_argument("--max-shapes", help="profile max shapes (default: 2 x opt per dynamic axis)")
    g.add_argument("--timing-cache", metavar="FILE",
                   help="TensorRT timing cache to reuse and update (default ~/.cache/graphfix/trt-VERSION.timing-cache)")
    # one library per flag (repeat it, or join with commas): a list-taking flag would swallow the
    # positional model arguments that follow it
    g.add_argument("--plugins", metavar="LIB.so", action="append", default=[], type=_split_commas,
                   help="plugin library to load before parsing (repeat the flag, or join with commas)")
    g.add_argument("--trt-timeout", type=float, metavar="SECONDS",
                   help="give up on TensorRT after this long (default: no limit)")


def _split_commas(text: str):
    return [p for p in text.split(",") if p]


def plugin_libraries(args) -> list:
    """--plugins values, flattened (each flag may carry a comma-separated list)."""
    out = []
    for item in getattr(args, "plugins", None) or []:
        out.extend(item if isinstance(item, list) else [item])
    return out


def options_from_args(args) -> Dict[str, Any]:
    from ..console import progress_enabled
    for lib in getattr(args, "plugins", None) or []:
        if not os.path.isfile(lib):
            raise UsageError(f"--plugins: {lib}: no such file")
    return {"fp16": bool(getattr(args, "fp16", False)), "tf32": bool(getattr(args, "tf32", False)),
            "shapes": parse_shapes(getattr(args, "shapes", None)),
            "min_shapes": parse_shapes(getattr(args, "min_shapes", None)),
            "opt_shapes": parse_shapes(getattr(args, "opt_shapes", None)),
            "max_shapes": parse_shapes(getattr(args, "max_shapes", None)),
            "timing_cache": getattr(args, "timing_cache", None),
            "plugins": list(getattr(args, "plugins", None) or []),
            "timeout": getattr(args, "trt_timeout", None), "progress": progress_enabled(),
            "inputs": getattr(args, "inputs", None)}


def add_trt_check(report, original: str, fixed: str, args):
    """`graphfix fix --check trt`: append {"kind": "trt", "passed": ...} to report.checks."""
    from ..checks.tensorrt import trt as trt_check
    reason = trt_check.trt_unavailable_reason()
    if reason is not None:
        report.checks.append({"kind": "trt", "passed": False, "error": reason,
                              "detail": f"TensorRT check could not run: {reason}"})
        return None
    return trt_check.compare_into_report(report, original, fixed, **options_from_args(args))


def validate_command(args) -> int:
    """`graphfix validate ORIGINAL FIXED`: 0 passed, 1 failed, 2 bad input or no TensorRT here."""
    if getattr(args, "backend", "trt") == "rtx":
        return validate_rtx(args)
    if not getattr(args, "fixed", None):
        raise UsageError("validate needs ORIGINAL and FIXED (only --backend rtx builds a single model)")
    from ..checks.tensorrt import trt as trt_check
    from ..checks.tensorrt.env import require_tensorrt
    from ..console import QUIET, out, verbosity
    options = options_from_args(args)
    require_tensorrt("validate", trt_check.trt_unavailable_reason)
    result = trt_check.build_and_compare(args.original, args.fixed, **options)
    if getattr(args, "json", False):
        out(json.dumps(result.to_json(), indent=2))
    elif verbosity() > QUIET:
        out(result.summary())
    elif not result.passed:
        from ..console import LOG
        LOG.error("validate: %s", result.detail)
    return 0 if result.passed else 1


def rtx_options_from_args(args) -> Dict[str, Any]:
    """options_from_args without the precision flags, which strongly typed networks do not have."""
    if getattr(args, "fp16", False) or getattr(args, "tf32", False):
        raise UsageError("--fp16/--tf32: TensorRT-RTX builds strongly typed networks, whose precision is the "
                         "ONNX's types (rewrite the model's types instead)")
    options = options_from_args(args)
    for key in ("fp16", "tf32", "inputs"):   # input values shape the ONNX Runtime side, absent here
        options.pop(key, None)
    return options


def add_rtx_check(report, fixed: str, args):
    """`graphfix fix --check rtx`: append {"kind": "rtx", "passed": ...} to report.checks."""
    from ..checks.tensorrt.rtx import build_only
    from ..checks.tensorrt.env import backend_unavailable_reason
    options = rtx_options_from_args(args)
    reason = backend_unavailable_reason("rtx")
    if reason is not None:
        report.checks.append({"kind": "rtx", "passed": False, "error": reason,
                              "detail": f"TensorRT-RTX check could not run: {reason}"})
        return None
    result = build_only(fixed, **options)
    report.checks.append({"kind": "rtx", **result.to_json()})
    return result


def validate_rtx(args) -> int:
    """`graphfix validate --backend rtx [ORIGINAL] MODEL`: 0 parsed and built, 1 not, 2 bad input."""
    from ..checks.tensorrt.rtx import build_only
    from ..checks.tensorrt.env import backend_unavailable_reason
    options = rtx_options_from_args(args)
    reason = backend_unavailable_reason("rtx")
    if reason is not None:
        raise UsageError(f"TensorRT-RTX is not available here: {reason}")
    model = args.fixed or args.original
    result = build_only(model, **options)
    print(json.dumps(result.to_json(), indent=2) if getattr(args, "json", False) else result.summary())
    return 0 if result.passed else 1
