"""How the command line talks to a person: log levels (-v/-q), progress on stderr, the terminal's
width, closed pipes, and the third-party loggers (ONNX Runtime, Polygraphy) kept off the terminal.

Library code logs to ``logging.getLogger("graphfix....")`` and reports progress with
:func:`progress`; nothing is printed unless the command line (or the caller) configured logging.
Results (summaries, tables, JSON) go to stdout through :func:`out`; everything else goes to stderr.

Levels: ``-q`` errors only, no progress; default: warnings, and progress when stderr is a terminal
(one status line, rewritten in place); ``-v`` progress and details as plain lines, third-party
warnings let through; ``-vv`` debug.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Optional

LOG = logging.getLogger("graphfix")
QUIET, NORMAL, VERBOSE, DEBUG = -1, 0, 1, 2
PROGRESS = "progress"          # LogRecord attribute set on progress records

_state = {"configured": False, "verbosity": NORMAL, "status": False, "started": time.monotonic(), "text": ""}
_lock = threading.RLock()       # the status line is redrawn by a ticker thread (elapsed seconds)
TICK_SECONDS = 1.0


def progress(message: str, *args, logger: Optional[logging.Logger] = None) -> None:
    """Say what graphfix is doing now (a pass, a model, an engine build). Shown on a terminal as a
    status line, as a plain line with -v, never with -q; a library caller sees INFO records on the
    "graphfix" logger only if it configured logging for them."""
    (logger or LOG).info(message, *args, extra={PROGRESS: True})


def progress_enabled() -> bool:
    """Whether progress is shown at all (callers that print their own progress ask this)."""
    if not _state["configured"]:
        return True            # library use: callers keep their own defaults
    v = _state["verbosity"]
    return v >= VERBOSE or (v == NORMAL and _is_tty(sys.stderr))


def is_configured() -> bool:
    return bool(_state["configured"])


def verbosity() -> int:
    return _state["verbosity"]


class _Handler(logging.Handler):
    """stderr; progress records become a status line on a terminal (cleared before any other output)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            v = _state["verbosity"]
            is_progress = getattr(record, PROGRESS, False)
            if is_progress and v < VERBOSE:
                if v == NORMAL and _is_tty(sys.stderr):
                    self._status(record.getMessage())
                return
            if record.levelno < logging.WARNING and not is_progress and v < VERBOSE:
                return
            with _lock:
                clear_status()
                sys.stderr.write(self.format(record) + "\n")
                sys.stderr.flush()
        except BrokenPipeError:
            pass
        except Exception:  # a logging failure must never end the run
            self.handleError(record)

    @staticmethod
    def _status(text: str) -> None:
        with _lock:
            _state["text"] = text
            _draw_status()
        _start_ticker()


def _draw_status() -> None:
    width = terminal_width(sys.stderr)
    elapsed = time.monotonic() - _state["started"]
    line = f"graphfix: {_state['text']} [{elapsed:.0f}s]"
    if len(line) > width - 1:
        line = line[:width - 2] + "~"
    sys.stderr.write("\r\033[K" + line)
    sys.stderr.flush()
    _state["status"] = True


def _start_ticker() -> None:
    """One daemon thread per process redraws the status line each second, so that a long step
    (folding a big model, an engine build) shows time passing instead of a frozen line."""
    if _state.get("ticker"):
        return

    def tick() -> None:
        while True:
            time.sleep(TICK_SECONDS)
            with _lock:
                if _state["status"] and _state["configured"]:
                    try:
                        _draw_status()
                    except (OSError, ValueError):
                        pass
    _state["ticker"] = threading.Thread(target=tick, name="graphfix-status", daemon=True)
    _state["ticker"].start()


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"graphfix: error: {text}"
        if record.levelno >= logging.WARNING:
            return f"graphfix: warning: {text}"
        if record.levelno < logging.INFO:
            return f"graphfix: [{record.name}] {text}"
        return f"graphfix: {text}"


def configure(level: int = NORMAL) -> None:
    """Set up logging for a command line run (idempotent; the last call wins; reset() undoes it)."""
    import warnings
    if not _state["configured"]:
        _state["saved_filters"] = list(warnings.filters)
    _state.update(configured=True, verbosity=level, started=time.monotonic())
    for h in list(LOG.handlers):
        if isinstance(h, _Handler):
            LOG.removeHandler(h)
    handler = _Handler()
    handler.setFormatter(_Formatter())
    LOG.addHandler(handler)
    LOG.propagate = False
    LOG.setLevel(logging.DEBUG if level >= DEBUG else logging.INFO if level >= NORMAL else logging.ERROR)
    _configure_third_party(level)


def reset() -> None:
    """Undo configure() (the end of a command line run inside a longer-lived process, e.g. tests)."""
    import warnings
    clear_status()
    for h in list(LOG.handlers):
        if isinstance(h, _Handler):
            LOG.removeHandler(h)
    py_warnings = logging.getLogger("py.warnings")
    for h in list(py_warnings.handlers):
        if isinstance(h, _Handler):
            py_warnings.removeHandler(h)
    py_warnings.propagate = True
    LOG.propagate = True
    LOG.setLevel(logging.NOTSET)
    logging.captureWarnings(False)
    if "saved_filters" in _state:
        warnings.filters[:] = _state.pop("saved_filters")
        getattr(warnings, "_filters_mutated", lambda: None)()   # drop the per-module caches too
    _state.update(configured=False, verbosity=NORMAL, status=False)


def _configure_third_party(level: int) -> None:
    import warnings
    if level >= VERBOSE:
        logging.captureWarnings(True)     # Python warnings from any library, as log lines
        py_warnings = logging.getLogger("py.warnings")
        if not any(isinstance(h, _Handler) for h in py_warnings.handlers):
            py_warnings.addHandler(LOG.handlers[-1])
        py_warnings.propagate = False
        return
    logging.captureWarnings(False)
    for module in ("polygraphy", "onnxruntime", "onnx_graphsurgeon", "onnx"):
        warnings.filterwarnings("ignore", module=module + r"(\.|$)")


def quiet_libraries() -> None:
    """Keep ONNX Runtime's and Polygraphy's own log lines off the terminal unless -v; called by the
    commands that use them, just before (both are imported anyway there)."""
    if not _state["configured"] or _state["verbosity"] >= VERBOSE:
        return
    try:
        import onnxruntime as ort
        ort.set_default_logger_severity(3)   # errors only; its warnings are coloured lines on stderr
    except Exception:
        pass
    try:
        from polygraphy.logger import G_LOGGER
        G_LOGGER.module_severity = G_LOGGER.ERROR
    except Exception:
        pass


def clear_status() -> None:
    with _lock:
        if _state["status"]:
            _state["status"] = False
            try:
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()
            except (BrokenPipeError, ValueError):
                pass


def out(text: str = "") -> None:
    """Print a result on stdout (after clearing the status line). A reader that went away
    (`| head`) ends the output quietly; the command still returns its own exit code."""
    clear_status()
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        silence_closed_stdout()


def terminal_width(stream=None, default: int = 100) -> int:
    """Columns of the terminal `stream` is on ($COLUMNS first); `default` when it is not a terminal."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return max(int(env), 40)
    stream = stream or sys.stdout
    try:
        if _is_tty(stream):
            return max(os.get_terminal_size(stream.fileno()).columns, 40)
    except (OSError, ValueError, AttributeError):
        pass
    return default


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def silence_closed_stdout() -> None:
    """After a BrokenPipeError (output piped into `head`): point stdout at /dev/null so that the
    interpreter's final flush does not raise again and print a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
