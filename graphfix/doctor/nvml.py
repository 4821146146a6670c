"""The few NVML calls graphfix needs, through ctypes (no pynvml dependency).

NVML comes with the NVIDIA driver (libnvidia-ml.so.1 / nvml.dll); where it is absent there is no
usable GPU, and every function here returns None or an empty list instead of raising.
"""
from __future__ import annotations

import ctypes
import sys
from typing import Any, Dict, List, Optional

_LIB: Any = None
_TRIED = False

CLOCK_SM, CLOCK_MEM = 1, 2                       # nvmlClockType_t
# nvmlClocksThrottleReasons bits, named as nvidia-smi names them
THROTTLE_REASONS = {0x1: "gpu idle", 0x2: "applications clocks setting", 0x4: "software power cap",
                    0x8: "hardware slowdown", 0x10: "sync boost", 0x20: "software thermal slowdown",
                    0x40: "hardware thermal slowdown", 0x80: "hardware power brake slowdown",
                    0x100: "display clock setting"}


def library():
    """The initialised NVML library, or None where there is none (no driver, no GPU)."""
    global _LIB, _TRIED
    if _TRIED:
        return _LIB
    _TRIED = True
    names = ["nvml.dll"] if sys.platform == "win32" else ["libnvidia-ml.so.1", "libnvidia-ml.so"]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        init = getattr(lib, "nvmlInit_v2", None) or getattr(lib, "nvmlInit", None)
        if init is not None and init() == 0:
            _LIB = lib
            break
    return _LIB


def _call(fn_name: str, *args) -> bool:
    lib = library()
    fn = getattr(lib, fn_name, None) if lib is not None else None
    return fn is not None and fn(*args) == 0


def driver_version() -> Optional[str]:
    buf = ctypes.create_string_buffer(96)
    return buf.value.decode() if _call("nvmlSystemGetDriverVersion", buf, ctypes.c_uint(96)) else None


def cuda_driver_version() -> Optional[int]:
    """The CUDA version the driver supports, as CUDA encodes it (12020 = 12.2)."""
    v = ctypes.c_int()
    return v.value if _call("nvmlSystemGetCudaDriverVersion_v2", ctypes.byref(v)) or \
        _call("nvmlSystemGetCudaDriverVersion", ctypes.byref(v)) else None


def handles() -> List[Any]:
    count = ctypes.c_uint()
    if not (_call("nvmlDeviceGetCount_v2", ctypes.byref(count)) or _call("nvmlDeviceGetCount", ctypes.byref(count))):
        return []
    out = []
    for i in range(count.value):
        h = ctypes.c_void_p()
        if _call("nvmlDeviceGetHandleByIndex_v2", ctypes.c_uint(i), ctypes.byref(h)):
            out.append(h)
    return out


def _uint(fn_name: str, handle, *extra) -> Optional[int]:
    v = ctypes.c_uint()
    return v.value if _call(fn_name, handle, *extra, ctypes.byref(v)) else None


def device(handle) -> Dict[str, Any]:
    """Name, compute capability and memory of one GPU."""
    name = ctypes.create_string_buffer(96)
    major, minor = ctypes.c_int(), ctypes.c_int()

    class Memory(ctypes.Structure):
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

    mem = Memory()
    return {"name": name.value.decode() if _call("nvmlDeviceGetName", handle, name, ctypes.c_uint(96)) else None,
            "compute_capability": f"{major.value}.{minor.value}"
            if _call("nvmlDeviceGetCudaComputeCapability", handle, ctypes.byref(major), ctypes.byref(minor)) else None,
            "memory_bytes": mem.total if _call("nvmlDeviceGetMemoryInfo", handle, ctypes.byref(mem)) else None}


def clocks(handle) -> Dict[str, Any]:
    """Clocks (MHz), performance state (P0 fastest ... P12 idle), power (W) and throttle reasons now."""
    reasons = ctypes.c_ulonglong()
    has_reasons = _call("nvmlDeviceGetCurrentClocksEventReasons", handle, ctypes.byref(reasons)) or \
        _call("nvmlDeviceGetCurrentClocksThrottleReasons", handle, ctypes.byref(reasons))
    power = _uint("nvmlDeviceGetPowerUsage", handle)
    limit = _uint("nvmlDeviceGetEnforcedPowerLimit", handle)
    pstate = ctypes.c_int()
    return {"sm_mhz": _uint("nvmlDeviceGetClockInfo", handle, ctypes.c_int(CLOCK_SM)),
            "memory_mhz": _uint("nvmlDeviceGetClockInfo", handle, ctypes.c_int(CLOCK_MEM)),
            "max_sm_mhz": _uint("nvmlDeviceGetMaxClockInfo", handle, ctypes.c_int(CLOCK_SM)),
            "pstate": f"P{pstate.value}" if _call("nvmlDeviceGetPerformanceState", handle, ctypes.byref(pstate)) else None,
            "power_w": round(power / 1000, 1) if power is not None else None,
            "power_limit_w": round(limit / 1000, 1) if limit is not None else None,
            "throttle": [text for bit, text in THROTTLE_REASONS.items() if reasons.value & bit] if has_reasons else None}
