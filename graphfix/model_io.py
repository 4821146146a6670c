"""Loading and saving models: paths, bytes, ModelProto or gs.Graph in; atomic writes out.

External data is read at load time, from the model's directory only (graphfix/external_data.py),
so nothing later opens a file. On save a model over 2 GiB (or when asked) is written with its
weights in ``OUT.data`` beside OUT; otherwise everything is embedded: OUT never points at the
input's files. Writes never replace a file the input reads, go through symlinks, and are atomic.
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import onnx

from .errors import InputError, OutputError
from .external_data import embed_external_data, external_tensors
from .weights import PROTOBUF_LIMIT, over_protobuf_limit, save_streaming  # noqa: F401  (model_io's API)


@dataclass
class LoadedModel:
    model: onnx.ModelProto
    source: str                      # path, "<bytes>", "<ModelProto>" or "<gs.Graph>"
    path: Optional[str] = None       # the file, when it came from one
    had_external_data: bool = False
    files: List[str] = field(default_factory=list)   # real paths read: model file, then external data


def load_model(src, keep_weights_in_files: bool = False) -> LoadedModel:
    """Accepts a path (str/PathLike), bytes, an onnx.ModelProto or an onnx_graphsurgeon Graph
    (or a LoadedModel, returned as it is). External data is read now, from the model's directory
    only; a model that is not a file cannot have any (there is no directory to read it from).

    `keep_weights_in_files`: big initializers stored as external data stay in their (validated,
    opened) files and are read on demand (graphfix/mapped_data.py); for a caller that saves the
    result with save_model, which writes their bytes (the CLI), or embeds them before handing the
    model out (pipeline.fix given a path)."""
    if isinstance(src, LoadedModel):
        return src
    if isinstance(src, (str, os.PathLike)):
        return _load_path(os.fspath(src), keep_weights_in_files)
    if isinstance(src, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(src)
        loaded = LoadedModel(copy, "<ModelProto>")
    elif isinstance(src, (bytes, bytearray, memoryview)):
        loaded = LoadedModel(_parse_bytes(bytes(src), "<bytes>"), "<bytes>")
    elif type(src).__name__ == "Graph" and type(src).__module__.startswith("onnx_graphsurgeon"):
        import onnx_graphsurgeon as gs
        loaded = LoadedModel(gs.export_onnx(src.copy()), "<gs.Graph>")
    else:
        raise InputError(f"<{type(src).__name__}>", "expected a path, bytes, onnx.ModelProto or gs.Graph")
    from .mapped_data import is_live
    # a ModelProto graphfix made from a file may keep weights in that file (read on demand)
    unread = [t for t in external_tensors(loaded.model) if loaded.source != "<ModelProto>" or not is_live(t)]
    if unread:
        raise InputError(loaded.source, f"tensor '{unread[0].name}' keeps its data in an external file, "
                                        "which only a model given by its path can be read from")
    return loaded


def _parse_bytes(data: bytes, source: str) -> onnx.ModelProto:
    if not data:
        raise InputError(source, "empty file, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError (a few flavours)
        raise InputError(source, f"not an ONNX model (protobuf parse failed: {exc})") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise InputError(source, "not an ONNX model (no graph in the protobuf)")
    if not model.opset_import:
        raise InputError(source, "ONNX model without opset_import")
    return model


def _load_path(path: str, keep_weights_in_files: bool = False) -> LoadedModel:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot be read ({_reason(exc)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(path, "not a file (a directory)")
    if not stat.S_ISREG(st.st_mode):   # a FIFO would block, a device would never end
        raise InputError(path, "not a regular file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InputError(path, f"cannot be read ({_reason(exc)})") from None
    model = _parse_bytes(data, path)
    external = bool(external_tensors(model))
    from .weights import BIG_TENSOR_BYTES
    keep_over = BIG_TENSOR_BYTES if keep_weights_in_files else None
    files = [os.path.realpath(path)] + (embed_external_data(model, path, keep_over) if external else [])
    return LoadedModel(model, path, path, external, files)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or " ".join(str(exc).split()) or type(exc).__name__


def _same_file(path: str, others: Sequence[str]) -> Optional[str]:
    """The one of `others` that `path` names (through symlinks and hard links), if any."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    for other in others:
        try:
            ot = os.stat(other)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (ot.st_dev, ot.st_ino):
            return other
    return None


