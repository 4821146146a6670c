"""The `graphfix` command line: fix, passes, check, validate.

Exit codes: 0 done (and checked), 1 a check failed or problems remain, 2 bad input or usage.
Errors that graphfix raises on purpose print one line naming the file and the problem.
Building the parser imports nothing heavy (`graphfix -h` stays fast): commands import what they use.
Messages and progress go to stderr through logging (graphfix.console); results go to stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from . import __version__, console
from .commandline.shapes import parse_shapes
from .errors import (EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_OK, GraphfixError, InputError, OutputError, UsageError,
                     printable as _printable)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 2 with one line, like bad input
        self.print_usage(sys.stderr)
        print(f"graphfix: error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="graphfix", description="Make ONNX models build and run correctly on TensorRT.")
    p.add_argument("--version", action="version", version=f"graphfix {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    fx = sub.add_parser("fix", help="rewrite a model for TensorRT and check the rewrite")
    fx.add_argument("input", nargs="+", help="ONNX model to fix (several, or directories: see -o)")
    fx.add_argument("-o", "--output", required=True,
                    help="where to write the fixed model; with several models, a directory (OUTDIR/)")
    fx.add_argument("--jobs", type=int, help="with several models: worker processes (default: min(CPUs, 4))")
    fx.add_argument("--trt", help="target TensorRT version (default: installed tensorrt, else 10.0)")
    group = fx.add_mutually_exclusive_group()
    group.add_argument("--passes", help="comma-separated passes to run (default: all the target needs)")
    group.add_argument("--skip", help="comma-separated passes to leave out")
    fx.add_argument("--check", choices=["ort", "none", "trt", "rtx"], default="ort",
                    help="ort: ONNX Runtime before/after each pass (default); trt: also build and "
                         "compare a TensorRT engine; rtx: also parse and build ahead of time with "
                         "TensorRT-RTX (11.x parser, not run); none: no output comparison")
    fx.add_argument("--report", help="write the JSON report here")
    fx.add_argument("--int32-io", action="store_true", help="allow INT64 (and, emulated, INT8/UINT8/INT16/UINT16) graph inputs/outputs to become INT32")
    fx.add_argument("--in-place", action="store_true", help="allow the output to replace the input file")
    fx.add_argument("--shapes", help="sizes for the checks, per input or per dim symbol, e.g. input_ids:1x128,seq=128")
    fx.add_argument("--inputs", metavar="FILE.npz", help="input values for the checks (arrays named like the inputs)")
    fx.add_argument("--freeze", action="append", metavar="NAME=VALUE",
                    help="make a configuration input a constant and inline the If branches it decides, e.g. sr=16000")
    fx.add_argument("--static-shapes", metavar="SHAPES",
                    help="pin dynamic input dims (as --shapes: input:1x576 or seq=128); the model then takes only "
                         "those sizes, and Ifs decided by sizes go")
    from .commandline.plugins import add_plugin_arguments
    add_plugin_arguments(fx)
    from .commandline.precision import add_precision_arguments
    add_precision_arguments(fx)
    fx.add_argument("--until-parses", action="store_true",
                    help="drive the passes by TensorRT's parser: parse, run the passes its errors call for, "
                         "parse again, until it parses or nothing changes (needs TensorRT)")
    from .commandline.trt import add_trt_arguments
    add_trt_arguments(fx, shapes=False)

    vd = sub.add_parser("validate", help="build FIXED with TensorRT and compare it with ONNX Runtime on ORIGINAL")
    vd.add_argument("original", help="the model as it was (run in ONNX Runtime)")
    vd.add_argument("fixed", nargs="?", help="the model to build and run with TensorRT")
    vd.add_argument("--backend", choices=["trt", "rtx"], default="trt",
                    help="trt: tensorrt (build, run, compare; default); rtx: TensorRT-RTX, parse and build "
                         "ahead of time on the CPU, not run (FIXED alone is enough)")
    add_trt_arguments(vd)
    vd.add_argument("--json", action="store_true", help="print the result as JSON")

    ck = sub.add_parser("check", help="list the nodes a TensorRT version will reject or mishandle (no GPU needed)")
    ck.add_argument("model", help="ONNX model to check")
    ck.add_argument("--trt", help="target TensorRT version (default: installed tensorrt, else 10.0)")
    ck.add_argument("--json", action="store_true", help="print the findings as JSON (schema: graphfix.check/1)")
    ck.add_argument("--no-real-parser", action="store_true",
                    help="do not run TensorRT's own parser even where TensorRT and a GPU are present")
    ck.add_argument("--fp16", action="store_true",
                    help="an FP16 engine is wanted: on strongly typed TensorRT (11.x) warn if the model has no FP16 types")

    ps = sub.add_parser("passes", help="list the passes and what each fixes (from their declarations)")
    ps.add_argument("--json", action="store_true")
    ps.add_argument("--markdown", action="store_true",
                    help="print the table of remedies as Markdown (docs/remedies.md is this output)")

    dr = sub.add_parser("doctor", help="check this machine's TensorRT setup, and whether plans or timing caches run here")
    dr.add_argument("files", nargs="*", help="serialized plans (.engine/.plan) or timing caches to examine")
    dr.add_argument("--json", action="store_true", help="print the findings as JSON (schema: graphfix.doctor/1)")

    fx_out = sub.add_parser("fixtures", help="write the bundled example models (graphfix.fixtures) as .onnx")
    fx_out.add_argument("directory", nargs="?", help="where to write them (not needed with --list)")
    fx_out.add_argument("names", nargs="*", help="fixtures to write (default: all)")
    fx_out.add_argument("--list", action="store_true", help="list fixture names and exit")
    return p


def cmd_fix(args) -> int:
    if isinstance(args.input, list):   # from the parser: one file, or a batch (graphfix/commandline/batch.py)
        from .commandline.batch import is_batch, run_batch
        if is_batch(args):
            return run_batch(args, cmd_fix)
        args.input = args.input[0]
    from .mapped_data import release
    try:
        return _fix_one(args)
    finally:
        release()   # the input's data files, read on demand until the output is written


def _fix_one(args) -> int:
    console.progress("starting (importing onnx)")   # the imports below take a second or more
    from .model_io import load_model, save_model
    from .pass_api import PassContext
    from .pipeline import fix

    _refuse_flags_fix_ignores(args)
    if args.check == "trt":     # one rule (as validate, --until-parses): no TensorRT -> exit 2 before any work
        from .checks.tensorrt import trt as trt_check
        from .checks.tensorrt.env import require_tensorrt
        require_tensorrt("--check trt", trt_check.trt_unavailable_reason)
    # reads external data too (the files to protect are known); big weights stay in their files
    loaded = load_model(args.input, keep_weights_in_files=not args.until_parses)
    _check_outputs(args, loaded)      # before any work, not only at save
    console.quiet_libraries()
    from .commandline.plugins import plugin_options
    from .commandline.precision import precision_options
    context = PassContext(int32_io=args.int32_io, options={**plugin_options(args), **precision_options(args)})
    check = "ort" if args.check in ("trt", "rtx") else args.check
    from .freeze import parse_freeze
    freeze = parse_freeze(args.freeze)
    static_shapes = parse_shapes(args.static_shapes)
    if (freeze or static_shapes) and args.until_parses:
        raise UsageError("--freeze/--static-shapes and --until-parses cannot be combined yet: "
                         "specialize first, then run the loop")
    if args.until_parses:
        from .fix_loop import fix_until_parses
        model, report = fix_until_parses(loaded, trt=args.trt, passes=args.passes, skip=args.skip,
                                         check=check, context=context, shapes=parse_shapes(args.shapes),
                                         inputs=args.inputs, plugins=args.plugins, timeout=args.trt_timeout)
    else:
        model, report = fix(loaded, trt=args.trt, passes=args.passes, skip=args.skip, check=check,
                            context=context, shapes=parse_shapes(args.shapes), inputs=args.inputs, freeze=freeze,
                            static_shapes=static_shapes)
    save_model(model, args.output, input_path=loaded, overwrite_input=args.in_place)
    report.output["path"] = args.output
    if args.check == "trt":
        from .commandline.trt import add_trt_check
        from .freeze import fed_reference   # a frozen output is compared with the original fed the values
        with fed_reference(args.input, freeze, args.inputs) as (original, args.inputs):
            add_trt_check(report, original=original, fixed=args.output, args=args)
    elif args.check == "rtx":
        from .commandline.trt import add_rtx_check
        add_rtx_check(report, fixed=args.output, args=args)
    if args.report == "-":   # standard output: the JSON alone there, the summary to stderr
        console.out(report.dumps())
    elif args.report is not None:
        from .model_io import write_atomic
        write_atomic(args.report, (report.dumps() + "\n").encode(), what="report")
    from .render import why_not_ok
    if console.verbosity() > console.QUIET:
        summary = report.summary(verbose=console.verbosity() >= console.VERBOSE,
                                 report_path=None if args.report == "-" else args.report)
        if args.report == "-":
            console.clear_status()
            print(summary, file=sys.stderr)
        else:
            console.out(summary)
    elif not report.ok:
        console.LOG.error(why_not_ok(report))
    return EXIT_OK if report.ok else EXIT_CHECK_FAILED


def _check_outputs(args, loaded) -> None:
    """-o and --report must be writable file names that replace nothing the input reads."""
    from .model_io import check_output_path, refuse_overwrite
    check_output_path(args.output)
    refuse_overwrite(args.output, loaded, args.in_place)
    if args.report is not None and args.report != "-":
        check_output_path(args.report, "report")
        refuse_overwrite(args.report, loaded, False)
        if os.path.realpath(args.report) == os.path.realpath(args.output):
            raise OutputError(f"{args.report}: --report and -o name the same file")


def _refuse_flags_fix_ignores(args) -> None:
    """A flag that does nothing for this run is a usage error, never silently ignored."""
    from .commandline.trt import ENGINE_FLAGS
    # TensorRT-RTX builds strongly typed: its precision is the ONNX's (graphfix fix --precision)
    precision_flags = ("fp16", "tf32")
    engine = [flag for dest, flag in ENGINE_FLAGS.items() if getattr(args, dest, None)
              and not (dest == "trt_timeout" and args.until_parses)
              and not (args.check == "rtx" and dest not in precision_flags)] if args.check != "trt" else []
    if engine:
        raise UsageError(f"{', '.join(engine)}: used only with --check trt (TensorRT engine build options"
                         + ("; TensorRT-RTX takes the precision from the ONNX: --precision fp16)"
                            if args.check == "rtx" else ")"))
    if args.plugins and args.check != "trt" and not args.until_parses:
        raise UsageError("--plugins: used only with --check trt or --until-parses (TensorRT loads them)")
    def excluded(name: str) -> bool:
        listed = lambda text: [n.strip() for n in (text or "").split(",") if n.strip()]  # noqa: E731
        return name in listed(args.skip) or (args.passes is not None and name not in listed(args.passes))
    for dest, flag, pass_name in (("nms_plugin", "--nms-plugin", "plugins"),
                                  ("contrib_plugins", "--contrib-plugins", "plugins"),
                                  ("plugin_as_function", "--plugin-as-function", "plugins")):
        if getattr(args, dest, False) and excluded(pass_name):
            raise UsageError(f"{flag} acts through the {pass_name} pass, which --passes/--skip leave out")
    if getattr(args, "dequantize", "exact") != "exact" and excluded("decompose-quantized"):
        raise UsageError("--dequantize acts through the decompose-quantized pass, which --passes/--skip leave out")
    if args.plugin_as_function:
        from .plugin_rules.build import FUNCTION_MIN_TRT
        from .target import resolve_target
        target = resolve_target(args.trt)
        if target.version < FUNCTION_MIN_TRT:
            raise UsageError(f"--plugin-as-function needs TensorRT >= {FUNCTION_MIN_TRT} (target: "
                             f"{target.version}, {target.source}); drop it or pass --trt {FUNCTION_MIN_TRT}")


def cmd_check(args) -> int:
    console.progress("starting (importing onnx)")
    from .diagnosis import check_model
    console.progress("checking %s", args.model)
    result = check_model(args.model, trt=args.trt, real_parser=not args.no_real_parser, fp16=args.fp16)
    if args.json:
        console.out(json.dumps(result.to_json(), indent=2))
        return result.exit_code
    from .check_render import render_check
    console.out(render_check(result, width=console.terminal_width(sys.stdout), verbosity=console.verbosity()))
    return result.exit_code


def cmd_passes(args) -> int:
    from .registry import ordered_passes
    from .remedies import markdown, rule_rows
    if args.markdown:
        print(markdown(), end="")
        return EXIT_OK
    infos = [cls.info for cls in ordered_passes()]
    by_rules = rule_rows()
    if args.json:
        records = [i.to_json() for i in infos]
        for rec in records:   # the rows its rewrite rules declare go with the pass that applies them
            rec["remedies"] += [r.to_json() for r in by_rules if r.pass_name == rec["name"]]
        print(json.dumps(records, indent=2))
        return EXIT_OK
    for i in infos:
        flags = [] if i.ort_checkable else ["not ORT-checkable"]
        if not i.default:
            flags.append("opt-in")
        print(f"{i.name:<20} TensorRT {i.trt}{' (' + ', '.join(flags) + ')' if flags else ''}")
        print(f"    {i.summary}")
        print(f"    fixes: {i.fixes}")
        for row in list(i.remedies or ()) + [r for r in by_rules if r.pass_name == i.name]:
            print(f"    remedy: {row.describe()}")
    return EXIT_OK


def cmd_validate(args) -> int:
    console.quiet_libraries()
    from .commandline.trt import validate_command
    return validate_command(args)


def cmd_fixtures(args) -> int:
    from .fixtures.__main__ import write_fixtures
    if not args.list and not args.directory:
        raise UsageError("fixtures: give a directory to write to (or --list)")
    return write_fixtures(args.directory, args.names, list_only=args.list)


COMMANDS = {"fix": cmd_fix, "passes": cmd_passes, "validate": cmd_validate, "fixtures": cmd_fixtures}
COMMANDS["check"] = cmd_check


def cmd_doctor(args) -> int:
    from .doctor.report import command
    return command(args.files, as_json=args.json)


COMMANDS["doctor"] = cmd_doctor


def add_verbosity_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """-v/-q on the top level and on every subcommand (whoever added it)."""
    def add(p, prefix=""):
        g = p.add_mutually_exclusive_group()
        g.add_argument("-v", "--verbose", action="count", default=0, dest=prefix + "verbose",
                       help="more detail on stderr: every step, every finding and warning (-vv: debug)")
        g.add_argument("-q", "--quiet", action="store_true", dest=prefix + "quiet",
                       help="no progress and no summary; errors only")
    add(parser, "top_")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                add(sub)
    return parser


def verbosity_of(args) -> int:
    if getattr(args, "quiet", False) or getattr(args, "top_quiet", False):
        return console.QUIET
    return min(getattr(args, "verbose", 0) + getattr(args, "top_verbose", 0), console.DEBUG)


def main(argv: Optional[List[str]] = None) -> int:
    args = add_verbosity_flags(build_parser()).parse_args(argv)
    if hasattr(args, "plugins"):
        from .commandline.trt import plugin_libraries
        args.plugins = plugin_libraries(args)
    console.configure(verbosity_of(args))
    try:
        code = COMMANDS[args.command](args)
        console.clear_status()
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            console.silence_closed_stdout()
        return code
    except BrokenPipeError:   # stdout closed early (`graphfix passes | head -1`): not an error
        console.silence_closed_stdout()
        return EXIT_OK
    except (InputError, OutputError, UsageError) as exc:
        console.LOG.error("%s", _printable(exc))
        return EXIT_BAD_INPUT
    except GraphfixError as exc:
        console.LOG.error("%s", _printable(exc))
        return EXIT_CHECK_FAILED
    except KeyboardInterrupt:
        console.LOG.error("interrupted")
        return 130
    finally:
        console.reset()


if __name__ == "__main__":
    sys.exit(main())
