"""`graphfix doctor`: run it, and print its findings as text or JSON (schema graphfix.doctor/1).

Exit codes: 0 nothing wrong (and every file given can run here, or cannot be judged without a GPU);
1 an error-level problem, or a file that cannot run here; 2 a file that is not a plan or timing cache,
or is cut short.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence

from ..errors import InputError
from . import environment, verdict
from .plan_header import HeaderError, read_header

SCHEMA = "graphfix.doctor/1"


def capabilities(env: Dict[str, Any]) -> List[str]:
    """What graphfix can do here, given what is installed."""
    trt_ok = bool((env["tensorrt"].get("probe") or {}).get("builder"))
    rtx_ok = bool((env["tensorrt_rtx"].get("probe") or {}).get("builder"))
    out = ["graphfix check: static findings from the TensorRT profiles (always available)"]
    if trt_ok:
        out.append(f"TensorRT {verdict.trt_version(env)}: real parser in check, fix --until-parses, validate, "
                   "fix --check trt")
    else:
        out.append("no usable TensorRT builder: validate, fix --check trt and --until-parses are unavailable")
    if rtx_ok:
        out.append("TensorRT-RTX: the 11.x ONNX parser and ahead-of-time builds, no GPU needed "
                   "(its plans run only under TensorRT-RTX)")
    return out


def diagnose(paths: Sequence[str] = (), *, env: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The doctor's findings as JSON-ready data. Raises HeaderError for a file that is not a plan/cache."""
    env = environment.gather() if env is None else env
    files = []
    for path in paths:
        info = read_header(path)
        files.append({"header": info.to_json(), "verdict": verdict.verdict(info, env).to_json()})
    problems = [p.to_json() for p in verdict.environment_problems(env)]
    return {"schema": SCHEMA, "environment": env, "problems": problems, "capabilities": capabilities(env),
            "files": files}


def exit_code(result: Dict[str, Any]) -> int:
    bad = any(p["severity"] == "error" for p in result["problems"])
    bad = bad or any(f["verdict"]["runs_here"] is False for f in result["files"])
    return 1 if bad else 0


def _libs(paths: List[str]) -> str:
    return paths[0] + (f" (+{len(paths) - 1} more)" if len(paths) > 1 else "") if paths else "not found"


