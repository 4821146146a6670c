"""Read the header of a serialized TensorRT plan or timing cache without deserializing it.

TensorRT has no API for this (NVIDIA/TensorRT#3073, #4233), and deserializing needs the same
TensorRT and a GPU, which is exactly what a user with a failing plan may not have. The layouts
below were read from real files; each field says where it was seen. All integers little-endian.

Outer container of a plan (TensorRT >= 8.6 and TensorRT-RTX):

    0   magic      b"ftrt" (TensorRT) | b"vtrt" (TensorRT-RTX)
    8   u32        container version: 1 (TensorRT 8.6.1.6), 2 (TensorRT-RTX 1.7)
    16  u64        size of the whole plan in bytes; TensorRT 8.6 refuses a file of any other size
                   ("plan->header.size == blobSize", seen on the rig)
    24  4 x u8     TensorRT version: major, minor, patch, build (8,6,0,12 / 8,6,1,6 / 1,7,1,116); the
                   offsets Autoware's tensorrt_common reads on TensorRT 10, citing NVIDIA's answer
                   in NVIDIA/TensorRT#3073. TensorRT 8.6 does not check these bytes (the rig
                   deserialized copies with each of them changed): it checks the copy in the
                   engine stream below, which is the version graphfix reports
    ftrt: 32       section table: {u32 tag, u32 0, u64 offset, u64 size} ... ("NGNE" = engine)
    vtrt: 28       b"vtrt"; 32: u64 bit set of target compute capabilities, bit i = the i-th
                   of 7.5, 8.0, 8.6, 8.9, 12.0, 12.1 (the order of the builder's ComputeCapability
                   enum; measured by building one plan per target); 64: section table as above

The engine section, and a timing cache as a whole, is a "ptrt" stream:

    TensorRT:     b"ptrt", u32 0, u64 serialization version, u64 payload size, tokens...
    TensorRT-RTX: b"ptrt", u32 serialization version (100 in 1.7), u64 payload size, u32 0, tokens...

The serialization version is what TensorRT <= 8.5 compared ("Version tag does not match. Note:
Current Version: 213, Serialized Engine Version: 232") and all a timing cache records of its
maker. Before 8.6 a plan *was* such a stream, without the outer container. A plan's tokens start
with the version again (four u8 tokens, token code 0x18002) and, on TensorRT 8.6, the hardware
compatibility level (0 NONE, 1 AMPERE_PLUS: the one byte that differs between the rig's default
and AMPERE_PLUS plans) and the build device: compute capability major and minor, clock rate
(kHz), memory clock (kHz), bus width, L2 size, ..., SM count as i32/u64 tokens (codes
0x18007/0x18008): the rig's H100 reads 9, 0, 1980000, 2619000, 5120, 50 MiB, ..., 132 and a
public 8.6.1.6 plan built on an RTX 4090 reads 8, 9, 2520000, 10501000, 384, 72 MiB, ..., 128.
TensorRT-RTX's ahead-of-time plans leave that record zero: they carry the target bit set instead.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..errors import InputError

READ_BYTES = 64 * 1024            # the header and the token prefix fit easily
RTX_TARGETS = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")

# serialization version -> the TensorRT line that writes it, with where it was seen
SERIALIZATION_VERSIONS = {
    205: ("8.2", "NVIDIA/TensorRT#3073 (8.2.1.8)"),
    213: ("8.4", "NVIDIA/TensorRT#3073 (8.4.3.1), parser error 'Current Version: 213'"),
    232: ("8.5", "NVIDIA/TensorRT#3073 (8.5.3.1)"),
    236: ("8.6", "the rig's 8.6.0.12 plans and cache; a public 8.6.1.6 plan (smile2game/nvidia-game)"),
    240: ("10.10", "user report: TensorRT 10.10.0.31 refusing a plan of version 239"),
}

TOKEN_U8, TOKEN_I32, TOKEN_U64, TOKEN_F64 = 0x18002, 0x18007, 0x18008, 0x18009
_PAYLOAD = {TOKEN_U8: 1, TOKEN_I32: 4, TOKEN_U64: 8, TOKEN_F64: 8}
# TensorRT 8.6's build-device record, in token order after the version (see module docstring)
DEVICE_FIELDS_8_6 = ("hardware_compatibility_level", "cc_major", "cc_minor", "clock_khz", "memory_clock_khz",
                     "memory_bus_width", "l2_bytes", "persisting_l2_max_bytes", "shared_memory_per_block",
                     "shared_memory_per_sm", "unknown", "sm_count")


HARDWARE_LEVELS = {0: "NONE", 1: "AMPERE_PLUS"}    # nvinfer1::HardwareCompatibilityLevel in 8.6


class HeaderError(InputError):
    """Not a plan or timing cache, or one cut short: the message names the file and the problem."""


@dataclass
class HeaderInfo:
    path: str
    kind: str                                  # "plan" | "timing-cache"
    product: str                               # "TensorRT" | "TensorRT-RTX"
    layout: str                                # which layout was read, see the module docstring
    file_size: int
    declared_size: Optional[int] = None        # what the container says the whole file holds
    version: Optional[Tuple[int, ...]] = None  # (major, minor, patch, build) where recorded
    hardware_compatibility: Optional[str] = None   # "NONE" | "AMPERE_PLUS" (8.6 plans)
    trailing_bytes: int = 0                    # bytes after the plan's declared end (TensorRT refuses them)
    engine_found: Optional[bool] = None        # plans: the section table names an engine ("NGNE")
    safe_version: Optional[int] = None         # the engine stream's "safe" serialization version (0 = standard)
    serialization_version: Optional[int] = None
    line: Optional[str] = None                 # "8.6", from the version or the serialization version
    compute_capabilities: List[str] = field(default_factory=list)   # targets (RTX) or the build device
    device: Optional[Dict[str, int]] = None    # the build device's properties (8.6 plans)
    unknown_targets: List[int] = field(default_factory=list)        # RTX bits we cannot name
    notes: List[str] = field(default_factory=list)
    wrapper: Optional[str] = None              # e.g. an Ultralytics metadata prefix before the plan

    @property
    def version_text(self) -> Optional[str]:
        return ".".join(str(v) for v in self.version) if self.version else None

    def to_json(self) -> Dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "product": self.product, "layout": self.layout,
                "file_size": self.file_size, "declared_size": self.declared_size,
                "version": self.version_text, "serialization_version": self.serialization_version,
                "hardware_compatibility": self.hardware_compatibility, "trailing_bytes": self.trailing_bytes,
                "line": self.line, "compute_capabilities": self.compute_capabilities,
                "device": self.device, "unknown_targets": self.unknown_targets,
                "wrapper": self.wrapper, "notes": self.notes}


def read_header(path: str) -> HeaderInfo:
    """The header of the plan or timing cache at `path`; HeaderError when it is neither, or cut short."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            data = f.read(READ_BYTES)
    except IsADirectoryError:
        raise HeaderError(path, "is a directory, not a plan or timing cache") from None
    except OSError as exc:
        raise HeaderError(path, f"cannot be read ({exc.strerror or exc})") from None
    return parse_header(data, path=path, file_size=size)


