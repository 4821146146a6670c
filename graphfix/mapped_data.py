"""Big weights left in the input's external-data files: read on demand, never copied into the model.

`graphfix fix` on a model with external data validates each data file when it loads the model
(external_data.py: inside the model's directory, a regular file with one link, long enough) and
keeps a read-only descriptor on it. A big initializer of the main graph then stays in the model as
a stub (name, type, dims, data_location EXTERNAL, location ``graphfix-mapped/N``) whose bytes are
read from that descriptor only where something needs them: a pass asking for the values, the
save (copied file to file, by the kernel), ONNX Runtime (given the validated file's real path,
which it maps read-only: the page cache's pages, shared and reclaimable, no copy per session).

On a 3 GiB model this is what keeps peak memory near the weights' size with the ONNX Runtime
checks on (benchmarks/bench_large.py). A stub's location is no file: anything that opened it
would fail (there is no ``graphfix-mapped`` beside any model graphfix writes).
"""
from __future__ import annotations

import itertools
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import TensorProto

MAPPED = "graphfix-mapped/"
_CHUNK = 1 << 24             # bytes per read where the kernel cannot copy file to file

# element types whose raw bytes numpy reads as they are (little-endian hosts only)
_NUMPY_TYPES = {
    TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float16,
    TensorProto.INT8: np.int8, TensorProto.INT16: np.int16, TensorProto.INT32: np.int32,
    TensorProto.INT64: np.int64, TensorProto.UINT8: np.uint8, TensorProto.UINT16: np.uint16,
    TensorProto.UINT32: np.uint32, TensorProto.UINT64: np.uint64, TensorProto.BOOL: np.bool_,
}


@dataclass(frozen=True)
class _Source:
    fd: int           # read-only descriptor opened (and checked) at load time
    real: str         # the file's real path, as validated
    offset: int
    length: int


_SOURCES: Dict[int, _Source] = {}
_FDS: Dict[int, str] = {}    # descriptor -> real path (one per file and load)
_TOKENS = itertools.count()  # never reused: a stub from before release() cannot read another file


def can_map(tensor: TensorProto, length: int, min_bytes: int) -> bool:
    """Whether `tensor` (external, `length` bytes in its file) can stay in its file."""
    dtype = _NUMPY_TYPES.get(tensor.data_type)
    return (dtype is not None and sys.byteorder == "little" and length > min_bytes
            and length == int(np.prod(tensor.dims, dtype=np.int64)) * np.dtype(dtype).itemsize)


def keep_in_file(tensor: TensorProto, real: str, fd: int, offset: int, length: int) -> None:
    """Turn the external tensor into a stub read from `fd` (a descriptor on `real`, now owned here)."""
    _FDS[fd] = real
    token = next(_TOKENS)
    _SOURCES[token] = _Source(fd, real, offset, length)
    del tensor.external_data[:]
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", f"{MAPPED}{token}"
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")


def owns(fd: int) -> bool:
    return fd in _FDS


def disown(fd: int) -> None:
    """Forget the stubs read from `fd` (their model was refused); the caller closes it."""
    _FDS.pop(fd, None)
    for token in [k for k, src in _SOURCES.items() if src.fd == fd]:
        del _SOURCES[token]


def is_mapped(tensor: TensorProto) -> bool:
    return (tensor.data_location == TensorProto.EXTERNAL and len(tensor.external_data) == 1
            and tensor.external_data[0].value.startswith(MAPPED))


def is_live(tensor: TensorProto) -> bool:
    """A stub made by this process whose file is still open."""
    try:
        return is_mapped(tensor) and int(tensor.external_data[0].value[len(MAPPED):]) in _SOURCES
    except ValueError:
        return False


def _source(tensor: TensorProto) -> _Source:
    try:
        return _SOURCES[int(tensor.external_data[0].value[len(MAPPED):])]
    except (KeyError, ValueError):
        raise ValueError(f"tensor '{tensor.name}': its weights are no longer available "
                         "(graphfix.mapped_data.release() was called)") from None


def nbytes(tensor: TensorProto) -> int:
    return _source(tensor).length


def has_mapped(model: onnx.ModelProto) -> bool:
    return any(is_mapped(t) for t in model.graph.initializer)


def mapped_bytes(model: onnx.ModelProto) -> int:
    return sum(nbytes(t) for t in model.graph.initializer if is_mapped(t))


def read_bytes(tensor: TensorProto) -> bytearray:
    src = _source(tensor)
    buf = bytearray(src.length)
    view, done = memoryview(buf), 0
    while done < src.length:
        if hasattr(os, "preadv"):    # straight into the buffer
            n = os.preadv(src.fd, [view[done:done + _CHUNK]], src.offset + done)
        else:
            chunk = os.pread(src.fd, min(_CHUNK, src.length - done), src.offset + done)
            n = len(chunk)
            view[done:done + n] = chunk
        if n <= 0:
            raise OSError(f"{src.real}: file ended early (was it truncated during the run?)")
        done += n
    return buf


def values(tensor: TensorProto) -> np.ndarray:
    """A fresh, writable array of the tensor's values (as numpy_helper.to_array gives)."""
    if not is_mapped(tensor):
        return onnx.numpy_helper.to_array(tensor)
    dtype = _NUMPY_TYPES[tensor.data_type]
    return np.frombuffer(read_bytes(tensor), dtype=dtype).reshape(tuple(tensor.dims))


