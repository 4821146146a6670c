"""GPU clocks and power state around a timed run, and a warning when they moved.

A GPU that drops to a low-power state between runs, or throttles for heat or power, makes
latencies jump for reasons that have nothing to do with the engine. `ClockWatch` samples NVML
(through ctypes, graphfix.doctor.nvml) in a background thread while a build or benchmark runs and
reports what it saw; with no GPU or no NVML it records nothing and warns nothing.

    with ClockWatch() as watch:
        run_the_engine()
    print(watch.summary())          # None without a GPU
    for w in watch.warnings(): ...
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional

from . import nvml

SAMPLE_SECONDS = 0.5
# a change smaller than this (MHz) is boost jitter, not a state change
SM_CLOCK_TOLERANCE_MHZ = 60


class ClockWatch:
    def __init__(self, gpu_index: int = 0, every: float = SAMPLE_SECONDS):
        self.every = every
        handles = nvml.handles()
        self.handle = handles[gpu_index] if gpu_index < len(handles) else None
        self.samples: List[Dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _sample(self) -> None:
        try:
            self.samples.append(nvml.clocks(self.handle))
        except Exception:   # a monitoring hiccup must never fail the run it watches
            pass

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self) -> "ClockWatch":
        if self.handle is not None:
            self._sample()
            self._thread = threading.Thread(target=self._loop, name="graphfix-clocks", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._sample()

    def summary(self) -> Optional[Dict[str, Any]]:
        return summarize(self.samples)

    def warnings(self) -> List[str]:
        return clock_warnings(self.samples)


def summarize(samples: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """First and last reading, SM clock range, performance states and throttle reasons seen."""
    if not samples:
        return None
    sm = [s["sm_mhz"] for s in samples if s.get("sm_mhz") is not None]
    return {"samples": len(samples), "start": samples[0], "end": samples[-1],
            "sm_mhz_min": min(sm) if sm else None, "sm_mhz_max": max(sm) if sm else None,
            "pstates": sorted({s["pstate"] for s in samples if s.get("pstate")}),
            "throttle": sorted({r for s in samples for r in (s.get("throttle") or [])})}


def clock_warnings(samples: List[Dict[str, Any]]) -> List[str]:
    """Warnings for a run whose clocks or power state changed (or that ran throttled)."""
    info = summarize(samples)
    if info is None:
        return []
    out = []
    if len(info["pstates"]) > 1:
        out.append(f"the GPU changed power state during the run ({' -> '.join(info['pstates'])}): timings mix "
                   "clock speeds; warm up first, or lock clocks (nvidia-smi -lgc / persistence mode)")
    lo, hi = info["sm_mhz_min"], info["sm_mhz_max"]
    if lo is not None and hi - lo > SM_CLOCK_TOLERANCE_MHZ:
        out.append(f"the SM clock moved between {lo} and {hi} MHz during the run: timings are not comparable "
                   "across that range")
    slow = [r for r in info["throttle"] if "slowdown" in r or "power" in r]
    if slow:
        out.append(f"the GPU was throttled during the run ({', '.join(slow)}): timings are slower than normal")
    return out
