"""Loading and saving models: paths, bytes, ModelProto or gs.Graph in; atomic writes out.

External data is kept working: on load it is read from beside the model file; on save a model
over 2 GiB (or one that came with external data) is written with its weights in ``OUT.data``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Optional

import onnx

from .errors import InputError, OutputError

PROTOBUF_LIMIT = 2 * 1024 ** 3 - 1024 ** 2  # keep a margin under protobuf's 2 GiB


@dataclass
class LoadedModel:
    model: onnx.ModelProto
    source: str                      # path, "<bytes>", "<ModelProto>" or "<gs.Graph>"
    path: Optional[str] = None       # the file, when it came from one
    had_external_data: bool = False


def _uses_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def load_model(src) -> LoadedModel:
    """Accepts a path (str/PathLike), bytes, an onnx.ModelProto or an onnx_graphsurgeon Graph."""
    if isinstance(src, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(src)
        return LoadedModel(copy, "<ModelProto>")
    if isinstance(src, (bytes, bytearray, memoryview)):
        return LoadedModel(_parse_bytes(bytes(src), "<bytes>"), "<bytes>")
    if isinstance(src, (str, os.PathLike)):
        return _load_path(os.fspath(src))
    if type(src).__name__ == "Graph" and type(src).__module__.startswith("onnx_graphsurgeon"):
        import onnx_graphsurgeon as gs
        return LoadedModel(gs.export_onnx(src.copy()), "<gs.Graph>")
    raise InputError(f"<{type(src).__name__}>", "expected a path, bytes, onnx.ModelProto or gs.Graph")


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


def _load_path(path: str) -> LoadedModel:
    if not os.path.exists(path):
        raise InputError(path, "no such file")
    if not os.path.isfile(path):
        raise InputError(path, "not a file")
    with open(path, "rb") as f:
        data = f.read()
    model = _parse_bytes(data, path)
    external = _uses_external_data(model)
    if external:
        try:
            from onnx.external_data_helper import load_external_data_for_model
            load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
        except (OSError, ValueError) as exc:
            raise InputError(path, f"external data could not be read: {exc}") from None
    return LoadedModel(model, path, path, external)


def refuse_overwrite(path: str, input_path: Optional[str], allowed: bool) -> None:
    """OutputError when `path` is the input model's file and replacing it was not asked for."""
    if not allowed and input_path is not None and os.path.exists(path) and os.path.exists(input_path) \
            and os.path.samefile(path, input_path):
        raise OutputError(f"{path}: refusing to overwrite the input model (pass --in-place to allow)")


def save_model(model: onnx.ModelProto, path: str, *, input_path: Optional[str] = None,
               overwrite_input: bool = False, external_data: Optional[bool] = None) -> None:
    """Write `model` to `path` atomically (temporary file in the same directory, then rename).

    Refuses to replace `input_path` unless `overwrite_input`. With external data the weights go to
    ``<name>.data`` beside the model; both files are renamed into place only once fully written.
    """
    path = os.fspath(path)
    out_dir = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(out_dir):
        raise OutputError(f"{path}: output directory does not exist")
    refuse_overwrite(path, input_path, overwrite_input)
    if external_data is None:
        external_data = model.ByteSize() > PROTOBUF_LIMIT
    tmp_dir = tempfile.mkdtemp(prefix=".graphfix-", dir=out_dir)
    try:
        name = os.path.basename(path)
        tmp_model = os.path.join(tmp_dir, name)
        data_name = name + ".data"
        if external_data:
            onnx.save_model(model, tmp_model, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
        else:
            with open(tmp_model, "wb") as f:
                f.write(model.SerializeToString())
        for produced in sorted(os.listdir(tmp_dir), key=lambda n: n == name):  # model file last
            with open(os.path.join(tmp_dir, produced), "rb") as f:
                os.fsync(f.fileno())
            os.replace(os.path.join(tmp_dir, produced), os.path.join(out_dir, produced))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
