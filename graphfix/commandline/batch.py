"""Many models at once: `graphfix fix a.onnx b.onnx DIR/ -o OUTDIR/`.

Each model runs the single-model path (the CLI hands its cmd_fix to run_batch) in a worker process,
so a model that crashes its worker (TensorRT and ONNX Runtime can segfault on bad graphs) or
exhausts memory costs only that model. Workers are spawned, not forked: the parent may already hold ONNX Runtime threads.
Per model: OUTDIR/<name>.onnx and OUTDIR/<name>.report.json; at the end a table and
OUTDIR/summary.json. The exit code is the worst per-model code.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional

from ..errors import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, UsageError, printable

SUMMARY_SCHEMA = "graphfix.batch/1"
ERROR_REPORT_SCHEMA = "graphfix.batch-error/1"
OK, NOT_OK, BAD_INPUT, CRASHED = "ok", "not ok", "bad input", "crashed"


@dataclass
class Job:
    input: str
    output: str
    report: str
    args: argparse.Namespace      # the fix options, shared by every model
    command: Optional[Callable] = None   # the single-model command (cli.cmd_fix; pickled by name)


@dataclass
class Outcome:
    input: str
    output: Optional[str]          # None when nothing was written
    report: str
    verdict: str
    exit_code: int
    passes_changed: Optional[int]  # None when no graphfix report exists
    seconds: float
    error: Optional[str] = None


def is_batch(args) -> bool:
    """Several inputs, or a directory to fix into an -o directory: the batch path. One input with
    -o a file stays the single-model path (which refuses a directory input as "not a file")."""
    out_is_dir = os.path.isdir(args.output) or args.output.endswith(("/", os.sep))
    return len(args.input) > 1 or (out_is_dir and os.path.isdir(args.input[0]))


def default_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def plan(args) -> List[Job]:
    """The jobs, or UsageError (one line, exit 2) for an ambiguous or colliding request."""
    for flag, value in (("--report", args.report), ("--in-place", args.in_place or None)):
        if value is not None:
            raise UsageError(f"{flag} is for one model; with several, each gets OUTDIR/<name>.report.json "
                             "and OUTDIR/summary.json sums them up")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1 (got {args.jobs})")
    out_dir = _output_dir(args.output)   # checked now, created once the whole plan holds
    inputs = _expand(args.input)
    jobs, seen, ins = [], {}, {os.path.realpath(p) for p in inputs}
    for path in inputs:
        name = os.path.splitext(os.path.basename(path))[0]
        if name in seen:
            raise UsageError(f"{path} and {seen[name]} would both be written to "
                             f"{os.path.join(args.output, name + '.onnx')}; rename one or fix them separately")
        seen[name] = path
        output = os.path.join(out_dir, name + ".onnx")
        if os.path.realpath(output) in ins:
            raise UsageError(f"{output}: refusing to write over an input model; choose another -o directory")
        jobs.append(Job(path, output, os.path.join(out_dir, name + ".report.json"), args))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{out_dir}: cannot create the output directory ({exc.strerror})") from None
    return jobs


def _output_dir(path: str) -> str:
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise UsageError(f"{path}: with several models -o must be a directory, and this is a file")
    if not path.endswith(("/", os.sep)):
        raise UsageError(f"{path}: with several models -o must be a directory "
                         "(end it with '/' to have it created)")
    return path


def _expand(paths: List[str]) -> List[str]:
    """Files as given; directories replaced by their *.onnx files, sorted (not recursive)."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            inside = sorted(n for n in os.listdir(path) if n.endswith(".onnx")
                            and os.path.isfile(os.path.join(path, n)))
            if not inside:
                raise UsageError(f"{path}: no .onnx files in this directory")
            found.extend(os.path.join(path, n) for n in inside)
        else:
            found.append(path)   # a missing or bad file is that model's failure, not the batch's
    return found


# --- the worker -------------------------------------------------------------------------------------

def fix_one(job: Job) -> Outcome:
    """Worker entry (top level, picklable): the single-model path with this model's paths."""
    from ..errors import GraphfixError, InputError, OutputError
    started = time.perf_counter()
    args = argparse.Namespace(**vars(job.args))
    args.input, args.output, args.report, args.quiet = job.input, job.output, job.report, True
    error, verdict = None, None
    try:
        code = job.command(args)
    except (InputError, OutputError, UsageError) as exc:
        code, verdict, error = EXIT_BAD_INPUT, BAD_INPUT, printable(exc)
    except GraphfixError as exc:
        code, verdict, error = EXIT_CHECK_FAILED, NOT_OK, printable(exc)
    except Exception as exc:   # a bug or MemoryError: this model failed, the batch goes on
        code, verdict = EXIT_CHECK_FAILED, CRASHED
        error = f"{type(exc).__name__}: {printable(exc)[:500]}"
    seconds = round(time.perf_counter() - started, 3)
    if error is None:
        with open(job.report) as f:
            doc = json.load(f)
        changed = sum(1 for p in doc["passes"] if p["status"] == "applied")
        return Outcome(job.input, job.output, job.report, OK if code == 0 else NOT_OK, code, changed, seconds)
    outcome = Outcome(job.input, None, job.report, verdict, code, None, seconds, error)
    _write_error_report(outcome)
    return outcome


