"""What this machine has for TensorRT: libraries, versions, GPUs, ONNX Runtime.

Nothing here imports tensorrt or tensorrt_rtx_bindings: they are imported, and their builders
started, in a child process (graphfix.doctor.probe). The CUDA runtime and driver are asked through
ctypes for their versions only (cudaRuntimeGetVersion, cuDriverGetVersion), which needs no GPU.
"""
from __future__ import annotations

import ctypes
import glob
import importlib.util
import json
import os
import platform
import subprocess
import sys
from typing import Any, Dict, List, Optional

from . import nvml

PROBE_TIMEOUT = 120
WINDOWS = sys.platform == "win32"
# the libraries doctor looks for, by role; globs cover every major version (.so.8, .so.10, _10.dll)
LIBRARY_GLOBS = {
    "nvinfer": ["nvinfer*.dll"] if WINDOWS else ["libnvinfer.so*"],
    "nvinfer_plugin": ["nvinfer_plugin*.dll"] if WINDOWS else ["libnvinfer_plugin.so*"],
    "nvinfer_vc_plugin": ["nvinfer_vc_plugin*.dll"] if WINDOWS else ["libnvinfer_vc_plugin.so*"],
    "nvonnxparser": ["nvonnxparser*.dll"] if WINDOWS else ["libnvonnxparser.so*"],
    "nvinfer_lean": ["nvinfer_lean*.dll"] if WINDOWS else ["libnvinfer_lean.so*"],
    "cudnn": ["cudnn64_*.dll"] if WINDOWS else ["libcudnn.so*"],
    "cudart": ["cudart64_*.dll"] if WINDOWS else ["libcudart.so*"],
    "tensorrt_rtx": ["tensorrt_rtx*.dll"] if WINDOWS else ["libtensorrt_rtx.so*"],
}
TRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu13", "tensorrt-libs",
                     "tensorrt-cu12-libs", "tensorrt-cu11-libs", "tensorrt-cu13-libs")
RTX_DISTRIBUTIONS = ("tensorrt-rtx-cu12-bindings", "tensorrt-rtx-cu12-libs", "tensorrt-rtx")


# ------------------------------------------------------------------------------------ libraries

