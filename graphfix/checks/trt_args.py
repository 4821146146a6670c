"""The TensorRT flags shared by `graphfix validate` and `graphfix fix --check trt`.

Kept apart from checks/trt.py so that building the command line parser (`graphfix -h`) imports
nothing heavy.
"""
from __future__ import annotations

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
