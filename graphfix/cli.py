"""The `graphfix` command line: fix, passes, check, validate.

Exit codes: 0 done (and checked), 1 a check failed or problems remain, 2 bad input or usage.
Errors that graphfix raises on purpose print one line naming the file and the problem.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from .errors import GraphfixError, InputError, OutputError, UsageError

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 2 with one line, like bad input
        self.print_usage(sys.stderr)
        print(f"graphfix: error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="graphfix", description="Make ONNX models build and run correctly on TensorRT.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    fx = sub.add_parser("fix", help="rewrite a model for TensorRT and check the rewrite")
    fx.add_argument("input", help="ONNX model to fix")
    fx.add_argument("-o", "--output", required=True, help="where to write the fixed model")
    fx.add_argument("--trt", help="target TensorRT version (default: installed tensorrt, else 10.0)")
    group = fx.add_mutually_exclusive_group()
    group.add_argument("--passes", help="comma-separated passes to run (default: all the target needs)")
    group.add_argument("--skip", help="comma-separated passes to leave out")
    fx.add_argument("--check", choices=["ort", "none", "trt", "rtx"], default="ort",
                    help="ort: ONNX Runtime before/after each pass (default); trt: also build and "
                         "compare a TensorRT engine; rtx: also parse and build ahead of time with "
                         "TensorRT-RTX (11.x parser, not run); none: no output comparison")
    fx.add_argument("--report", help="write the JSON report here")
    fx.add_argument("--int32-io", action="store_true", help="allow INT64 graph inputs/outputs to become INT32")
    fx.add_argument("--in-place", action="store_true", help="allow the output to replace the input file")
    fx.add_argument("--shapes", help="input shapes for checks, e.g. input_ids:1x128,mask:1x128")
    fx.add_argument("--quiet", action="store_true", help="print no summary")
    from .plugin_rules.cli_args import add_plugin_arguments
    add_plugin_arguments(fx)
    fx.add_argument("--until-parses", action="store_true",
                    help="drive the passes by TensorRT's parser: parse, run the passes its errors call for, "
                         "parse again, until it parses or nothing changes (needs TensorRT)")
    from .checks.trt import add_trt_arguments
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
    ck.add_argument("--json", action="store_true", help="print the findings as JSON (schema: graphfix.diagnose)")
    ck.add_argument("--no-real-parser", action="store_true",
                    help="do not run TensorRT's own parser even where TensorRT and a GPU are present")

    ps = sub.add_parser("passes", help="list the passes (from their declarations)")
    ps.add_argument("--json", action="store_true")

    fx_out = sub.add_parser("fixtures", help="write the bundled example models (graphfix.fixtures) as .onnx")
    fx_out.add_argument("directory")
    fx_out.add_argument("names", nargs="*", help="fixtures to write (default: all)")
    fx_out.add_argument("--list", action="store_true", help="list fixture names and exit")
    return p


def parse_shapes(text: Optional[str]):
    """'a:1x128,b:1x3x224x224' -> {'a': [1, 128], 'b': [1, 3, 224, 224]}"""
    if not text:
        return None
    shapes = {}
    for item in text.split(","):
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise UsageError(f"bad --shapes entry '{item}' (expected name:1x128)")
        try:
            shapes[name] = [int(d) for d in dims.split("x")]
        except ValueError:
            raise UsageError(f"bad --shapes entry '{item}' (dims must be integers joined by 'x')") from None
    return shapes


def cmd_fix(args) -> int:
    from .model_io import refuse_overwrite, save_model
    from .pass_api import PassContext
    from .pipeline import fix

    refuse_overwrite(args.output, args.input, args.in_place)   # before any work, not only at save
    from .plugin_rules.cli_args import plugin_options
    context = PassContext(int32_io=args.int32_io, options=plugin_options(args))
    check = "ort" if args.check in ("trt", "rtx") else args.check
    if args.until_parses:
        from .fix_loop import fix_until_parses
        model, report = fix_until_parses(args.input, trt=args.trt, passes=args.passes, skip=args.skip,
                                         check=check, context=context, shapes=parse_shapes(args.shapes),
                                         plugins=args.plugins, timeout=args.trt_timeout)
    else:
        model, report = fix(args.input, trt=args.trt, passes=args.passes, skip=args.skip, check=check,
                            context=context, shapes=parse_shapes(args.shapes))
    save_model(model, args.output, input_path=args.input, overwrite_input=args.in_place)
    report.output["path"] = args.output
    if args.check == "trt":
        from .checks.trt import add_trt_check
        add_trt_check(report, original=args.input, fixed=args.output, args=args)
    elif args.check == "rtx":
        from .checks.rtx import add_rtx_check
        add_rtx_check(report, fixed=args.output, args=args)
    if args.report:
        _write_text_atomic(args.report, report.dumps() + "\n")
    if not args.quiet:
        print(report.summary())
    return EXIT_OK if report.ok else EXIT_CHECK_FAILED


def cmd_check(args) -> int:
    from .diagnose import check_model
    result = check_model(args.model, trt=args.trt, real_parser=not args.no_real_parser)
    print(json.dumps(result.to_json(), indent=2) if args.json else result.table())
    return result.exit_code


def cmd_passes(args) -> int:
    from .registry import ordered_passes
    infos = [cls.info for cls in ordered_passes()]
    if args.json:
        print(json.dumps([i.to_json() for i in infos], indent=2))
        return EXIT_OK
    for i in infos:
        flags = [] if i.ort_checkable else ["not ORT-checkable"]
        if not i.default:
            flags.append("opt-in")
        print(f"{i.name:<20} TensorRT {i.trt}{' (' + ', '.join(flags) + ')' if flags else ''}")
        print(f"    {i.summary}")
        print(f"    fixes: {i.fixes}")
    return EXIT_OK


def _write_text_atomic(path: str, text: str) -> None:
    import tempfile
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OutputError(f"{path}: directory does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".graphfix-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cmd_validate(args) -> int:
    from .checks.trt import validate_command
    return validate_command(args)


def cmd_fixtures(args) -> int:
    from .fixtures.__main__ import write_fixtures
    return write_fixtures(args.directory, args.names, list_only=args.list)


COMMANDS = {"fix": cmd_fix, "passes": cmd_passes, "validate": cmd_validate, "fixtures": cmd_fixtures}
COMMANDS["check"] = cmd_check


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (InputError, OutputError, UsageError) as exc:
        print(f"graphfix: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except GraphfixError as exc:
        print(f"graphfix: error: {exc}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except KeyboardInterrupt:
        print("graphfix: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
