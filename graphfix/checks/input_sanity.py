"""Model-level sanity of an input: the facts every later stage takes for granted.

Each problem found here would otherwise surface as a traceback deep in a pass, in `check`'s rules
or in ONNX Runtime, or as a model that nothing can load being called "done". One cheap walk over
the model; the first problem found is returned as one line (validate_input raises it).
"""
from __future__ import annotations

import functools
from typing import Dict, Iterator, Optional, Tuple

import onnx
from onnx import AttributeProto, TensorProto

from ..external_data import all_tensors

DEFAULT_DOMAINS = ("", "ai.onnx")
_DATA_TYPES = frozenset(TensorProto.DataType.values())
_VERSIONED_DOMAINS = ("", "ai.onnx.ml")       # ONNX's own: an op's meaning depends on the opset
_DTYPE_ATTRS = ("to", "dtype")                 # attributes that hold a TensorProto.DataType
_PACKED_4BIT = frozenset(getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, n))


def sanity_problem(model: onnx.ModelProto) -> Optional[str]:
    """The first reason `model` cannot be worked on, or None (one walk over graphs and tensors)."""
    return _versions(model) or _function_names(model) or _graph_problems(model) or _tensor_problems(model)


def _versions(model: onnx.ModelProto) -> Optional[str]:
    newest_ir = onnx.IR_VERSION
    if not 3 <= model.ir_version <= newest_ir:
        return f"IR version {model.ir_version} is not one ONNX defines (3 to {newest_ir} with onnx {onnx.__version__})"
    newest_opset = onnx.defs.onnx_opset_version()
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS and not 1 <= imp.version <= newest_opset:
            return f"ai.onnx opset {imp.version} is not one ONNX defines (1 to {newest_opset})"
        if imp.version < 1:
            return f"opset {imp.version} imported for domain '{imp.domain}'"
    return None


def _graphs(graph: onnx.GraphProto, path: str = "") -> Iterator[Tuple[onnx.GraphProto, str]]:
    """The graph and every subgraph (If/Loop/Scan bodies), with a readable location."""
    yield graph, path
    for node in graph.node:
        for attr in node.attribute:
            subs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            for sub in subs:
                yield from _graphs(sub, f"{path}{_text(node.name) or node.op_type}/{attr.name}/")


def _text(value) -> str:
    return value if isinstance(value, str) else repr(value)


def _bad_name(values) -> Optional[str]:
    """protobuf hands back bytes for a string field that is not valid UTF-8."""
    return next((repr(v) for v in values if isinstance(v, bytes)), None)


def _function_names(model: onnx.ModelProto) -> Optional[str]:
    found = _bad_name([f.name for f in model.functions] + [o.domain for o in model.opset_import])
    return f"a function or domain name that is not valid UTF-8 ({found})" if found else None


def _type_problem(tp: onnx.TypeProto) -> Optional[int]:
    """An element type that is no TensorProto.DataType, anywhere inside a TypeProto."""
    which = tp.WhichOneof("value")
    if which in ("tensor_type", "sparse_tensor_type"):
        elem = getattr(tp, which).elem_type
        return elem if elem not in _DATA_TYPES else None
    if which == "sequence_type":
        return _type_problem(tp.sequence_type.elem_type)
    if which == "optional_type":
        return _type_problem(tp.optional_type.elem_type)
    if which == "map_type":
        key = tp.map_type.key_type
        return key if key not in _DATA_TYPES else _type_problem(tp.map_type.value_type)
    return None


def _graph_problems(model: onnx.ModelProto) -> Optional[str]:
    """Names, element types of values, attribute types, for every node of every (sub)graph."""
    opsets = {(o.domain if o.domain != "ai.onnx" else ""): o.version for o in model.opset_import}
    schemas: Dict[Tuple[str, str], object] = {}
    for graph, where in _graphs(model.graph):
        values = (*graph.input, *graph.output, *graph.value_info)
        found = _bad_name([v.name for v in values] + [t.name for t in graph.initializer])
        if found:
            return f"{where}tensor name that is not valid UTF-8 ({found})"
        for kind, group in (("input", graph.input), ("output", graph.output), ("value_info", graph.value_info)):
            for v in group:
                elem = _type_problem(v.type)
                if elem is not None:
                    return f"{where}{kind} '{v.name}' has unknown element type {elem}"
        for node in graph.node:
            problem = _node_problem(node, where, opsets, schemas)
            if problem:
                return problem
    return None


