"""`graphfix fix` flags of the opt-in precision pass, kept apart from the pass so that building the
command line imports no onnx (`graphfix -h` stays fast)."""
from __future__ import annotations

import argparse

PRECISIONS = ("bf16", "fp16")   # the keys of passes/_precision_rules.LOW_TYPES (a test holds it)


def add_precision_arguments(parser) -> None:
    """`graphfix fix` flags of the precision pass."""
    g = parser.add_argument_group("precision (opt-in pass 'precision')")
    g.add_argument("--precision", choices=PRECISIONS,
                   help="convert to mixed FP16/BF16 in the ONNX, keeping FP32 islands where needed (default: none)")
    g.add_argument("--keep-io-types", action=argparse.BooleanOptionalAction, default=True,
                   help="keep graph input/output types (default); --no-keep-io-types makes FLOAT I/O low precision")
    g.add_argument("--calibration-data", metavar="FILE.npz",
                   help="inputs (one array per graph input) on which activations are measured "
                        "(default: the seeded inputs of the checks)")


def precision_options(args) -> dict:
    """PassContext options from the CLI flags; the calibration file is read now (bad file: exit 2).
    With ``--check trt``, the engine gets the FP16 flag where the target needs it (builder_fp16_flag)."""
    if not getattr(args, "precision", None):
        return {}
    from ..errors import UsageError
    from ..passes._precision_rules import load_calibration
    from ..passes.precision import builder_fp16_flag
    from ..target import resolve_target
    if getattr(args, "until_parses", False):   # the loop runs the passes parser errors call for, only
        raise UsageError("--precision does not combine with --until-parses: run graphfix fix --precision "
                         "on the loop's output")
    options = {"precision": args.precision, "keep_io_types": args.keep_io_types}
    if args.calibration_data:
        options["calibration_data"] = load_calibration(args.calibration_data)
    if getattr(args, "check", None) == "trt" and builder_fp16_flag(resolve_target(args.trt).version, args.precision):
        args.fp16 = True
    return options