def refuse_overwrite(path: str, source, allowed: bool = False) -> None:
    """OutputError when writing `path` would replace a file the input reads.

    `source` is the input's path or its LoadedModel. Replacing the model file itself is allowed
    with `allowed` (--in-place: the whole model is in memory by then); replacing one of its
    external-data files never is (the weights would be lost).
    """
    if source is None:
        return
    loaded = source if isinstance(source, LoadedModel) else None
    model_file = loaded.path if loaded else os.fspath(source)
    if model_file is None:
        return
    if _same_file(path, [model_file]):
        if not allowed:
            raise OutputError(f"{path}: refusing to overwrite the input model (pass --in-place to allow)")
        return
    data_files = loaded.files[1:] if loaded else []
    hit = _same_file(path, data_files)
    if hit:
        raise OutputError(f"{path}: refusing to overwrite '{hit}', external data the input model reads")


def check_output_path(path, what: str = "output") -> str:
    """The path to write (symlinks resolved for regular files), or OutputError saying why not.

    Called before any work so that a mistyped -o fails at once, and again when writing.
    """
    path = os.fspath(path)
    if not path:
        raise OutputError(f"empty {what} path")
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise OutputError(f"{path}: {what} is a directory, expected a file name")
    if not _is_regular_or_missing(path):
        return path            # /dev/stdout, a FIFO, a terminal: written directly
    target = os.path.realpath(path)    # write through a symlink: replace its target, keep the link
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise OutputError(f"{path}: {what} directory does not exist")
    try:
        name_max = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    if len(os.fsencode(os.path.basename(target))) > name_max:
        raise OutputError(f"{path}: {what} file name longer than {name_max} bytes")
    if not os.access(directory, os.W_OK):
        raise OutputError(f"{path}: {what} directory is not writable")
    return target


def _is_regular_or_missing(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return True


def write_atomic(path, data: bytes, what: str = "output") -> None:
    """Write `data` to `path`: temporary file beside the target, fsync, rename over it.

    A symlink is written through (its target is replaced); a non-regular target such as
    /dev/stdout or a FIFO is written directly. The file gets the umask's mode.
    """
    _write_files(os.fspath(path), lambda tmp: _write_bytes(tmp, data), what)


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _write_files(path: str, produce, what: str, direct=None) -> None:
    """`produce(tmp_path)` writes the file(s) under a temporary directory; rename them into place,
    the file named like `path` last. `direct(path)` writes a non-regular target (default: produce)."""
    target = check_output_path(path, what)
    try:
        if not _is_regular_or_missing(target):
            (direct or produce)(target)
            return
        out_dir, name = os.path.split(target)
        tmp_dir = tempfile.mkdtemp(prefix=".graphfix-", dir=out_dir)
        try:
            produce(os.path.join(tmp_dir, name))
            mode = 0o666 & ~_umask()   # what open() would give; onnx writes its data file 0600
            for produced in sorted(os.listdir(tmp_dir), key=lambda n: n == name):  # main file last
                with open(os.path.join(tmp_dir, produced), "rb") as f:
                    os.fsync(f.fileno())
                    os.fchmod(f.fileno(), mode)
                os.replace(os.path.join(tmp_dir, produced), os.path.join(out_dir, produced))
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write {what} ({_reason(exc)})") from None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_model(model: onnx.ModelProto, path: str, *, input_path=None,
               overwrite_input: bool = False, external_data: Optional[bool] = None) -> None:
    """Write `model` to `path` atomically (temporary file in the same directory, then rename).

    Refuses to replace a file the input reads (`input_path`: its path or LoadedModel) unless it is
    the model file and `overwrite_input`. With external data the weights go to ``<name>.data``
    beside the model (all of them: OUT never points at the input's files); both files are renamed
    into place only once fully written.
    """
    path = os.fspath(path)
    refuse_overwrite(path, input_path, overwrite_input)
    if external_data is None:
        external_data = over_protobuf_limit(model)
    target = check_output_path(path)
    if external_data and _is_regular_or_missing(target):
        refuse_overwrite(target + ".data", input_path, False)

    def produce(tmp_model: str) -> None:
        location = os.path.basename(tmp_model) + ".data"
        if external_data and save_streaming(model, tmp_model, location):
            return   # weights streamed one by one, no copy of the model
        if external_data:   # onnx moves the weights out of the proto it saves: give it a copy
            from .mapped_data import embedded_model
            copy = embedded_model(model)   # (a copy already when weights stayed in the input's files)
            if copy is model:
                copy = onnx.ModelProto()
                copy.CopyFrom(model)
            onnx.save_model(copy, tmp_model, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=location, size_threshold=1024)
        else:
            _write_model(tmp_model, model)

    def direct(stream_path: str) -> None:   # /dev/stdout and the like: one stream, no data file
        if over_protobuf_limit(model):
            raise OutputError(f"{path}: a model over 2 GiB needs a data file beside it, not a stream")
        _write_model(stream_path, model)
    _write_files(path, produce, "output", direct)


def _write_model(path: str, model: onnx.ModelProto) -> None:
    from .weights import write_embedded
    with open(path, "wb") as f:
        write_embedded(model, f)   # model.SerializeToString()'s bytes, without holding them all
