"""From facts to advice: the problems of an environment, and whether a plan or timing cache runs in it.

Every problem carries the symptom a user sees (TensorRT's own words where it has them), its cause
and its fix, one line each. The facts come from graphfix.doctor.environment.gather() and
graphfix.doctor.plan_header; nothing here touches the machine.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .plan_header import SERIALIZATION_VERSIONS, HeaderInfo

# lowest compute capability each line runs on (support matrices: 8.6 "SM 5.0 or higher"; 10.1 "SM 7.0
# or higher"; TensorRT-RTX 1.x: 7.5, 8.0, 8.6, 8.9, 12.0)
MIN_COMPUTE = {"8": (5, 0), "10": (7, 0), "rtx": (7, 5)}
# cudaError_t values TensorRT prints in "Cuda initialization failure with error N"
CUDA_INIT_ERRORS = {
    35: ("the NVIDIA driver is older than the CUDA runtime TensorRT was built with",
         "update the NVIDIA driver (or install a TensorRT build for the CUDA version the driver supports)"),
    100: ("no CUDA-capable GPU is visible to this process",
          "check nvidia-smi, CUDA_VISIBLE_DEVICES, and the container's --gpus flag"),
    804: ("the CUDA forward-compatibility package does not support this GPU",
          "remove cuda-compat from the library path, or update the driver"),
    999: ("the driver is in a bad state (often a kernel module that does not match the user-space driver)",
          "reboot, or reinstall the NVIDIA driver so the kernel module and libraries match"),
}


@dataclass
class Problem:
    severity: str        # "error" | "warning" | "info"
    symptom: str
    cause: str
    fix: str

    def to_json(self) -> Dict[str, str]:
        return {"severity": self.severity, "symptom": self.symptom, "cause": self.cause, "fix": self.fix}


def _cc(text: str) -> Tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def _trt_line(env: Dict[str, Any]) -> Optional[str]:
    version = trt_version(env)
    return version.split(".")[0] if version else None


def trt_version(env: Dict[str, Any]) -> Optional[str]:
    probe = env["tensorrt"].get("probe") or {}
    package = env["tensorrt"].get("package") or {}
    return probe.get("version") or package.get("version")


def environment_problems(env: Dict[str, Any]) -> List[Problem]:
    problems: List[Problem] = []
    trt, rtx, cuda, gpus = env["tensorrt"], env["tensorrt_rtx"], env["cuda"], env["gpus"]
    probe = trt.get("probe")
    if not trt["module"]:
        for path, error in sorted(((probe or {}).get("libraries") or {}).items()):
            if error:
                problems.append(_library_problem(path, error))
        if trt["libraries"]["nvinfer"]:
            problems.append(Problem("warning", "libnvinfer is here but Python cannot `import tensorrt`",
                                    "TensorRT's Python bindings are not installed for this interpreter",
                                    f"pip install tensorrt=={_lib_version(trt['libraries']['nvinfer'][0]) or 'X.Y.Z'} "
                                    "(the bindings must match the library)"))
        else:
            problems.append(Problem("info", "TensorRT is not installed",
                                    "no tensorrt Python package and no libnvinfer on the library path",
                                    "pip install 'graphfix[trt]' (TensorRT 8.6.0 wheels need Python 3.9) to validate on a GPU"))
    elif probe and not probe.get("imported"):
        problems.append(_import_problem(probe.get("error", "")))
    elif probe:
        for path, error in sorted((probe.get("libraries") or {}).items()):
            if error:
                problems.append(_library_problem(path, error))
        if not probe.get("builder"):
            problems.append(_builder_problem(" ".join(probe.get("builder_errors") or []) or "no message", gpus))
    elif trt["module"] and not trt["libraries"]["nvinfer_plugin"]:
        problems.append(Problem("warning", "libnvinfer_plugin was not found",
                                "TensorRT's plugin library is missing, so models with plugins (NMS, ROIAlign) cannot build",
                                "install the tensorrt-libs wheel matching tensorrt, or add its lib directory to the loader path"))
    problems.extend(_optional_library_problems(trt, _trt_line(env)))
    if rtx["module"] and rtx.get("probe") and not rtx["probe"].get("builder"):
        error = rtx["probe"].get("error") or " ".join(rtx["probe"].get("builder_errors") or []) or "no message"
        problems.append(Problem("warning", f"TensorRT-RTX does not start: {error}",
                                "its bindings or libraries do not load here",
                                "pip install the matching tensorrt-rtx-cu12-libs and -bindings versions"))
    problems.extend(_cuda_problems(cuda, gpus, trt["module"]))
    line = _trt_line(env)
    for gpu in gpus:
        problems.extend(_gpu_problems(gpu, line))
    if not gpus:
        usable_rtx = rtx["module"] and (rtx.get("probe") or {}).get("builder")
        problems.append(Problem(
            "info", "no NVIDIA GPU here",
            "NVML (the driver's management library) reports no GPU" if cuda.get("driver_version")
            else "no NVIDIA driver (libnvidia-ml / libcuda) is installed",
            "graphfix check works (static, from the profiles)"
            + ("; TensorRT-RTX parses and builds ahead of time here" if usable_rtx else "")
            + "; validate, --check trt and --until-parses need TensorRT and a GPU"))
    onnxruntime = env["onnxruntime"]
    if not onnxruntime.get("installed") or onnxruntime.get("error"):
        problems.append(Problem("error", "ONNX Runtime is " + ("broken: " + onnxruntime["error"]
                                                               if onnxruntime.get("error") else "not installed"),
                                "graphfix checks every rewrite with ONNX Runtime",
                                "pip install onnxruntime"))
    return problems


def _optional_library_problems(trt: Dict[str, Any], line: Optional[str]) -> List[Problem]:
    """Libraries TensorRT runs without, but some features need (the 8.6.0 wheel on the rig lacks two)."""
    libs = trt["libraries"]
    if not libs["nvinfer"] and not trt["module"]:
        return []
    out = []
    if not libs["nvinfer_vc_plugin"]:
        out.append(Problem("info", "libnvinfer_vc_plugin was not found",
                           "it holds the plugins a version-compatible plan may use (the TensorRT 8.6.0 wheel lacks it)",
                           "install TensorRT from the tar/deb packages where version-compatible plans need plugins"))
    if not libs.get("nvinfer_lean"):
        out.append(Problem("info", "libnvinfer_lean was not found: VERSION_COMPATIBLE builds fail "
                                   "('Unable to load library: libnvinfer_lean.so...')",
                           "the lean runtime that a version-compatible plan embeds is not installed",
                           "install the lean runtime (tensorrt-lean wheel or the tar/deb packages), or build without "
                           "VERSION_COMPATIBLE"))
    cudnn = libs["cudnn"]
    if line == "8" and cudnn and not any(re.search(r"cudnn(64_|\.so\.)8", p) for p in cudnn):
        out.append(Problem("warning", f"TensorRT 8.x uses cuDNN 8, only {os.path.basename(cudnn[0])} is here",
                           "layers and plugins that call cuDNN fail at build or run time (GroupNormalizationPlugin "
                           "aborted this way on the rig)",
                           "install cuDNN 8 (pip install nvidia-cudnn-cu12==8.9.*); graphfix validate already keeps "
                           "cuDNN tactics off"))
    return out


def _lib_version(path: str) -> Optional[str]:
    m = re.search(r"\.so\.(\d+(?:\.\d+)*)$", path)
    return m.group(1) if m and "." in m.group(1) else None


def _import_problem(error: str) -> Problem:
    missing = re.search(r"(lib[\w.+-]+\.so[\w.]*|[\w.-]+\.dll)", error)
    name = missing.group(1) if missing else None
    if name and "cudnn" in name:
        return Problem("error", f"import tensorrt fails: {error}", f"cuDNN ({name}) is not on the library path",
                       "install the cuDNN version TensorRT was built with (8.x for TensorRT 8.6) or add its directory "
                       "to LD_LIBRARY_PATH / PATH")
    if name and ("nvinfer" in name or "nvonnxparser" in name):
        return Problem("error", f"import tensorrt fails: {error}", f"TensorRT's own library {name} is not found",
                       "pip install tensorrt-libs of the same version as tensorrt, or add TensorRT's lib directory "
                       "to LD_LIBRARY_PATH (PATH on Windows)")
    if name and ("cudart" in name or "cublas" in name):
        return Problem("error", f"import tensorrt fails: {error}", f"the CUDA library {name} is not found",
                       "install the CUDA runtime TensorRT was built with (e.g. pip install nvidia-cuda-runtime-cu12)")
    return Problem("error", f"import tensorrt fails: {error}", "the TensorRT Python package is broken here",
                   "reinstall tensorrt for this Python version (8.6.0 wheels exist for Python 3.9)")


def _library_problem(path: str, error: str) -> Problem:
    if "vc_plugin" in path:
        which, effect = "libnvinfer_vc_plugin", "version-compatible plans with plugins cannot run"
    elif "plugin" in path:
        which, effect = "libnvinfer_plugin", "models with TensorRT plugins (EfficientNMS_TRT, ROIAlign_TRT, ...) cannot build"
    else:
        which, effect = "libnvinfer", "TensorRT cannot run at all"
    return Problem("error" if which == "libnvinfer" else "warning", f"{which} does not load: {error}",
                   f"a library it needs is missing, so {effect}",
                   "install the missing library (the message names it) or the tensorrt-libs wheel of the same version")


def _builder_problem(message: str, gpus: List[Dict[str, Any]]) -> Problem:
    m = re.search(r"cuda initialization failure with error:? ?(\d+)", message, re.I)
    if m and int(m.group(1)) in CUDA_INIT_ERRORS:
        cause, fix = CUDA_INIT_ERRORS[int(m.group(1))]
        return Problem("error", f"TensorRT's builder does not start: {message}", cause, fix)
    if not gpus:
        return Problem("info", f"TensorRT's builder does not start: {message}", "there is no GPU here",
                       "run validate on a machine with an NVIDIA GPU; `graphfix check` works without one")
    return Problem("error", f"TensorRT's builder does not start: {message}", "TensorRT cannot use the GPU",
                   "run nvidia-smi; check the driver and that the CUDA runtime fits it")


def _cuda_problems(cuda: Dict[str, Any], gpus: List[Dict[str, Any]], trt_present: bool) -> List[Problem]:
    runtime, driver = cuda.get("runtime"), cuda.get("driver")
    if not (runtime and driver):
        return []
    r, d = _cc(runtime), _cc(driver)
    if d[0] < r[0]:
        return [Problem("error", f"CUDA runtime {runtime} needs a newer driver than this one (supports CUDA {driver})",
                        "TensorRT then fails with 'Cuda initialization failure with error 35'",
                        f"update the NVIDIA driver to one for CUDA {r[0]}.x, or use a TensorRT built for CUDA {d[0]}.x")]
    if d < r:
        return [Problem("warning", f"CUDA runtime {runtime} is newer than the driver's CUDA {driver}",
                        "this works through CUDA minor-version compatibility, except for code that needs PTX JIT",
                        f"update the driver to one for CUDA {runtime} if a kernel fails to load")]
    return []


def _gpu_problems(gpu: Dict[str, Any], line: Optional[str]) -> List[Problem]:
    cc = gpu.get("compute_capability")
    if not cc:
        return []
    problems: List[Problem] = []
    name = f"GPU {gpu['index']} ({gpu.get('name') or '?'}, compute {cc})"
    floor = MIN_COMPUTE.get(line or "")
    if floor and _cc(cc) < floor:
        problems.append(Problem("error", f"{name} is below what TensorRT {line}.x supports",
                                f"TensorRT {line}.x runs on compute capability {floor[0]}.{floor[1]} or higher",
                                "use a newer GPU, or an older TensorRT that still supports it"))
    fast = gpu.get("fast") or {}
    if _cc(cc) < (5, 3):
        problems.append(Problem("warning", f"{name}: 'Network needs native FP16 and platform does not have native FP16'",
                                "this GPU has no native FP16 arithmetic",
                                "validate without --fp16 (FP32 or, on 8.0+, TF32)"))
    elif not fast.get("fp16"):
        problems.append(Problem("warning", f"{name}: FP16 runs at a fraction of FP32 speed",
                                "compute capability 6.1 executes FP16 at 1/64 rate; TensorRT reports no fast FP16",
                                "build FP32 engines on this GPU (INT8 is fast on 6.1)"))
    clocks = gpu.get("clocks") or {}
    slow = [r for r in clocks.get("throttle") or [] if "slowdown" in r or "power" in r]
    if slow:
        problems.append(Problem("warning", f"{name} is throttled now: {', '.join(slow)}",
                                "timings taken now are slower than the GPU's normal speed",
                                "let it cool down / check the power cap (nvidia-smi -q -d PERFORMANCE) before timing"))
    return problems


# ------------------------------------------------------------------------------- plan verdicts

@dataclass
class Verdict:
    runs_here: Optional[bool]          # None: cannot tell here (no TensorRT, no GPU)
    reason: str
    fix: Optional[str] = None
    warnings: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {"runs_here": self.runs_here, "reason": self.reason, "fix": self.fix, "warnings": self.warnings}


def verdict(info: HeaderInfo, env: Dict[str, Any]) -> Verdict:
    if info.product == "TensorRT-RTX":
        return _rtx_verdict(info, env)
    if info.engine_found is False:
        return Verdict(False, "the plan's section table names no engine: TensorRT says 'Engine not found in plan'",
                       "the file is damaged: rebuild the engine or copy it again")
    if info.safe_version:
        return Verdict(False, f"the engine stream's safe serialization version is {info.safe_version}, not 0: a plan for "
                              "TensorRT's safety runtime, or a damaged one; the standard runtime says 'Version tag "
                              "does not match'", "build the plan with the standard TensorRT builder")
    if info.trailing_bytes and not info.wrapper:
        return Verdict(False, f"the file has {info.trailing_bytes} bytes after the plan's end: TensorRT refuses it "
                              "('Serialization assertion plan->header.size == blobSize failed')",
                       f"cut the file to its first {info.declared_size} bytes (something appended data to it)")
    local = trt_version(env)
    made = info.version_text
    what = "plan" if info.kind == "plan" else "timing cache"
    if local is None:
        needed = made or (info.line if info.line else f"of serialization version {info.serialization_version}")
        return Verdict(None, f"no TensorRT here; this {what} needs TensorRT {needed}{_device_text(info)}",
                       f"install TensorRT {needed}" if made or info.line else
                       "use it with the TensorRT that wrote it (a timing cache is rebuilt automatically if not)")
    local_parts = tuple(int(p) for p in re.findall(r"\d+", local)[:4])
    if info.kind == "timing-cache":
        return _cache_verdict(info, local, local_parts)
    if info.version and local_parts != info.version[:len(local_parts)]:
        return Verdict(False, f"built with TensorRT {made}, this is TensorRT {local}: 'The engine plan file is not "
                              f"compatible with this version of TensorRT, expecting library version {local} got "
                              f"{made}, please rebuild.'",
                       f"rebuild the engine with TensorRT {local} from the ONNX model, or run it with TensorRT {made}"
                       + (" (from 8.6 on, plans built with the version-compatible flag run on later TensorRT "
                          "of the same major version)" if info.version >= (8, 6) else ""))
    expected = [n for n, (line, _) in SERIALIZATION_VERSIONS.items() if line == f"{local_parts[0]}.{local_parts[1]}"]
    if expected and info.serialization_version not in expected:
        return Verdict(False, f"serialization version {info.serialization_version}, TensorRT {local} reads {expected[0]}: "
                              f"'Version tag does not match. Note: Current Version: {expected[0]}, Serialized Engine "
                              f"Version: {info.serialization_version}'", f"rebuild the engine with TensorRT {local}")
    warnings = []
    if info.version and len(local_parts) < 4:
        warnings.append(f"the installed TensorRT reports {local} without its build number; the plan needs build "
                        f"{info.version[3]} exactly (TensorRT compares major, minor, patch and build)")
    gpus = env["gpus"]
    if not gpus:
        return Verdict(None, f"no GPU here; the plan runs{_device_text(info) or ' on the GPU model it was built on'}",
                       None, warnings)
    if not info.device:
        return Verdict(None, "the TensorRT version matches; the build device is not recorded in a layout graphfix "
                             "reads, so TensorRT will check it when it deserializes the plan", None, warnings)
    want = f"{info.device['cc_major']}.{info.device['cc_minor']}"
    have = gpus[0].get("compute_capability")
    if info.hardware_compatibility == "AMPERE_PLUS":
        if have and _cc(have) >= (8, 0):
            return Verdict(True, f"TensorRT {made} matches; a hardware-compatible (AMPERE_PLUS) plan, built on "
                                 f"compute {want}, runs on compute {have}", None, warnings)
        return Verdict(False, f"a hardware-compatible (AMPERE_PLUS) plan needs an Ampere or later GPU (compute 8.0+); "
                              f"GPU 0 is compute {have}", "rebuild the engine on this GPU", warnings)
    if have != want:
        return Verdict(False, f"built for compute {want}, GPU 0 is compute {have}: 'The engine plan file is generated "
                              f"on an incompatible device, expecting compute {have} got compute {want}, please rebuild.'",
                       "rebuild the engine on this GPU, or build it with a hardware-compatibility level "
                       "(8.6+: AMPERE_PLUS runs on any Ampere or later GPU); where a check is bypassed, such a "
                       "plan fails later with vague errors ('program not initialized', 'invalid device function')",
                       warnings)
    sms = gpus[0].get("sm_count")
    if sms is not None and sms != info.device.get("sm_count"):
        warnings.append(f"built on a GPU with {info.device['sm_count']} SMs, GPU 0 has {sms}: 'Using an engine plan "
                        "file across different models of devices is not recommended and is likely to affect "
                        "performance or even cause errors' - rebuild on this GPU model for reliable timings")
    return Verdict(True, f"TensorRT {made} and compute {want} match this machine", None, warnings)


def _cache_verdict(info: HeaderInfo, local: str, local_parts: Tuple[int, ...]) -> Verdict:
    made = _line_text(info)
    line = f"{local_parts[0]}.{local_parts[1]}" if len(local_parts) >= 2 else local
    known = SERIALIZATION_VERSIONS.get(info.serialization_version or -1)
    if known and not line.startswith(known[0]) and not known[0].startswith(line):
        return Verdict(False, f"made by TensorRT {known[0]}, this is TensorRT {local}: TensorRT ignores or rejects it",
                       f"delete the cache and let TensorRT {local} write a new one (graphfix validate does; "
                       "--timing-cache FILE picks where)")
    return Verdict(None, f"a timing cache of serialization version {info.serialization_version} ({made}); its full "
                         "version and device are not in the header: TensorRT checks them on load and rebuilds "
                         "the entries it cannot use",
                   "if TensorRT warns about the cache, delete it; a cache is only valid for the same TensorRT "
                   "(major, minor, patch, build) and GPU")


def _rtx_verdict(info: HeaderInfo, env: Dict[str, Any]) -> Verdict:
    rtx = env["tensorrt_rtx"]
    local = (rtx.get("probe") or {}).get("version") or (rtx.get("package") or {}).get("version")
    targets = ", ".join(info.compute_capabilities) or "none named"
    if info.kind == "timing-cache":
        return Verdict(None, "a TensorRT-RTX timing cache: TensorRT-RTX 1.2+ ignores timing caches (no-ops)",
                       "nothing to do; TensorRT-RTX keeps its own runtime cache")
    if local is None:
        return Verdict(False if not env["gpus"] else None,
                       f"a TensorRT-RTX {info.version_text} plan (targets {targets}); only TensorRT-RTX runs it, "
                       "and it is not installed here",
                       f"install TensorRT-RTX {info.version_text} on a GPU of compute {targets}; TensorRT "
                       "(tensorrt) cannot load TensorRT-RTX plans")
    local_parts = tuple(int(p) for p in re.findall(r"\d+", local)[:4])
    if info.version and local_parts != info.version[:len(local_parts)]:
        return Verdict(False, f"built with TensorRT-RTX {info.version_text}, this is TensorRT-RTX {local}",
                       f"rebuild the plan with TensorRT-RTX {local}")
    if not env["gpus"]:
        return Verdict(None, f"no GPU here; the plan runs on GPUs of compute {targets} with TensorRT-RTX {local}")
    have = env["gpus"][0].get("compute_capability")
    if have not in info.compute_capabilities:
        return Verdict(False, f"built for compute {targets}, GPU 0 is compute {have}: its kernels are not in the "
                              "plan (a run fails, at best with a vague 'program not initialized')",
                       f"rebuild with compute capability {have} among the builder's targets")
    return Verdict(True, f"TensorRT-RTX {local} and compute {have} are among the plan's targets")


def _line_text(info: HeaderInfo) -> str:
    if info.line:
        return info.line
    if info.serialization_version is not None:
        return f"(serialization version {info.serialization_version})"
    return "(unknown version)"


def _device_text(info: HeaderInfo) -> str:
    if info.hardware_compatibility == "AMPERE_PLUS":
        return " on a GPU of compute 8.0 or later (hardware-compatible plan)"
    return f" on a GPU of compute {', '.join(info.compute_capabilities)}" if info.compute_capabilities else ""