def parse_header(data: bytes, *, path: str = "<bytes>", file_size: Optional[int] = None) -> HeaderInfo:
    """Parse the first bytes of a plan or timing cache (`file_size`: the whole file's size)."""
    file_size = len(data) if file_size is None else file_size
    if not data:
        raise HeaderError(path, "is empty, not a TensorRT plan or timing cache")
    magic = data[:4]
    if magic == b"ftrt":
        return _container(data, path, file_size, product="TensorRT")
    if magic == b"vtrt":
        return _container(data, path, file_size, product="TensorRT-RTX")
    if magic == b"ptrt":
        return _bare_stream(data, path, file_size)
    wrapped = _ultralytics_prefix(data)
    if wrapped is not None:
        info = parse_header(data[wrapped:], path=path, file_size=file_size - wrapped)
        info.wrapper = (f"Ultralytics .engine: {wrapped} bytes of JSON metadata before the plan; "
                        "TensorRT itself refuses the file ('magicTag' assertion), Ultralytics strips the prefix")
        return info
    raise HeaderError(path, _foreign(data))


# ------------------------------------------------------------------------------------- layouts

def _need(data: bytes, end: int, path: str, what: str) -> None:
    if len(data) < end:
        raise HeaderError(path, f"truncated: {len(data)} bytes, too short for the {what} ({end} bytes)")