def embedded(tensor: TensorProto) -> TensorProto:
    """A copy of the tensor with its bytes in raw_data (for what needs a self-contained proto)."""
    copy = header(tensor)
    copy.raw_data = bytes(read_bytes(tensor))
    return copy


def header(tensor: TensorProto) -> TensorProto:
    """The tensor's fields without its data, located DEFAULT: what an embedded copy holds but raw_data."""
    copy = TensorProto()
    copy.CopyFrom(tensor)
    del copy.external_data[:]
    copy.data_location = TensorProto.DEFAULT   # set, as embedding at load sets it: the same bytes out
    return copy


def copy_into(tensor: TensorProto, out) -> None:
    """Append the tensor's bytes to the binary file `out` at its position, file to file where the
    kernel can (no pass through this process's memory)."""
    src = _source(tensor)
    out.flush()
    fd_out, done = out.fileno(), 0
    try:
        position = out.tell()
    except OSError:    # a pipe (/dev/stdout): chunk by chunk through memory
        while done < src.length:
            chunk = os.pread(src.fd, min(_CHUNK, src.length - done), src.offset + done)
            if not chunk:
                raise OSError(f"{src.real}: file ended early (was it truncated during the run?)")
            out.write(chunk)
            done += len(chunk)
        return
    copy_range = getattr(os, "copy_file_range", None)
    while done < src.length:
        want = min(_CHUNK * 8, src.length - done)
        n = 0
        if copy_range is not None:
            try:
                n = copy_range(src.fd, fd_out, want, src.offset + done, position + done)
            except OSError:
                copy_range = None   # another file system, an old kernel: read and write
        if not n:
            chunk = os.pread(src.fd, min(want, _CHUNK), src.offset + done)
            if not chunk:
                raise OSError(f"{src.real}: file ended early (was it truncated during the run?)")
            n = os.pwrite(fd_out, chunk, position + done)
        done += n
    out.seek(position + done)


def embedded_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every mapped tensor's bytes embedded (a copy; the model itself if none)."""
    if not has_mapped(model):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for t in copy.graph.initializer:
        if is_mapped(t):
            t.CopyFrom(embedded(t))
    return copy


def ort_view(model: onnx.ModelProto) -> Optional[Tuple[onnx.ModelProto, str]]:
    """(a copy of `model` for ONNX Runtime, the folder to resolve its external data in), or None
    when nothing is mapped. Mapped tensors become ordinary external references to the files they
    came from (by real path: ONNX Runtime refuses locations that lead out of the folder, symlinks
    included); those in another folder than the first are embedded."""
    mapped = [t for t in model.graph.initializer if is_mapped(t)]
    if not mapped:
        return None
    folder = os.path.dirname(_source(mapped[0]).real)
    from .proto_fields import model_without_initializers
    view = model_without_initializers(model)
    for t in model.graph.initializer:
        if not is_mapped(t):
            view.graph.initializer.add().CopyFrom(t)
            continue
        src = _source(t)
        if os.path.dirname(src.real) != folder:
            view.graph.initializer.add().CopyFrom(embedded(t))
            continue
        ref = view.graph.initializer.add()
        ref.CopyFrom(t)
        del ref.external_data[:]
        for key, value in (("location", os.path.basename(src.real)), ("offset", str(src.offset)),
                           ("length", str(src.length))):
            entry = ref.external_data.add()
            entry.key, entry.value = key, value
    return view, folder


def read_on_demand(graph) -> None:
    """Give the constants of the gs.Graph `graph` that are stubs values read from their files
    (graphsurgeon's own LazyValues would hand the stub's location to onnx's loader)."""
    import onnx_graphsurgeon as gs
    from onnx_graphsurgeon.ir.tensor import LazyValues
    for tensor in graph.tensors().values():
        lazy = getattr(tensor, "_values", None)
        if isinstance(tensor, gs.Constant) and type(lazy) is LazyValues and is_mapped(lazy.tensor):
            tensor._values = _file_values()(lazy.tensor)


_FILE_VALUES = []


def _file_values():
    """graphsurgeon's LazyValues, loading from the file (a class made once, on first use: the
    module does not import graphsurgeon at import time)."""
    if not _FILE_VALUES:
        from onnx_graphsurgeon.ir.tensor import LazyValues

        class FileValues(LazyValues):
            def load(self):
                return values(self.tensor)
        _FILE_VALUES.append(FileValues)
    return _FILE_VALUES[0]


def closer(model: onnx.ModelProto, owner):
    """A callable that closes the files `model`'s stubs read from (once); it runs by itself when
    `owner` is garbage collected (a run that raised)."""
    import weakref
    fds = sorted({_source(t).fd for t in model.graph.initializer if is_mapped(t)})
    return weakref.finalize(owner, _close, fds)


def _close(fds) -> None:
    for fd in fds:
        disown(fd)
        try:
            os.close(fd)
        except OSError:
            pass


def files() -> List[str]:
    return sorted(set(_FDS.values()))


def release() -> None:
    """Close the descriptors; stubs made so far can no longer be read (end of a CLI run)."""
    for fd in _FDS:
        try:
            os.close(fd)
        except OSError:
            pass
    _FDS.clear()
    _SOURCES.clear()
