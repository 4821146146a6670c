"""Rig script: record TensorRT 8.6 plan and timing-cache headers, and check graphfix doctor against TensorRT.

    python benchmarks/rig_doctor.py OUT_DIR [--head-bytes 4096]

On a machine with TensorRT (8.6 API; Python 3.9 on the rig) and a GPU it builds a one-layer
engine (x[1,4] -> ReLU -> y) four ways -- default, FP16, hardware compatibility AMPERE_PLUS,
version compatible -- plus a timing cache, and writes to OUT_DIR:

- NAME.head: the first --head-bytes bytes of each plan/cache (small files to commit as
  tests/data/doctor/rig/; tests/test_doctor.py::test_rig_8_6_headers reads them);
- manifest.json (schema graphfix.rig_doctor/1): TensorRT's version (and the full version strings
  found in libnvinfer, an independent source for the build number), the GPU (compute capability,
  SM count), each file's real size and settings, whether TensorRT deserializes it, and "edits":
  copies of the default plan/cache with one header field changed (the container's and the engine
  stream's version patch, the stream's serialization version, compute capability minor, SM count;
  the cache's serialization version) or cut short, each deserialized by
  TensorRT in a child process, with TensorRT's own messages next to graphfix doctor's verdict --
  the evidence that the fields graphfix reads are the ones TensorRT checks;
- doctor.json / doctor_files.json: `graphfix doctor --json` here, and on the full plans/cache.

Deserializing runs in a child (``--deserialize FILE``): a damaged plan may crash TensorRT.
Exit code 0 when it ran, 2 when TensorRT or a GPU is missing.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional

SCHEMA = "graphfix.rig_doctor/1"
HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN_I32 = 0x18007

sys.path.insert(0, os.path.dirname(HERE))   # graphfix from this checkout, in child mode too
from graphfix.doctor import environment  # noqa: E402
from graphfix.doctor.probe import message_logger  # noqa: E402


def deserialize(path: str) -> Dict[str, Any]:
    """Child mode: load a plan (or a timing cache) with TensorRT and report its messages."""
    import tensorrt as trt
    messages: List[str] = []
    logger = message_logger(trt, messages)
    data = open(path, "rb").read()
    if path.endswith(".timing-cache"):
        builder = trt.Builder(logger)
        config = builder.create_builder_config()
        cache = config.create_timing_cache(data)
        ok = cache is not None and config.set_timing_cache(cache, False)
        return {"ok": bool(ok), "messages": messages}
    runtime = trt.Runtime(logger)
    if hasattr(runtime, "engine_host_code_allowed"):   # version-compatible plans carry a lean runtime
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(data)
    return {"ok": engine is not None, "messages": messages}


def build(trt, logger, *, fp16=False, hardware=None, version_compatible=False, cache_bytes=b""):
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    x = network.add_input("x", trt.float32, (1, 4))
    y = network.add_activation(x, trt.ActivationType.RELU).get_output(0)
    y.name = "y"
    network.mark_output(y)
    config = builder.create_builder_config()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if hardware:
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, hardware)
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    plan = builder.build_serialized_network(network, config)
    return (bytes(plan) if plan is not None else None), bytes(config.get_timing_cache().serialize())


def library_versions(trt) -> List[str]:
    """Full version strings (8.6.0.12) inside libnvinfer: where the build number can be read."""
    found = set()
    roots = [os.path.dirname(trt.__file__)]
    try:
        import tensorrt_libs
        roots.append(os.path.dirname(tensorrt_libs.__file__))
    except ImportError:
        pass
    major, minor = trt.__version__.split(".")[:2]
    pattern = re.compile(rb"(?<![\d.])%s\.%s\.\d+\.\d+(?![\d.])" % (major.encode(), minor.encode()))
    for root in roots:
        for lib in glob.glob(os.path.join(root, "libnvinfer.so*")):
            with open(lib, "rb") as f:
                found.update(m.decode() for m in pattern.findall(f.read()))
    return sorted(found)


def gpu_facts() -> Dict[str, Any]:
    gpus = environment.gpus()
    return gpus[0] if gpus else {}


def child(path: str) -> Dict[str, Any]:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--deserialize", path],
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    return {"ok": False, "crashed": proc.returncode, "messages": (proc.stderr or "").strip().splitlines()[-3:]}


def doctor(paths: List[str]) -> Dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "graphfix", "doctor", "--json", *paths],
                          capture_output=True, text=True, timeout=600, cwd=os.path.dirname(HERE))
    try:
        return {"exit_code": proc.returncode, "result": json.loads(proc.stdout)}
    except ValueError:
        return {"exit_code": proc.returncode, "stderr": proc.stderr.strip().splitlines()[-3:]}


def token_offset(data: bytes, *values: int) -> Optional[int]:
    """Offset of the value of the first i32 token run equal to `values` (e.g. cc major, cc minor)."""
    needle = b"".join(struct.pack("<Ii", TOKEN_I32, v) for v in values)
    at = data.find(needle, 0, 1024)
    return None if at < 0 else at + 4


def edits(default_plan: bytes, cache: bytes, gpu: Dict[str, Any]) -> Dict[str, bytes]:
    out: Dict[str, bytes] = {}
    patched = bytearray(default_plan)
    patched[26] += 1                                  # version patch byte
    out["version-patch-plus-1.plan"] = bytes(patched)
    engine, = struct.unpack_from("<Q", default_plan, 40)   # the "NGNE" section's offset
    if default_plan[engine:engine + 4] == b"ptrt":          # its stream repeats the version as u8 tokens
        patched = bytearray(default_plan)
        patched[engine + 24 + 2 * 5 + 4] += 1
        out["inner-version-patch-plus-1.plan"] = bytes(patched)
        patched = bytearray(default_plan)
        patched[engine + 8] += 1                          # the stream's serialization version (236)
        out["serialization-version-plus-1.plan"] = bytes(patched)
    if gpu.get("compute_capability"):
        major, minor = (int(p) for p in gpu["compute_capability"].split("."))
        at = token_offset(default_plan, major, minor)
        if at is not None:
            patched = bytearray(default_plan)
            struct.pack_into("<i", patched, at + 8, minor + 1)      # cc minor token's value
            out["cc-minor-plus-1.plan"] = bytes(patched)
        sms = gpu.get("sm_count")
        at = token_offset(default_plan, sms) if sms else None
        if at is not None:
            patched = bytearray(default_plan)
            struct.pack_into("<i", patched, at, sms - 2)
            out["sm-count-minus-2.plan"] = bytes(patched)
    out["cut-in-half.plan"] = default_plan[:len(default_plan) // 2]
    patched = bytearray(cache)
    struct.pack_into("<Q", patched, 8, 232)           # serialization version of TensorRT 8.5
    out["serialization-232.timing-cache"] = bytes(patched)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", nargs="?")
    ap.add_argument("--head-bytes", type=int, default=4096)
    ap.add_argument("--deserialize", metavar="FILE", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.deserialize:
        print(json.dumps(deserialize(args.deserialize)), flush=True)
        return 0
    if not args.out_dir:
        ap.error("OUT_DIR is required")
    try:
        import tensorrt as trt
    except ImportError as exc:
        print(f"rig_doctor: TensorRT is not importable: {exc}", file=sys.stderr)
        return 2
    gpu = gpu_facts()
    if not gpu:
        print("rig_doctor: no GPU", file=sys.stderr)
        return 2
    os.makedirs(args.out_dir, exist_ok=True)
    messages: List[str] = []
    logger = message_logger(trt, messages)
    manifest: Dict[str, Any] = {
        "schema": SCHEMA, "trt_version": trt.__version__, "library_versions": library_versions(trt),
        "gpu": {k: gpu.get(k) for k in ("name", "compute_capability", "sm_count", "memory_bytes")},
        "files": {}, "edits": {}}
    builds = {"trt-default": {}, "trt-fp16": {"fp16": True},
              "trt-hwcompat-ampere-plus": {"hardware": "AMPERE_PLUS"},
              "trt-version-compatible": {"version_compatible": True}}
    with tempfile.TemporaryDirectory(prefix="rig-doctor-") as work:
        full: List[str] = []
        cache = b""
        default_plan = b""
        for name, settings in builds.items():
            del messages[:]
            try:
                plan, cache_out = build(trt, logger, **settings)
            except Exception as exc:          # e.g. VERSION_COMPATIBLE without the lean runtime library
                plan, cache_out = None, b""
                messages.append(f"{type(exc).__name__}: {exc}")
            if plan is None:
                manifest["files"][name] = {"built": False, "settings": settings, "messages": messages[-5:]}
                print(f"{name}: build failed: {messages[-1:] or '?'}")
                continue
            if name == "trt-default":
                default_plan, cache = plan, cache_out
            path = os.path.join(work, name + ".plan")
            open(path, "wb").write(plan)
            full.append(path)
            head = name + ".plan.head"
            open(os.path.join(args.out_dir, head), "wb").write(plan[:args.head_bytes])
            manifest["files"][head] = {"kind": "plan", "file_size": len(plan), "settings": settings,
                                       "hardware_compatibility": settings.get("hardware", "NONE"),
                                       "version_compatible": bool(settings.get("version_compatible")),
                                       "deserializes": child(path)}
            print(f"{name}: {len(plan)} bytes, deserializes: {manifest['files'][head]['deserializes']['ok']}")
        if cache:
            path = os.path.join(work, "trt.timing-cache")
            open(path, "wb").write(cache)
            full.append(path)
            open(os.path.join(args.out_dir, "trt.timing-cache.head"), "wb").write(cache[:args.head_bytes])
            manifest["files"]["trt.timing-cache.head"] = {"kind": "timing-cache", "file_size": len(cache),
                                                          "deserializes": child(path)}
            manifest["serialization_version"] = struct.unpack_from("<Q", cache, 8)[0]
        if default_plan:
            manifest["trt_build_version"] = ".".join(str(b) for b in default_plan[24:28])
            for name, data in edits(default_plan, cache, gpu).items():
                path = os.path.join(work, "edit-" + name)
                open(path, "wb").write(data)
                seen = doctor([path])
                manifest["edits"][name] = {"tensorrt": child(path), "doctor_exit_code": seen["exit_code"],
                                           "doctor": (seen.get("result") or {}).get("files") or seen.get("stderr")}
                print(f"edit {name}: TensorRT ok={manifest['edits'][name]['tensorrt']['ok']}, "
                      f"doctor exit {seen['exit_code']}")
        json.dump(doctor([]), open(os.path.join(args.out_dir, "doctor.json"), "w"), indent=1)
        json.dump(doctor(full), open(os.path.join(args.out_dir, "doctor_files.json"), "w"), indent=1)
    with open(os.path.join(args.out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
