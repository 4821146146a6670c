"""Reading a model's external data safely: only files inside the model's directory, all at load time.

ONNX lets a tensor keep its bytes in another file (``data_location = EXTERNAL``, with ``location``,
``offset`` and ``length`` entries). graphfix reads every such tensor when it loads the model (in the
main graph, in If/Loop/Scan bodies, in Constant and other attribute tensors, in local functions)
and embeds the bytes, so no later stage (constant folding in ONNX Runtime, say) opens a file
relative to the current directory. Big initializers may instead stay in the files checked and
opened here, read through those descriptors (mapped_data.py). A location is refused when it could leave the model's directory:
an absolute path, ``..``, a URL, a symlink whose target lies outside, a file with several hard
links, or anything but a regular file (a FIFO would block, a device would never end).
"""
from __future__ import annotations

import os
import stat
from typing import Dict, Iterator, List, Optional, Tuple

import onnx

from .errors import InputError


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto a model holds: initializers, attribute tensors, sparse ones, at any depth."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node)


def _node_tensors(nodes) -> Iterator[onnx.TensorProto]:
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sparse in ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []) + \
                    list(attr.sparse_tensors):
                yield sparse.values
                yield sparse.indices
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for g in attr.graphs:
                yield from _graph_tensors(g)


def external_tensors(model: onnx.ModelProto) -> List[onnx.TensorProto]:
    return [t for t in all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]


def embed_external_data(model: onnx.ModelProto, model_path: str, keep_over: Optional[int] = None) -> List[str]:
    """Read every external tensor of `model` (loaded from `model_path`) into the model itself.

    With `keep_over`, main-graph initializers over that many bytes are checked the same way but
    stay in their files, read later through the descriptor opened now (graphfix/mapped_data.py).
    Returns the real paths of the files read. Raises InputError naming `model_path`, the tensor and
    the problem when a location is unsafe, missing, not a regular file or too short.
    """
    from . import mapped_data
    kept_alive = list(model.graph.initializer) if keep_over is not None else []   # stable id()s
    initializers = {id(t) for t in kept_alive}
    base = os.path.realpath(os.path.dirname(os.path.abspath(model_path)))
    # A symlinked model file (Hugging Face's cache links snapshot files to ../../blobs/) may also
    # read beside its target, where its own bytes live.
    bases = sorted({base, os.path.dirname(os.path.realpath(model_path))})
    opened: Dict[str, int] = {}
    done = False
    try:
        for tensor in external_tensors(model):
            info = {e.key: e.value for e in tensor.external_data}
            where = f"tensor '{tensor.name}': external data"
            real = _safe_location(base, bases, info.get("location", ""), model_path, where)
            if real not in opened:
                opened[real] = _open_regular(real, model_path, f"{where} '{info['location']}'")
            offset, length = _checked_range(opened[real], info, model_path, f"{where} '{info['location']}'")
            if id(tensor) in initializers and mapped_data.can_map(tensor, length, keep_over):
                mapped_data.keep_in_file(tensor, real, opened[real], offset, length)
                continue
            tensor.raw_data = _read_range(opened[real], offset, length, model_path,
                                          f"{where} '{info['location']}'")
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
        done = True
    finally:
        for fd in opened.values():
            if not done:           # refused: the model is not used, its kept tensors neither
                mapped_data.disown(fd)
            if not mapped_data.owns(fd):
                os.close(fd)
    return sorted(opened)


def _safe_location(base: str, bases, location: str, model_path: str, where: str) -> str:
    """The real path of `location` (relative to `base`) inside one of `bases`, or InputError."""
    def refuse(problem: str) -> InputError:
        return InputError(model_path, f"{where} '{location}' {problem}")
    if not location:
        raise InputError(model_path, f"{where} has no location")
    if "\x00" in location:
        raise refuse("contains a NUL byte")
    if "://" in location or location.lower().startswith("file:"):
        raise refuse("is a URL; only files beside the model are read")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise refuse("is an absolute path; only files beside the model are read")
    if ".." in location.replace("\\", "/").split("/"):
        raise refuse("leaves the model's directory ('..')")
    real = os.path.realpath(os.path.join(base, location))
    if not any(os.path.commonpath([b, real]) == b for b in bases):
        raise refuse("is a symlink leading outside the model's directory")
    return real


def _open_regular(real: str, model_path: str, where: str) -> int:
    """A read-only descriptor on a regular file; never blocks (a FIFO is refused, not opened)."""
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise InputError(model_path, f"{where} does not exist") from None
    except OSError as exc:
        raise InputError(model_path, f"{where} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise InputError(model_path, f"{where} is {kind}")
    if st.st_nlink > 1:   # like onnx's own loader: a hard link can lead anywhere on the disk
        raise InputError(model_path, f"{where} has {st.st_nlink} hard links; "
                                     "graphfix reads external data only from files with one")
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise InputError(model_path, f"{where} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):   # replaced between stat and open
        os.close(fd)
        raise InputError(model_path, f"{where} is not a regular file")
    return fd


def _checked_range(fd: int, info: Dict[str, str], model_path: str, where: str) -> Tuple[int, int]:
    """(offset, length) of the tensor's bytes, or InputError when they are not all in the file."""
    size = os.fstat(fd).st_size
    try:
        offset = int(info.get("offset") or 0)
        length = int(info["length"]) if info.get("length") not in (None, "") else size - offset
    except ValueError:
        raise InputError(model_path, f"{where}: offset/length are not integers") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise InputError(model_path, f"{where}: bytes {offset}..{offset + length} lie outside the "
                                     f"file ({size} bytes)")
    return offset, length


def _read_range(fd: int, offset: int, length: int, model_path: str, where: str) -> bytes:
    data = os.pread(fd, length, offset)
    while len(data) < length:   # a short read (rare): read on
        chunk = os.pread(fd, length - len(data), offset + len(data))
        if not chunk:
            raise InputError(model_path, f"{where}: file ended early")
        data += chunk
    return data
