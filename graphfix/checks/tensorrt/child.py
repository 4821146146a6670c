"""Running the TensorRT worker (graphfix.checks.tensorrt.worker) in a child process and following it.

The child appends JSON events to a file; the parent reads them as they come, prints the stage and
a heartbeat with the elapsed time on stderr, enforces the timeout, and turns a crash (a negative
return code: the signal) into data. Nothing here raises because TensorRT misbehaved.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

WORKER_COMMAND = [sys.executable, "-m", "graphfix.checks.tensorrt.worker"]
PROGRESS_EVERY = 5.0     # seconds between "building engine... 12s" lines
POLL_SECONDS = 0.2

STAGE_WORDS = {"import": "loading TensorRT", "plugins": "loading plugins", "parse": "parsing",
               "build": "building engine", "run": "running engine"}


def byte_size_text(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


@dataclass
class ChildRun:
    returncode: Optional[int]
    events: List[dict]
    timed_out: bool
    log_tail: List[str]
    seconds: float
    workdir: str = ""

    def last(self, kind: str) -> Optional[dict]:
        found = [e for e in self.events if e.get("event") == kind]
        return found[-1] if found else None

    @property
    def stage(self) -> Optional[str]:
        stage = self.last("stage")
        return stage["stage"] if stage else None

    @property
    def finished(self) -> bool:
        return self.last("done") is not None

    @property
    def signal_name(self) -> Optional[str]:
        if self.returncode is None or self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"

    @property
    def crashed(self) -> bool:
        """Killed by a signal before finishing (a crash after "done", in teardown, loses nothing)."""
        return self.signal_name is not None and not self.timed_out and not self.finished

    def failure(self) -> Optional[Dict[str, Optional[str]]]:
        """What went wrong in the child as an error entry, or None when it finished cleanly."""
        err = self.last("error")
        if err:
            if err.get("stage") == "import":
                return {"node": None, "op": None, "message": f"TensorRT is not importable: {err['message']}"}
            return {"node": None, "op": None,
                    "message": f"{err.get('kind', 'error')} while {STAGE_WORDS.get(err.get('stage'), err.get('stage'))}: "
                               f"{err['message']}"}
        doing = STAGE_WORDS.get(self.stage, self.stage or "starting")
        if self.timed_out:
            return {"node": None, "op": None, "message": f"timed out after {self.seconds:.0f}s while {doing}"}
        if self.crashed:
            return {"node": None, "op": None, "message": f"TensorRT crashed ({self.signal_name}) while {doing}"}
        if not self.finished:
            tail = self.log_tail[-1] if self.log_tail else "no output"
            return {"node": None, "op": None,
                    "message": f"TensorRT worker exited with code {self.returncode} while {doing}: {tail}"}
        return None

    def warnings(self) -> List[str]:
        if self.finished and self.signal_name:
            return [f"the TensorRT process died of {self.signal_name} on exit, after finishing its work"]
        return []


class _Progress:
    """Stage lines and a heartbeat with the elapsed time, on stderr, while the child works."""

    def __init__(self, enabled: bool, label: str):
        self.enabled, self.label = enabled, label
        self.stage, self.since, self.last_beat = None, time.monotonic(), time.monotonic()

    def _say(self, text: str) -> None:
        if not self.enabled:
            return
        from ...console import is_configured, progress
        if is_configured():     # the command line: a status line on a terminal, a plain line with -v
            progress(text)
        else:
            print(f"graphfix: {text}", file=sys.stderr, flush=True)

    def event(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "stage":
            self.stage, self.since = ev["stage"], time.monotonic()
            self.last_beat = self.since
            if self.stage in ("parse", "build", "run"):
                extra = f" ({self.label})" if self.stage == "build" and self.label else ""
                self._say(f"TensorRT {STAGE_WORDS[self.stage]}{extra}...")
        elif kind == "built" and ev.get("ok"):
            self._say(f"engine built in {ev.get('seconds', 0):.1f}s ({byte_size_text(ev.get('engine_bytes', 0))})")

    def tick(self) -> None:
        now = time.monotonic()
        if self.stage and now - self.last_beat >= PROGRESS_EVERY:
            self.last_beat = now
            self._say(f"{STAGE_WORDS.get(self.stage, self.stage)}... {now - self.since:.0f}s")


def run_worker(request: Dict[str, Any], workdir: str, *, timeout: Optional[float] = None,
               progress: bool = True, label: str = "") -> ChildRun:
    """Run the worker on `request` (written to workdir), follow its events, never raise on a crash."""
    events_path = os.path.join(workdir, "events.jsonl")
    request = dict(request, events=events_path, workdir=workdir)
    req_path = os.path.join(workdir, "request.json")
    with open(req_path, "w") as f:
        json.dump(request, f)
    log_path = os.path.join(workdir, "worker.log")
    events: List[dict] = []
    offset, timed_out = 0, False
    shown = _Progress(progress, label)
    started = time.monotonic()

    def read_events() -> None:
        nonlocal offset
        if not os.path.exists(events_path):
            return
        with open(events_path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
        complete = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written waits for next time
        offset += len(complete)
        for line in complete.decode("utf-8", "replace").splitlines():
            if line.strip():
                ev = json.loads(line)
                events.append(ev)
                shown.event(ev)

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(list(WORKER_COMMAND) + [req_path], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                time.sleep(POLL_SECONDS)
                read_events()
                shown.tick()
                if timeout is not None and time.monotonic() - started > timeout:
                    timed_out = True
                    proc.kill()
                    break
            proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: do not leave TensorRT running
                proc.kill()
                proc.wait()
    read_events()
    with open(log_path, "rb") as f:
        tail = f.read()[-8000:].decode("utf-8", "replace").splitlines()[-30:]
    return ChildRun(proc.returncode, events, timed_out, tail, time.monotonic() - started, workdir)
