"""One child process measured: wall time and its own peak RSS (shared by the benchmark scripts)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional


def run_child(argv: List[str], timeout: float, cwd: str, env: Optional[Dict[str, str]] = None) -> Dict:
    """Run a subprocess; its wall time, CPU time and its own peak RSS (os.wait4 reports that child
    alone). It runs in `cwd` (the work directory), so a source checkout is not on its sys.path;
    `env`: its environment (default: this one's)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") \
            else (status >> 8)
        wall = time.perf_counter() - start
        log.seek(0)
        tail = log.read().decode(errors="replace")[-2000:]
    rss_kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss // 1024
    return {"seconds": round(wall, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "max_rss_mib": round(rss_kib / 1024, 1), "returncode": proc.returncode,
            "timed_out": wall > timeout, "log_tail": tail if proc.returncode else ""}


def machine_facts(**extra) -> Dict:
    """Where a benchmark ran, for its JSON: platform, CPUs, `extra`, and the load average at the end."""
    return {"platform": platform.platform(), "cpus": os.cpu_count(), **extra,
            "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None}
