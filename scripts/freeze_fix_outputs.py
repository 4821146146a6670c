"""Freeze what `graphfix fix` returns, to compare before and after a refactoring of the pipeline.

    python scripts/freeze_fix_outputs.py --out before.json            # every fixture and exported model
    python scripts/freeze_fix_outputs.py --out after.json --compare before.json

For every fixture (`graphfix fixtures DIR`) and every model in fixtures/exported/, it runs
`graphfix fix MODEL -o OUT --report R` and `graphfix check MODEL --json` (in this process, through
graphfix.cli.main) with the default target and with --trt 8.6 and --trt 10.0 (a configuration whose
resolved target equals an earlier one is run anyway: the default may differ on another machine), and
stores the exit codes, the output bytes' sha256, the report and the check's JSON without timings. --compare prints every difference.
To freeze another checkout, put it first on PYTHONPATH (with graphfix/passes and graphfix/fixtures
linked to its passes/ and fixtures/).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import sys
import tempfile

CONFIGS = {"default": [], "trt8.6": ["--trt", "8.6"], "trt10.0": ["--trt", "10.0"]}
TIMING_KEYS = ("seconds", "wall_seconds")


def _strip_timings(doc):
    if isinstance(doc, dict):
        return {k: _strip_timings(v) for k, v in doc.items() if k not in TIMING_KEYS}
    if isinstance(doc, list):
        return [_strip_timings(v) for v in doc]
    return doc


def _models(root: str, work: str):
    from graphfix.cli import main
    fixtures = os.path.join(work, "fixtures")
    with contextlib.redirect_stdout(io.StringIO()):
        main(["fixtures", fixtures])
    found = [os.path.join(fixtures, f) for f in sorted(os.listdir(fixtures)) if f.endswith(".onnx")]
    exported = os.path.join(root, "fixtures", "exported")
    found += [os.path.join(exported, f) for f in sorted(os.listdir(exported)) if f.endswith(".onnx")]
    return found


def _run(argv):
    """graphfix.cli.main(argv) with its output captured: (exit code, stdout)."""
    from graphfix.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
        except Exception as exc:   # record, do not stop: the comparison shows it
            rc = f"raised {type(exc).__name__}: {exc}"
    return rc, out.getvalue()


def _check_json(path: str, flags) -> dict:
    rc, text = _run(["check", path, "--json"] + flags)
    try:
        return {"rc": rc, "json": _strip_timings(json.loads(text))}
    except ValueError:
        return {"rc": rc, "stdout": text[-2000:]}


def freeze(root: str) -> dict:
    out = {}
    with tempfile.TemporaryDirectory(prefix="gf-freeze-") as work:
        for path in _models(root, work):
            key = os.path.relpath(path, work) if path.startswith(work) else os.path.relpath(path, root)
            for config, flags in CONFIGS.items():
                dst, rep = os.path.join(work, "out.onnx"), os.path.join(work, "report.json")
                for p in (dst, rep):
                    if os.path.exists(p):
                        os.remove(p)
                rc, _ = _run(["-q", "fix", path, "-o", dst, "--report", rep] + flags)
                entry = {"rc": rc, "check": _check_json(path, flags)}
                if os.path.exists(dst):
                    entry["sha256"] = hashlib.sha256(open(dst, "rb").read()).hexdigest()
                if os.path.exists(rep):
                    entry["report"] = _strip_timings(json.load(open(rep)))
                out[f"{key} [{config}]"] = entry
                print(f"{key} [{config}] rc={rc}", file=sys.stderr, flush=True)
    return out


def _normal(value):
    """Temporary paths and NaN (never equal to itself) as text that compares."""
    if isinstance(value, str):
        return re.sub(r"/tmp/gf-freeze-[^/]+", "<work>", value)
    if isinstance(value, float) and value != value:
        return "NaN"
    return value


def _diff(a, b, where=""):
    a, b = _normal(a), _normal(b)
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a:
                yield f"{where}.{k}: added {json.dumps(b[k])[:200]}"
            elif k not in b:
                yield f"{where}.{k}: removed {json.dumps(a[k])[:200]}"
            else:
                yield from _diff(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from _diff(x, y, f"{where}[{i}]")
    elif a != b:
        yield f"{where}: {json.dumps(a)[:200]} -> {json.dumps(b)[:200]}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="where to write the frozen results (JSON)")
    parser.add_argument("--compare", help="an earlier --out file: print every difference")
    parser.add_argument("--only-compare", metavar="AFTER", help="compare AFTER (an --out file) with --compare; "
                        "run nothing")
    args = parser.parse_args(argv)
    if args.only_compare:
        frozen = json.load(open(args.only_compare))
    else:
        import graphfix
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        print(f"graphfix from {graphfix.__file__}", file=sys.stderr)
        frozen = freeze(root)
        with open(args.out, "w") as f:
            json.dump(frozen, f, indent=1, sort_keys=True)
    if args.compare:
        before = json.load(open(args.compare))
        lines = list(_diff(before, frozen))
        new_fields = [ln for ln in lines if ln.split(": ")[0].endswith((".differences", ".traceback"))]
        lines = [ln for ln in lines if ln not in new_fields]
        print(f"{len(new_fields)} new report field(s) (differences, traceback) left out below")
        print("\n".join(lines) if lines else "no differences")
        print(f"{len(lines)} difference(s) over {len(frozen)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
