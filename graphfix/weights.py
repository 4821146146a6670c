"""Keeping big weights out of copies: checks that read only names, types and shapes get a model
without the weight bytes, and a model over 2 GiB is saved by streaming its weights to the data file.

On a 0.5 GiB model (benchmarks/bench_large.py) the checker, strict shape inference and the
shape facts each serialized the whole model (2-4 transient copies); onnx.save with external data
needed a full copy of the model first.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import onnx
from onnx import TensorProto

from .mapped_data import is_mapped
from .proto_fields import copy_field, copy_fields, model_without_initializers

BIG_TENSOR_BYTES = 1 << 16   # smaller tensors stay: shape-like constants feed data propagation
_ALIGN = 4096                # page-aligned offsets, as onnx.save writes them (lets readers mmap)


def tensor_bytes(tensor: TensorProto) -> int:
    """The bytes a tensor's data takes, from its type and dims: upb's ByteSize encodes the message
    to measure it (a transient twice its size) and reading raw_data copies it."""
    if tensor.data_type == TensorProto.STRING:
        return sum(len(v) for v in tensor.string_data)
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 8
    return math.prod(tensor.dims) * itemsize    # (not np.prod: a numpy call per tensor took seconds)


def _is_big(tensor: TensorProto) -> bool:   # (weights left in the input's files are big by construction)
    return _is_stub(tensor) or is_mapped(tensor) or (tensor.data_location != TensorProto.EXTERNAL
                                                     and tensor_bytes(tensor) > BIG_TENSOR_BYTES)


def weightless_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose big initializers are graph inputs of the same type and shape.

    ONNX's checker and shape inference judge it as they judge the model (they read an initializer's
    type and dims, not its bytes), at a fraction of the memory, and over 2 GiB too.
    """
    big = [t for t in model.graph.initializer if _is_big(t)]
    if not big:
        return model
    skeleton = model_without_initializers(model)
    big_names = {t.name for t in big}
    skeleton.graph.initializer.extend(t for t in model.graph.initializer if t.name not in big_names)
    declared = {v.name for v in model.graph.input}
    for t in big:
        if t.name not in declared:
            skeleton.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return skeleton


@contextmanager
def weightless_graph(graph, subgraphs: bool = False) -> Iterator[Callable[..., None]]:
    """While inside, big constants of the gs.Graph `graph` export as dims and type only (no bytes).

    Yields `fill(model)`, which puts the bytes into a model exported inside, tensor by tensor: one
    copy of the weights, where graphsurgeon's export makes two (make_graph, then make_model).
    The constants' values are put back on exit. ``subgraphs``: stubs in If/Loop bodies' graphs
    too, for an export that only shape inference reads (never the checker, never filled).
    """
    import onnx_graphsurgeon as gs
    from onnx_graphsurgeon.ir.tensor import LazyValues
    swapped = []
    # only for graphs without subgraphs: an If/Loop body may read a big outer constant, and the stub
    # then reached ONNX's checker (silero_vad, a published model: every pass rolled back)
    graphs = list(_graphs(graph, gs))
    tensors = {id(t): t for g in (graphs if len(graphs) == 1 or subgraphs else []) for t in g.tensors().values()}
    for tensor in tensors.values():   # once each: a body reads the outer scope's own objects
        values = getattr(tensor, "_values", None)
        if isinstance(tensor, gs.Constant) and isinstance(values, (LazyValues, np.ndarray)) \
                and values.nbytes > BIG_TENSOR_BYTES:
            stub = TensorProto(name=tensor.name, data_type=_onnx_type(values), dims=list(values.shape))
            stub.data_location = TensorProto.EXTERNAL   # never read: inference needs type and dims
            entry = stub.external_data.add()
            entry.key, entry.value = "location", f"{_STUB}{len(swapped)}"
            swapped.append((tensor, values))
            tensor._values = LazyValues(stub)

    fill = _Filler(swapped)
    try:
        yield fill
    finally:
        for tensor, values in swapped:
            tensor._values = values


_STUB = "graphfix-weightless-stub/"


def _is_stub(tensor: TensorProto) -> bool:
    return (tensor.data_location == TensorProto.EXTERNAL and len(tensor.external_data) > 0
            and tensor.external_data[0].value.startswith(_STUB))