def _container(data: bytes, path: str, file_size: int, *, product: str) -> HeaderInfo:
    rtx = product == "TensorRT-RTX"
    _need(data, 64 if rtx else 32, path, f"{product} plan header")
    container, = struct.unpack_from("<I", data, 8)
    declared, = struct.unpack_from("<Q", data, 16)
    version = tuple(data[24:28])
    info = HeaderInfo(path=path, kind="plan", product=product, file_size=file_size, declared_size=declared,
                      layout=f"{'vtrt' if rtx else 'ftrt'} container v{container}", version=version)
    info.line = f"{version[0]}.{version[1]}"
    if declared != file_size:
        if file_size < declared:
            raise HeaderError(path, f"truncated: the plan header declares {declared} bytes, the file has "
                                    f"{file_size} (an interrupted copy or download?)")
        info.trailing_bytes = file_size - declared
    if rtx:
        targets, = struct.unpack_from("<Q", data, 32)
        info.compute_capabilities = [cc for i, cc in enumerate(RTX_TARGETS) if targets >> i & 1]
        info.unknown_targets = [i for i in range(len(RTX_TARGETS), 64) if targets >> i & 1]
    engine = _section(data, 64 if rtx else 32, b"NGNE")
    info.engine_found = engine is not None
    if engine is None or engine + 24 > len(data) or data[engine:engine + 4] != b"ptrt":
        info.notes.append("engine section not found in the first bytes; version read from the container only")
        return info
    stream = _stream_header(data, engine, rtx)
    info.serialization_version = stream[0]
    if not rtx:
        info.safe_version, = struct.unpack_from("<I", data, engine + 4)   # 0: the standard runtime's plan
    tokens = _tokens(data, stream[1], limit=40)
    recorded = tuple(v for code, v in tokens[:4] if code == TOKEN_U8)
    if len(recorded) == 4:                     # the copy TensorRT checks (see the module docstring)
        info.version, info.line = recorded, f"{recorded[0]}.{recorded[1]}"
        if recorded != version:
            info.notes.append(f"the container's version bytes say {'.'.join(map(str, version))}, the engine "
                              f"stream {'.'.join(map(str, recorded))} (the one TensorRT checks)")
    if not rtx and info.version[:2] == (8, 6):
        _device_8_6(info, tokens[4:])
    elif not rtx:
        info.notes.append(f"the build device is not read for TensorRT {info.line} plans "
                          "(its record's layout is known for 8.6 only)")
    return info


def _bare_stream(data: bytes, path: str, file_size: int) -> HeaderInfo:
    """A "ptrt" stream on its own: a timing cache, or a plan from TensorRT <= 8.5."""
    _need(data, 24, path, "'ptrt' header")
    word, = struct.unpack_from("<I", data, 4)
    rtx = word != 0
    serialization, start = _stream_header(data, 0, rtx)
    payload, = struct.unpack_from("<Q", data, 8 if rtx else 16)
    declared = payload + start
    tokens = _tokens(data, start, limit=8)
    is_plan = len(tokens) >= 4 and all(code == TOKEN_U8 for code, _ in tokens[:4])
    info = HeaderInfo(path=path, kind="plan" if is_plan else "timing-cache",
                      product="TensorRT-RTX" if rtx else "TensorRT", file_size=file_size,
                      declared_size=declared, serialization_version=serialization,
                      layout=f"ptrt stream ({'RTX' if rtx else 'TensorRT'} form)")
    if file_size < declared:
        raise HeaderError(path, f"truncated: the {info.kind.replace('-', ' ')} header declares {declared} "
                                f"bytes, the file has {file_size}")
    if is_plan:
        info.version = tuple(v for _, v in tokens[:4])
        info.line = f"{info.version[0]}.{info.version[1]}"
        info.notes.append("a plan without the outer container: written by TensorRT 8.5 or older")
    else:
        known = SERIALIZATION_VERSIONS.get(serialization)
        info.line = "1.x" if rtx else (known[0] if known else None)
        info.notes.append("a timing cache records only its serialization version, not the full TensorRT "
                          "version nor the device; TensorRT checks both when it loads the cache")
    return info