def text(result: Dict[str, Any]) -> str:
    env = result["environment"]
    trt, rtx, cuda = env["tensorrt"], env["tensorrt_rtx"], env["cuda"]
    probe = trt.get("probe") or {}
    lines = [f"graphfix doctor ({env['platform']}, Python {env['python']})", "TensorRT"]
    version = verdict.trt_version(env)
    lines.append(f"  version               {version or 'not installed'}"
                 + (f" (module {probe['file']})" if probe.get("file") else ""))
    for role in ("nvinfer", "nvinfer_plugin", "nvinfer_vc_plugin", "nvinfer_lean", "nvonnxparser", "cudnn"):
        status = ""
        for path, error in (probe.get("libraries") or {}).items():
            if trt["libraries"][role] and path == trt["libraries"][role][0]:
                status = "  loads" if error is None else f"  DOES NOT LOAD: {error}"
        lines.append(f"  lib{role:<18} {_libs(trt['libraries'][role])}{status}")
    if trt["module"]:
        started = "yes" if probe.get("builder") else f"no ({probe.get('error') or '; '.join(probe.get('builder_errors') or [])})"
        lines.append(f"  builder starts        {started}")
        fast = [k.replace("platform_has_", "").replace("fast_", "") for k, v in probe.items()
                if k.startswith("platform_has_") and v]
        if probe.get("builder"):
            lines.append(f"  TensorRT says fast: {', '.join(fast) or 'none'}")
        for path in probe.get("loaded") or []:
            lines.append(f"  loaded                {path}")
    rtx_probe = rtx.get("probe") or {}
    rtx_version = rtx_probe.get("version") or (rtx.get("package") or {}).get("version")
    lines.append(f"TensorRT-RTX     {rtx_version or 'not installed'}"
                 + (f", builder starts: {'yes' if rtx_probe.get('builder') else 'no'}" if rtx["module"] else "")
                 + (f" ({_libs(rtx['libraries']['tensorrt_rtx'])})" if rtx["libraries"]["tensorrt_rtx"] else ""))
    lines.append(f"CUDA             runtime {cuda['runtime'] or 'not found'}"
                 + (f" ({cuda['runtime_library']})" if cuda.get("runtime_library") else "")
                 + f", driver supports {cuda['driver'] or '-'}"
                 + (f" (driver {cuda['driver_version']})" if cuda.get("driver_version") else ""))
    if not env["gpus"]:
        lines.append("GPUs             none")
    for gpu in env["gpus"]:
        fast = ", ".join(k.upper() for k, v in (gpu.get("fast") or {}).items() if v) or "none"
        mem = f"{gpu['memory_bytes'] / 2**30:.0f} GiB" if gpu.get("memory_bytes") else "? GiB"
        clocks = gpu.get("clocks") or {}
        lines.append(f"GPU {gpu['index']}            {gpu.get('name')}, compute {gpu.get('compute_capability')}, {mem}"
                     + (f", {gpu['sm_count']} SMs" if gpu.get("sm_count") else "") + f"; fast: {fast}")
        lines.append(f"                 clocks SM {clocks.get('sm_mhz')}/{clocks.get('max_sm_mhz')} MHz, memory "
                     f"{clocks.get('memory_mhz')} MHz, {clocks.get('pstate')}, {clocks.get('power_w')} W "
                     f"of {clocks.get('power_limit_w')} W")
    ort = env["onnxruntime"]
    lines.append(f"ONNX Runtime     {ort.get('version') or 'not installed'}"
                 + (f"; providers: {', '.join(ort['providers'])}" if ort.get("providers") else ""))
    lines.append("graphfix here")
    lines.extend(f"  - {c}" for c in result["capabilities"])
    for p in result["problems"]:
        lines.append(f"{p['severity'].upper()}: {p['symptom']}")
        lines.append(f"  cause: {p['cause']}")
        lines.append(f"  fix:   {p['fix']}")
    for f in result["files"]:
        lines.extend(_file_text(f))
    return "\n".join(lines)


def _file_text(entry: Dict[str, Any]) -> List[str]:
    h, v = entry["header"], entry["verdict"]
    made = h["version"] or (f"{h['line']}" if h["line"] else "?")
    lines = [f"{h['path']}: {h['product']} {h['kind'].replace('-', ' ')}, version {made}"
             + (f", serialization version {h['serialization_version']}" if h["serialization_version"] is not None else "")]
    if h["compute_capabilities"]:
        label = "built on compute" if h["device"] else "targets compute"
        lines.append(f"  {label} {', '.join(h['compute_capabilities'])}"
                     + (f" ({h['device']['sm_count']} SMs, L2 {h['device']['l2_bytes'] // 2**20} MiB, "
                        f"clock {h['device']['clock_khz'] // 1000} MHz)" if h["device"] else ""))
    if h["hardware_compatibility"] not in (None, "NONE"):
        lines.append(f"  hardware compatibility {h['hardware_compatibility']}")
    if h["wrapper"]:
        lines.append(f"  note: {h['wrapper']}")
    lines.extend(f"  note: {n}" for n in h["notes"])
    state = {True: "runs here", False: "DOES NOT RUN HERE", None: "cannot tell here"}[v["runs_here"]]
    lines.append(f"  {state}: {v['reason']}")
    if v["fix"]:
        lines.append(f"  fix: {v['fix']}")
    lines.extend(f"  warning: {w}" for w in v["warnings"])
    return lines


def command(paths: Sequence[str], *, as_json: bool) -> int:
    """`graphfix doctor [FILES] [--json]`; HeaderError (an InputError) reaches the CLI: exit 2."""
    result = diagnose(paths)
    print(json.dumps(result, indent=2) if as_json else text(result))
    return exit_code(result)


__all__ = ["diagnose", "command", "text", "exit_code", "HeaderError", "InputError"]