class _Filler:
    """Puts the bytes behind the stubs of an export back, tensor by tensor (subgraphs too)."""

    def __init__(self, sources):
        self.sources = sources     # [(gs.Constant, its real values)], indexed by the stub's location

    def source(self, init: TensorProto):
        return self.sources[int(init.external_data[0].value[len(_STUB):])] if _is_stub(init) else None

    def __call__(self, model: onnx.ModelProto, skip=frozenset()) -> None:
        from onnx_graphsurgeon.ir.tensor import LazyValues
        for g in _graph_protos(model.graph):
            for init in g.initializer:
                found = self.source(init)
                if found is None or (g is model.graph and init.name in skip):
                    continue
                tensor, values = found
                init.CopyFrom(values.tensor if isinstance(values, LazyValues)
                              else onnx.numpy_helper.from_array(values))
                init.name = tensor.name


def big_bytes(model: onnx.ModelProto) -> int:
    return sum(tensor_bytes(t) for t in model.graph.initializer if _is_big(t) and not _is_stub(t))


def approx_byte_size(model: onnx.ModelProto) -> int:
    """model.ByteSize() without encoding the weights (encoding 3 GiB to measure it took 2 GiB more
    before failing past protobuf's limit)."""
    return weightless_model(model).ByteSize() + big_bytes(model)


def export_in_place(model: onnx.ModelProto, export):
    """Make `model` itself the export of a graph imported from it, keeping in place (uncopied) the
    big initializers the graph still holds unchanged: one copy of the weights, not two.

    `export(place)` exports the graph with stubs and calls `place(exported, filler)`.
    Returns (model, undo, before): `undo()` puts the model back as it was (re-copying only the
    tensors the pass dropped) and returns it; `before` is a small stand-in of the model as it
    was (big initializers as stubs) for the structural checks.
    """
    from onnx_graphsurgeon.ir.tensor import LazyValues
    before = _stub_copy(model)
    kept = {}                      # new name -> index in model.graph.initializer

    def place(new: onnx.ModelProto, filler: _Filler) -> None:
        index = {id(t): i for i, t in enumerate(model.graph.initializer)}
        for init in new.graph.initializer:
            found = filler.source(init)
            if found and isinstance(found[1], LazyValues) and id(found[1].tensor) in index \
                    and index[id(found[1].tensor)] not in kept.values():
                kept[init.name] = index[id(found[1].tensor)]
        filler(new, skip=set(kept))
    new = export(place)
    inits = model.graph.initializer
    name_at = {i: name for name, i in kept.items()}
    removed = [inits[i] for i in range(len(inits)) if i not in name_at]   # held for undo, not copied
    for i in reversed([i for i in range(len(inits)) if i not in name_at]):
        del inits[i]
    for t, i in zip(inits, sorted(name_at)):
        t.name = name_at[i]
    added = 0
    for init in new.graph.initializer:
        if init.name not in kept:
            inits.add().CopyFrom(init)
            added += 1
    _replace_all_but_initializers(model, new)

    def undo() -> onnx.ModelProto:
        for _ in range(added):
            del model.graph.initializer[len(model.graph.initializer) - 1]
        for t, i in zip(model.graph.initializer, sorted(name_at)):
            t.name = before.graph.initializer[i].name
        for t in removed:
            model.graph.initializer.add().CopyFrom(t)
        _replace_all_but_initializers(model, before)
        return model
    return model, undo, before


def _replace_all_but_initializers(model: onnx.ModelProto, source: onnx.ModelProto) -> None:
    for fd in model.DESCRIPTOR.fields:
        if fd.name != "graph":
            model.ClearField(fd.name)
    for fd in model.graph.DESCRIPTOR.fields:
        if fd.name != "initializer":
            model.graph.ClearField(fd.name)
    copy_fields(source, model, skip="graph")
    copy_fields(source.graph, model.graph, skip="initializer")