def search_directories() -> List[str]:
    """Where the dynamic loader, and the TensorRT/CUDA wheels, put libraries, in the order searched."""
    dirs: List[str] = []
    for module in ("tensorrt_libs", "tensorrt", "tensorrt_rtx_libs", "tensorrt_rtx_bindings"):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            dirs.extend(spec.submodule_search_locations)
    for site in sys.path:
        dirs.extend(sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib"))))
        dirs.extend(sorted(glob.glob(os.path.join(site, "nvidia", "*", "bin"))))
    path_var = "PATH" if WINDOWS else "LD_LIBRARY_PATH"
    dirs.extend(p for p in os.environ.get(path_var, "").split(os.pathsep) if p)
    if not WINDOWS:
        dirs.extend(_ldconfig_dirs())
        dirs.extend(["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/cuda/lib64",
                     "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib64", "/usr/lib"])
    seen, out = set(), []
    for d in dirs:
        real = os.path.realpath(d)
        if real not in seen and os.path.isdir(real):
            seen.add(real)
            out.append(d)
    return out


def _ldconfig_dirs() -> List[str]:
    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return sorted({os.path.dirname(line.split("=>")[-1].strip()) for line in listing.splitlines() if "=>" in line})


def find_libraries(directories: Optional[List[str]] = None) -> Dict[str, List[str]]:
    """role -> every matching library file, first found first (symlinks to the same file once)."""
    directories = search_directories() if directories is None else directories
    found: Dict[str, List[str]] = {}
    for role, patterns in LIBRARY_GLOBS.items():
        files, seen = [], set()
        for d in directories:
            for pattern in patterns:
                for path in sorted(glob.glob(os.path.join(d, pattern))):
                    real = os.path.realpath(path)
                    if real not in seen and not path.endswith((".a", ".py")):
                        seen.add(real)
                        files.append(path)
        found[role] = files
    return found


# ----------------------------------------------------------------------------------- versions

def _distribution_version(names) -> Optional[Dict[str, str]]:
    from importlib import metadata
    for name in names:
        try:
            return {"distribution": name, "version": metadata.version(name)}
        except metadata.PackageNotFoundError:
            continue
    return None


def cuda_version_text(encoded: Optional[int]) -> Optional[str]:
    """12020 -> "12.2" (CUDA's encoding: 1000 * major + 10 * minor)."""
    if not encoded:
        return None
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def _version_call(path: str, function: str) -> Optional[int]:
    try:
        lib = ctypes.CDLL(path)
        fn = getattr(lib, function)
    except (OSError, AttributeError):
        return None
    value = ctypes.c_int()
    return value.value if fn(ctypes.byref(value)) == 0 and value.value > 0 else None


def cuda_versions(cudart: List[str]) -> Dict[str, Any]:
    """The CUDA runtime next to TensorRT (the first libcudart found) and what the driver supports."""
    runtime_lib = cudart[0] if cudart else None
    runtime = _version_call(runtime_lib, "cudaRuntimeGetVersion") if runtime_lib else None
    driver = nvml.cuda_driver_version()
    if driver is None:
        driver = _version_call("nvcuda.dll" if WINDOWS else "libcuda.so.1", "cuDriverGetVersion")
    return {"runtime": cuda_version_text(runtime), "runtime_library": runtime_lib,
            "driver": cuda_version_text(driver), "driver_version": nvml.driver_version()}


# ----------------------------------------------------------------------------------------- GPUs

def fast_precisions(cc: str) -> Dict[str, bool]:
    """Which precisions run fast on compute capability `cc` (CUDA programming guide arithmetic
    throughput table; TensorRT support matrices). 6.1 has FP16 at 1/64 rate: TensorRT reports no
    fast FP16 there; below 5.3 there is no native FP16 at all."""
    major, minor = (int(p) for p in cc.split("."))
    v = major * 10 + minor
    return {"fp16": v in (53, 60, 62) or v >= 70, "int8": v == 61 or v >= 70, "tf32": v >= 80,
            "bf16": v >= 80, "fp8": v >= 89}


def _cuda_devices() -> List[Dict[str, Any]]:
    """Name and SM count of each device the CUDA driver API sees (the SM count tells two models of
    one compute capability apart, as TensorRT's "different models of devices" warning does)."""
    try:
        cuda = ctypes.CDLL("nvcuda.dll" if WINDOWS else "libcuda.so.1")
    except OSError:
        return []
    count = ctypes.c_int()
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    out = []
    for i in range(count.value):
        dev, sms, name = ctypes.c_int(), ctypes.c_int(), ctypes.create_string_buffer(96)
        if cuda.cuDeviceGet(ctypes.byref(dev), i) != 0:
            continue
        cuda.cuDeviceGetName(name, 96, dev)
        ok = cuda.cuDeviceGetAttribute(ctypes.byref(sms), 16, dev) == 0   # CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
        out.append({"name": name.value.decode(errors="replace"), "sm_count": sms.value if ok else None})
    return out


def gpus() -> List[Dict[str, Any]]:
    out = []
    cuda_devices = _cuda_devices()
    for index, handle in enumerate(nvml.handles()):
        gpu = {"index": index, **nvml.device(handle)}
        twin = next((d for d in cuda_devices if d["name"] == gpu.get("name")), None)
        if twin is not None:                 # paired by name: NVML and CUDA may number GPUs differently
            cuda_devices.remove(twin)
            gpu["sm_count"] = twin["sm_count"]
        if gpu.get("compute_capability"):
            gpu["fast"] = fast_precisions(gpu["compute_capability"])
        gpu["clocks"] = nvml.clocks(handle)
        out.append(gpu)
    return out


# ------------------------------------------------------------------------------------ probing

def run_probe(module: str, libraries: List[str]) -> Dict[str, Any]:
    """Import `module` and start its builder in a child process; a crash is data, not an exception."""
    command = [sys.executable, "-m", "graphfix.doctor.probe", module, *libraries]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"module": module, "imported": False, "error": f"no answer within {PROBE_TIMEOUT} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
    return {"module": module, "imported": False, "error": f"the probe process died ({how}): {tail[0]}"}


def _onnxruntime() -> Dict[str, Any]:
    if importlib.util.find_spec("onnxruntime") is None:
        return {"installed": False}
    try:
        import onnxruntime
        return {"installed": True, "version": onnxruntime.__version__,
                "providers": list(onnxruntime.get_available_providers())}
    except Exception as exc:  # a broken install is reported, not raised
        return {"installed": True, "error": f"{type(exc).__name__}: {exc}"}


def gather(*, probe: bool = True) -> Dict[str, Any]:
    """Everything `graphfix doctor` reports about this machine (see README for the JSON schema)."""
    libs = find_libraries()
    trt: Dict[str, Any] = {"package": _distribution_version(TRT_DISTRIBUTIONS),
                           "module": importlib.util.find_spec("tensorrt") is not None,
                           "libraries": {k: libs[k] for k in ("nvinfer", "nvinfer_plugin", "nvinfer_vc_plugin",
                                                              "nvinfer_lean", "nvonnxparser", "cudnn")}}
    if probe and trt["module"]:
        plugins = [paths[0] for paths in (libs["nvinfer_plugin"], libs["nvinfer_vc_plugin"]) if paths]
        trt["probe"] = run_probe("tensorrt", plugins)
    elif probe and libs["nvinfer"]:          # TensorRT without its Python bindings: do its libraries load?
        trt["probe"] = run_probe("-", [paths[0] for paths in (libs["nvinfer"], libs["nvinfer_plugin"],
                                                               libs["nvinfer_vc_plugin"]) if paths])
    rtx: Dict[str, Any] = {"package": _distribution_version(RTX_DISTRIBUTIONS),
                           "module": importlib.util.find_spec("tensorrt_rtx_bindings") is not None,
                           "libraries": {"tensorrt_rtx": libs["tensorrt_rtx"]}}
    if probe and rtx["module"]:
        rtx["probe"] = run_probe("tensorrt_rtx_bindings", [])
    return {"platform": platform.platform(), "python": platform.python_version(), "tensorrt": trt,
            "tensorrt_rtx": rtx, "cuda": cuda_versions(libs["cudart"]), "gpus": gpus(),
            "onnxruntime": _onnxruntime()}