def _stream_header(data: bytes, at: int, rtx: bool) -> Tuple[int, int]:
    """(serialization version, offset of the first token) of the "ptrt" stream at `at`."""
    if rtx:
        return struct.unpack_from("<I", data, at + 4)[0], at + 20
    return struct.unpack_from("<Q", data, at + 8)[0], at + 24


def _section(data: bytes, table: int, tag: bytes) -> Optional[int]:
    for at in range(table, min(len(data), table + 24 * 8) - 23, 24):
        entry = data[at:at + 4]
        if entry == b"\0\0\0\0":
            return None
        if entry == tag:
            return struct.unpack_from("<Q", data, at + 8)[0]
    return None


def _tokens(data: bytes, at: int, *, limit: int) -> List[Tuple[int, int]]:
    """The first tokens of a stream as (code, value); codes without a payload are markers (value 0)."""
    out: List[Tuple[int, int]] = []
    while len(out) < limit and at + 4 <= len(data):
        code, = struct.unpack_from("<I", data, at)
        if code >> 8 != 0x180:
            break
        width = _PAYLOAD.get(code, 0)
        if at + 4 + width > len(data):
            break
        raw = data[at + 4:at + 4 + width]
        out.append((code, int.from_bytes(raw, "little", signed=code == TOKEN_I32) if width else 0))
        at += 4 + width
    return out


def _device_8_6(info: HeaderInfo, tokens: List[Tuple[int, int]]) -> None:
    values = [v for code, v in tokens if code in (TOKEN_I32, TOKEN_U64)][:len(DEVICE_FIELDS_8_6)]
    if len(values) < len(DEVICE_FIELDS_8_6):
        info.notes.append("the build device's record was not found")
        return
    device = dict(zip(DEVICE_FIELDS_8_6, values))
    device.pop("unknown")
    level = device.pop("hardware_compatibility_level")
    info.hardware_compatibility = HARDWARE_LEVELS.get(level, f"unknown level {level}")
    if not (1 <= device["cc_major"] <= 20 and 0 <= device["cc_minor"] <= 9):
        info.notes.append("the build device's record does not look like one (layout changed?)")
        return
    info.device = device
    info.compute_capabilities = [f"{device['cc_major']}.{device['cc_minor']}"]


def _ultralytics_prefix(data: bytes) -> Optional[int]:
    """Length of an Ultralytics export's prefix (u32 length + JSON metadata), if that is what this is."""
    if len(data) < 8:
        return None
    length, = struct.unpack_from("<I", data, 0)
    if 2 <= length < 1 << 20 and data[4:5] == b"{" and data[4 + length:8 + length] in (b"ftrt", b"ptrt"):
        return 4 + length
    return None


def _foreign(data: bytes) -> str:
    head = data[:64]
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the plan itself: run `git lfs pull` to fetch the file"
    if head.startswith(b"\x08") and b"\x12" in head[:16]:
        return "looks like an ONNX model, not a serialized TensorRT plan (build an engine from it first)"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive, not a TensorRT plan or timing cache"
    if head.startswith(b"\x7fELF"):
        return "a shared library, not a TensorRT plan or timing cache"
    shown = head[:8].hex(" ")
    return (f"not a TensorRT plan or timing cache (first bytes {shown}; expected 'ftrt' or 'vtrt' for a "
            "plan, 'ptrt' for a timing cache or a TensorRT <= 8.5 plan)")