def _node_problem(node: onnx.NodeProto, where: str, opsets: Dict[str, int], schemas: Dict) -> Optional[str]:
    attrs = list(node.attribute)
    found = _bad_name([node.name, node.op_type, node.domain, *node.input, *node.output, *(a.name for a in attrs)])
    if found:
        return f"{where}a node has a name that is not valid UTF-8 ({found})"
    label = f"{where}node '{node.name or node.op_type}' ({node.op_type})"
    domain = "" if node.domain == "ai.onnx" else node.domain
    if domain in _VERSIONED_DOMAINS and domain not in opsets:   # which opset's op would it be?
        return f"{label}: the model imports no opset of domain '{domain or 'ai.onnx'}'"
    schema = _schema(schemas, node, opsets) if attrs else None
    for attr in attrs:
        if attr.ref_attr_name:
            return (f"{label}: attribute '{attr.name}' refers to a function attribute "
                    f"('{attr.ref_attr_name}') outside a function")
        if attr.type == AttributeProto.UNDEFINED:
            return f"{label}: attribute '{attr.name}' has no type"
        spec = schema.attributes.get(attr.name) if schema is not None else None
        if spec is not None and int(spec.type) != attr.type:
            want = AttributeProto.AttributeType.Name(int(spec.type))
            got = AttributeProto.AttributeType.Name(attr.type) \
                if attr.type in AttributeProto.AttributeType.values() else str(attr.type)
            return f"{label}: attribute '{attr.name}' is {got}, the op's schema wants {want}"
        if attr.name in _DTYPE_ATTRS and attr.type == AttributeProto.INT and node.domain in DEFAULT_DOMAINS \
                and (attr.i not in _DATA_TYPES or attr.i == TensorProto.UNDEFINED):
            return f"{label}: attribute '{attr.name}' names unknown element type {attr.i}"
    return None


def _tensor_problems(model: onnx.ModelProto) -> Optional[str]:
    """Each tensor has a known element type and exactly as much data as its shape says."""
    for t in all_tensors(model):
        data_type, dims = t.data_type, list(t.dims)
        if data_type not in _DATA_TYPES or data_type == TensorProto.UNDEFINED:
            return f"tensor '{t.name}' has unknown element type {data_type}"
        if any(d < 0 for d in dims):
            return f"tensor '{t.name}' has a negative dimension {dims}"
        count = 1
        for d in dims:
            count *= d
        held, unit = _held(t, count)
        if held is not None and held != count * unit:
            return (f"tensor '{t.name}': its data holds {held} {'bytes' if unit > 1 else 'values'}, "
                    f"its shape {dims} and type need {count * unit}")
    return None


def _held(t: TensorProto, count: int) -> Tuple[Optional[int], int]:
    """(how much data the tensor holds, units per value) or (None, 1) where it cannot be judged."""
    if t.data_type == TensorProto.STRING:
        return len(t.string_data), 1
    from ..mapped_data import is_mapped, nbytes
    if is_mapped(t):      # left in the input's file: its length there
        return nbytes(t), _itemsize(t.data_type)
    if t.HasField("raw_data"):
        if t.data_type in _PACKED_4BIT:    # two values per byte: compare in values
            return (None, 1) if len(t.raw_data) == (count + 1) // 2 else (len(t.raw_data) * 2, 1)
        itemsize = _itemsize(t.data_type)
        return (len(t.raw_data), itemsize) if itemsize else (None, 1)
    if t.data_type in _PACKED_4BIT:
        return None, 1
    field = _field(t.data_type)
    if field is None:
        return None, 1
    per_value = 2 if t.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128) else 1
    return len(getattr(t, field)), per_value


@functools.lru_cache(maxsize=None)
def _itemsize(data_type: int) -> int:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except Exception:   # a type numpy has no dtype for: nothing to compare with
        return 0


@functools.lru_cache(maxsize=None)
def _field(data_type: int) -> Optional[str]:
    try:
        return onnx.helper.tensor_dtype_to_field(data_type)
    except Exception:
        return None


def _schema(cache: Dict, node: onnx.NodeProto, opsets: Dict[str, int]):
    domain = "" if node.domain == "ai.onnx" else node.domain
    key = (domain, node.op_type)
    if key not in cache:
        version = opsets.get(domain)
        try:
            cache[key] = onnx.defs.get_schema(node.op_type, version, domain) if version else None
        except Exception:   # no schema (custom op, unknown op): nothing to compare with
            cache[key] = None
    return cache[key]