def _stub_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with each big initializer reduced to a stub (name, type, dims)."""
    copy = model_without_initializers(model)
    for t in model.graph.initializer:
        if not _is_big(t):
            copy.graph.initializer.add().CopyFrom(t)
            continue
        stub = copy.graph.initializer.add()
        stub.name, stub.data_type = t.name, t.data_type
        stub.dims.extend(t.dims)
        stub.data_location = TensorProto.EXTERNAL
        entry = stub.external_data.add()
        entry.key, entry.value = "location", _STUB + "before"
    return copy


def _graph_protos(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for body in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _graph_protos(body)


def _onnx_type(values) -> int:
    if hasattr(values, "tensor"):
        return values.tensor.data_type
    return onnx.helper.np_dtype_to_tensor_dtype(values.dtype)


def _graphs(graph, gs):
    yield graph
    for node in graph.nodes:
        for value in node.attrs.values():
            if isinstance(value, gs.Graph):
                yield from _graphs(value, gs)


PROTOBUF_LIMIT = 2 * 1024 ** 3 - 1024 ** 2  # keep a margin under protobuf's 2 GiB


def over_protobuf_limit(model: onnx.ModelProto) -> bool:
    """Whether `model` is too big to serialize, estimated without encoding its weights."""
    return approx_byte_size(model) > PROTOBUF_LIMIT


def save_streaming(model: onnx.ModelProto, path: str, location: str) -> bool:
    """Write `model` to `path` with its big initializers' bytes appended one by one to
    `location` beside it, without copying the model. False (nothing written) when what remains
    would still exceed protobuf's limit (big attribute tensors): the caller then uses onnx.save."""
    from .mapped_data import copy_into
    big = [t for t in model.graph.initializer if is_mapped(t) or (
           _is_big(t) and t.data_location == TensorProto.DEFAULT and t.data_type != TensorProto.STRING)]
    skeleton = model_without_initializers(model)
    big_ids = {id(t) for t in big}
    entries = []
    with open(os.path.join(os.path.dirname(path), location), "wb") as data:
        for t in model.graph.initializer:
            if id(t) not in big_ids:
                skeleton.graph.initializer.add().CopyFrom(t)
                continue
            ref = skeleton.graph.initializer.add()
            copy_fields(t, ref, skip="raw_data")
            for typed in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                ref.ClearField(typed)
            del ref.external_data[:]
            offset = -data.tell() % _ALIGN + data.tell()
            data.seek(offset)
            if is_mapped(t):    # still in the input's file: copied file to file
                copy_into(t, data)
                entries.append((ref, offset, data.tell() - offset))
                continue
            raw = t.raw_data if t.HasField("raw_data") else onnx.numpy_helper.to_array(t).tobytes()
            data.write(raw)
            entries.append((ref, offset, len(raw)))
            del raw
        for ref, offset, length in entries:
            ref.data_location = TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
                entry = ref.external_data.add()
                entry.key, entry.value = key, value
    if over_protobuf_limit(skeleton):
        os.remove(os.path.join(os.path.dirname(path), location))
        return False
    with open(path, "wb") as f:
        f.write(skeleton.SerializeToString())
    return True


def write_embedded(model: onnx.ModelProto, f) -> None:
    """Write model.SerializeToString() to the binary file `f`, the same bytes, one initializer at a
    time: whole-model serialization held the encoder's buffer (up to twice the model) and a copy.

    Protobuf writes fields in number order, so the model is its fields before `graph` (7), the
    graph, then the rest; the graph is its fields before `initializer` (5), each initializer, the rest.
    """
    graph = model.graph
    if not any(_is_big(t) for t in graph.initializer):   # small: protobuf's own (keeps unknown fields)
        f.write(model.SerializeToString())
        return
    head, tail = _split_fields(model, "graph")
    g_head, g_tail = _split_fields(graph, "initializer")
    from .mapped_data import copy_into, header, nbytes
    raw_tag = _varint(9 << 3 | 2)      # TensorProto.raw_data
    parts = {}                         # index -> (fields before raw_data, after it, data bytes)
    for i, t in enumerate(graph.initializer):
        if is_mapped(t):               # still in the input's file: embedded, streamed from there
            before, after = _split_fields(header(t), "raw_data")
            parts[i] = (before, after, nbytes(t))
    sizes = [len(parts[i][0]) + len(raw_tag) + len(_varint(parts[i][2])) + parts[i][2] + len(parts[i][1])
             if i in parts else t.ByteSize() for i, t in enumerate(graph.initializer)]   # one tensor at a time
    init_tag = _varint(5 << 3 | 2)
    graph_len = len(g_head) + len(g_tail) + sum(len(init_tag) + len(_varint(n)) + n for n in sizes)
    f.write(head)
    f.write(_varint(7 << 3 | 2) + _varint(graph_len))
    f.write(g_head)
    for i, (tensor, size) in enumerate(zip(graph.initializer, sizes)):
        f.write(init_tag + _varint(size))
        if i in parts:
            before, after, n = parts[i]
            f.write(before + raw_tag + _varint(n))
            copy_into(tensor, f)
            f.write(after)
        else:
            f.write(tensor.SerializeToString())
    f.write(g_tail)
    f.write(tail)


def _split_fields(message, field: str):
    """(serialized fields numbered below `field`, serialized fields above it)."""
    number = message.DESCRIPTOR.fields_by_name[field].number
    before, after = type(message)(), type(message)()
    for fd, value in message.ListFields():
        if fd.name == field:
            continue
        one = type(message)()
        copy_field(one, fd, value)
        (before if fd.number < number else after).MergeFrom(one)
    return before.SerializeToString(), after.SerializeToString()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | 0x80 if n else low)
        if not n:
            return bytes(out)