def _write_error_report(outcome: Outcome) -> None:
    from ..model_io import write_atomic
    doc = {"schema": ERROR_REPORT_SCHEMA, "ok": False, **asdict(outcome)}
    write_atomic(outcome.report, (json.dumps(doc, indent=2) + "\n").encode(), what="report")


# --- the parent -------------------------------------------------------------------------------------

def run_batch(args, command: Callable) -> int:
    """Fix every model of the request with `command` (the single-model path, cli.cmd_fix)."""
    jobs = plan(args)
    for job in jobs:
        job.command = command
    workers = min(args.jobs or default_jobs(), len(jobs))
    progress = _Progress(len(jobs), enabled=sys.stderr.isatty() and not args.quiet)
    started = time.perf_counter()
    outcomes = _run_all(jobs, workers, progress)
    progress.close()
    ordered = [outcomes[j.input] for j in jobs]
    exit_code = max(o.exit_code for o in ordered)
    out_dir = os.path.dirname(jobs[0].output)
    summary = {"schema": SUMMARY_SCHEMA, "exit_code": exit_code, "jobs": workers,
               "seconds": round(time.perf_counter() - started, 3),
               "counts": {v: sum(o.verdict == v for o in ordered) for v in (OK, NOT_OK, BAD_INPUT, CRASHED)},
               "models": [dict(asdict(o), seconds=round(o.seconds, 3)) for o in ordered]}
    from ..model_io import write_atomic
    summary_path = os.path.join(out_dir, "summary.json")
    write_atomic(summary_path, (json.dumps(summary, indent=2) + "\n").encode(), what="summary")
    if not args.quiet:
        print(_table(ordered, summary, summary_path))
    return exit_code


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def _run_all(jobs: List[Job], workers: int, progress: "_Progress") -> Dict[str, Outcome]:
    """Run every job; when a worker dies, the pool breaks and every unfinished job is re-run alone,
    so the model that killed it is named and the others still get their result."""
    outcomes: Dict[str, Outcome] = {}
    suspects: List[Job] = []
    with _pool(workers) as pool:
        pending = {pool.submit(fix_one, job): job for job in jobs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                try:
                    outcomes[job.input] = future.result()
                    progress.step(outcomes[job.input])
                except BrokenProcessPool:
                    suspects.append(job)
    for job in suspects:           # one at a time, each in a fresh one-worker pool
        outcomes[job.input] = _run_alone(job)
        progress.step(outcomes[job.input])
    return outcomes


def _run_alone(job: Job) -> Outcome:
    started = time.perf_counter()
    try:
        with _pool(1) as pool:
            return pool.submit(fix_one, job).result()
    except BrokenProcessPool:
        outcome = Outcome(job.input, None, job.report, CRASHED, 1, None, time.perf_counter() - started,
                          "the worker process died (a crash in native code, or killed for memory)")
        _write_error_report(outcome)
        return outcome


class _Progress:
    """One line on stderr, redrawn in place; only on a terminal (a log file gets the table alone)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled, self.started = total, 0, enabled, time.perf_counter()
        self._draw("")

    def step(self, outcome: Outcome) -> None:
        self.done += 1
        self._draw(f"{os.path.basename(outcome.input)}: {outcome.verdict}")

    def _draw(self, last: str) -> None:
        if not self.enabled:
            return
        width = 24
        filled = width * self.done // max(self.total, 1)
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{time.perf_counter() - self.started:.0f}s {last}")
        sys.stderr.write("\r\x1b[K" + line[:120])
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _table(outcomes: List[Outcome], summary: dict, summary_path: str) -> str:
    names = [os.path.basename(o.input) for o in outcomes]
    width = max([len("model")] + [len(n) for n in names])
    lines = [f"{'model':<{width}}  {'verdict':<9}  {'passes changed':>14}  {'seconds':>8}"]
    for name, o in zip(names, outcomes):
        changed = "-" if o.passes_changed is None else str(o.passes_changed)
        lines.append(f"{name:<{width}}  {o.verdict:<9}  {changed:>14}  {o.seconds:>8.2f}")
    for name, o in zip(names, outcomes):
        if o.error:
            lines.append(f"  {name}: {o.error}")
    counts = ", ".join(f"{n} {v}" for v, n in summary["counts"].items() if n)
    lines.append(f"{len(outcomes)} model(s): {counts}; {summary['seconds']:.1f}s with {summary['jobs']} "
                 f"worker(s); summary in {summary_path}")
    return "\n".join(lines)
