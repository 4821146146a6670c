"""Small helpers over onnx_graphsurgeon graphs shared by several passes."""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import AttributeProto

from .onnx_values import constant_attr_value

# The IR version we stamp at most: ONNX Runtime >= 1.17 accepts it (the rig has 1.19, CI the newest).
OUTPUT_IR_VERSION = 10

# Attribute kinds graphsurgeon's importer drops (with a warning), such as Optional's ``type``: put
# back as protos, which its exporter writes through onnx.helper.make_attribute.
_RAW_ATTRIBUTES = (AttributeProto.TYPE_PROTO, AttributeProto.TYPE_PROTOS, AttributeProto.TENSORS,
                   AttributeProto.SPARSE_TENSOR, AttributeProto.SPARSE_TENSORS)
# Value kinds graphsurgeon types exactly; optional, sequence and map values it cannot export (or only
# approximately): their ValueInfo types are carried over from the model the graph came from.
_GS_VALUE_KINDS = ("tensor_type", "sparse_tensor_type")


class RoundTripError(ValueError):
    """A graph cannot be exported back to ONNX without losing what the model said."""


def to_graph(model: onnx.ModelProto) -> gs.Graph:
    """Import a model; attributes graphsurgeon skips (TypeProto, tensor lists) are kept as protos."""
    graph = gs.import_onnx(model)
    from .mapped_data import has_mapped, read_on_demand
    if has_mapped(model):    # weights left in the input's files: values read from there
        read_on_demand(graph)
    _restore_raw_attributes(model.graph.node, graph.nodes)
    for proto, func in zip(model.functions, graph.functions):
        _restore_raw_attributes(proto.node, func.nodes)
    _restore_io_shapes(model.graph, graph)
    return graph


def _restore_io_shapes(proto: onnx.GraphProto, graph: gs.Graph) -> None:
    """Graph inputs/outputs keep the shapes the model gives them. graphsurgeon takes a tensor's type
    from the first ValueInfo it meets: a value_info entry without a shape (quantization tools write
    them) hides the graph I/O's shape, and the export then writes a type without one, which
    onnx.checker refuses ("Field 'shape' of 'type' is required but missing"). Subgraphs too."""
    for protos, tensors in ((proto.input, graph.inputs), (proto.output, graph.outputs)):
        for vi, tensor in zip(protos, tensors):
            t = vi.type.tensor_type if vi.type.WhichOneof("value") == "tensor_type" else None
            if t is None or tensor.name != vi.name or not isinstance(tensor, gs.Variable):
                continue
            if tensor.shape is None and t.HasField("shape"):
                tensor.shape = [d.dim_param if d.HasField("dim_param") else
                                (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]
            if tensor.dtype is None and t.elem_type:
                tensor.dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
    for node_proto, node in zip(proto.node, graph.nodes):
        for attr in node_proto.attribute:
            if attr.type == AttributeProto.GRAPH and isinstance(node.attrs.get(attr.name), gs.Graph):
                _restore_io_shapes(attr.g, node.attrs[attr.name])


def _restore_raw_attributes(protos, nodes) -> None:
    protos, nodes = list(protos), list(nodes)
    if len(protos) != len(nodes):   # the importer keeps every node in order; anything else is a bug
        raise RoundTripError(f"graphsurgeon imported {len(nodes)} nodes of {len(protos)}")
    for proto, node in zip(protos, nodes):
        raw = {a.name for a in proto.attribute if a.type in _RAW_ATTRIBUTES and not a.ref_attr_name}
        if raw:
            restored = {a.name: onnx.helper.get_attribute_value(a) for a in proto.attribute if a.name in raw}
            attrs = [(a.name, restored[a.name] if a.name in raw else node.attrs[a.name])
                     for a in proto.attribute if a.name in raw or a.name in node.attrs]
            node.attrs.clear()
            node.attrs.update(attrs)      # the model's attribute order
        for name, value in node.attrs.items():
            if isinstance(value, gs.Graph):
                body = next(a.g for a in proto.attribute if a.name == name)
                _restore_raw_attributes(body.node, value.nodes)
            elif name in raw:
                continue
            elif isinstance(value, (list, tuple)) and value and isinstance(value[0], gs.Graph):
                raise RoundTripError(f"node '{proto.name or proto.op_type}': attribute '{name}' holds a "
                                     "list of graphs, which graphsurgeon cannot import")


def to_model(graph: gs.Graph, template: onnx.ModelProto | None = None, place_weights=None) -> onnx.ModelProto:
    """Export a graph; keeps the template's producer/metadata, pins a conservative IR version.

    Optional, sequence and map values (which graphsurgeon cannot export) get the types the template
    gives their names; one the template does not type raises RoundTripError.
    """
    model = _export(graph, _value_types(template.graph) if template is not None else {}, place_weights)
    if template is not None:
        model.producer_name = template.producer_name
        model.producer_version = template.producer_version
        model.doc_string = template.doc_string
        model.model_version = template.model_version
        del model.metadata_props[:]
        model.metadata_props.extend(template.metadata_props)
        model.ir_version = min(template.ir_version, OUTPUT_IR_VERSION) if template.ir_version else OUTPUT_IR_VERSION
    model.ir_version = min(model.ir_version, OUTPUT_IR_VERSION)
    return model


def _value_types(graph: onnx.GraphProto) -> Dict[str, onnx.TypeProto]:
    """Non-tensor ValueInfo types by name, subgraphs included (a name typed two ways is left out)."""
    found: Dict[str, onnx.TypeProto] = {}
    clashes = set()
    for g in graph_protos(graph):
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            if vi.type.WhichOneof("value") in (None,) + _GS_VALUE_KINDS:
                continue
            if vi.name in found and found[vi.name] != vi.type:
                clashes.add(vi.name)
            found.setdefault(vi.name, vi.type)
    return {name: t for name, t in found.items() if name not in clashes}


def graph_protos(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph (If/Loop/Scan bodies), in pre-order, without recursion (nesting
    depth is the model's to choose)."""
    stack = [graph]
    while stack:
        g = stack.pop()
        yield g
        bodies = [b for node in g.node for attr in node.attribute
                  for b in ([attr.g] if attr.type == AttributeProto.GRAPH else
                            list(attr.graphs) if attr.type == AttributeProto.GRAPHS else [])]
        stack.extend(reversed(bodies))


def gs_graphs(graph: gs.Graph) -> Iterator[gs.Graph]:
    yield graph
    for node in graph.nodes:
        for value in node.attrs.values():
            if isinstance(value, gs.Graph):
                yield from gs_graphs(value)


def _export(graph: gs.Graph, value_types: Dict[str, onnx.TypeProto], place_weights=None) -> onnx.ModelProto:
    """gs.export_onnx, with non-tensor values exported untyped and then given their known types.
    Big constants are exported as stubs, then `place_weights(model, fill)` (default: fill(model))
    puts their bytes in (weights.export_in_place keeps them in the model they came from instead)."""
    hidden: List[Tuple[gs.Tensor, object]] = []
    for g in gs_graphs(graph):
        for tensor in g.tensors().values():
            if isinstance(tensor, gs.Variable) and tensor.dtype is not None \
                    and tensor.type not in _GS_VALUE_KINDS:
                hidden.append((tensor, tensor.dtype))
    untyped = [t.name for t in list(graph.inputs) + list(graph.outputs)
               if (t.dtype is None or any(t is h for h, _ in hidden)) and t.name not in value_types]
    if untyped:
        raise RoundTripError(f"graph input/output {', '.join(untyped)} has no type to export "
                             "(graphsurgeon exports only tensor types; others come from the source model)")
    from .weights import weightless_graph
    try:
        for tensor, _ in hidden:
            tensor.dtype = None
        with weightless_graph(graph) as fill_weights:   # one copy of the weights, not two
            model = gs.export_onnx(graph, do_type_check=False)
            (place_weights or (lambda m, fill: fill(m)))(model, fill_weights)
    finally:
        for tensor, dtype in hidden:
            tensor.dtype = dtype
    if value_types:
        for g in graph_protos(model.graph):
            _retype_values(g, value_types)
    return model


def _retype_values(g: onnx.GraphProto, value_types: Dict[str, onnx.TypeProto]) -> None:
    listed = set()
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        listed.add(vi.name)
        if vi.name in value_types and vi.type.WhichOneof("value") is None:
            vi.type.CopyFrom(value_types[vi.name])
    for node in g.node:   # intermediate values graphsurgeon left out of value_info (no dtype, no shape)
        for name in node.output:
            if name in value_types and name not in listed:
                listed.add(name)
                g.value_info.append(onnx.helper.make_value_info(name, value_types[name]))


class NameMaker:
    """Counter-based unique names (``gf.<pass>.<n>``), never id()-based, so output is deterministic."""

    def __init__(self, graph: gs.Graph, prefix: str):
        self.prefix = prefix
        self.taken = {n.name for n in graph.nodes} | set(graph.tensors().keys())
        self.n = 0

    def __call__(self, hint: str = "") -> str:
        while True:
            name = f"gf.{self.prefix}.{self.n}" + (f".{hint}" if hint else "")
            self.n += 1
            if name not in self.taken:
                self.taken.add(name)
                return name


def default_opset(graph: gs.Graph) -> int:
    return int(graph.opset)


def constant_value(tensor) -> np.ndarray | None:
    """Value of a gs.Constant, or of a Variable produced by a Constant node (any of its value
    attributes: value, value_int(s), value_float(s); graphfix.onnx_values)."""
    if isinstance(tensor, gs.Constant):
        return tensor.values
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        return constant_attr_value(tensor.inputs[0].attrs)
    return None


def known_dims(tensor, *known: Optional[Sequence[Optional[int]]]) -> Optional[List[Optional[int]]]:
    """Dims of `tensor` from its own annotation and other sources (e.g. ONNX shape inference): per
    dim, the first static value any source gives (None for a dim none knows); None when no source
    knows the rank. A source whose rank disagrees with the first one is ignored."""
    merged: Optional[List[Optional[int]]] = None
    if isinstance(tensor, gs.Constant):
        return list(np.asarray(tensor.values).shape)
    for source in (getattr(tensor, "shape", None),) + known:
        if source is None:
            continue
        dims = [d if isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 else None
                for d in source]
        if merged is None:
            merged = [None if d is None else int(d) for d in dims]
        elif len(dims) == len(merged):
            merged = [m if m is not None else (None if d is None else int(d)) for m, d in zip(merged, dims)]
    return merged


def shape_of(tensor, names: Callable[[str], str], dims: Union[slice, int, None] = None,
             known: Optional[Sequence[Optional[int]]] = None) -> Tuple[gs.Tensor, List[gs.Node]]:
    """``Shape(tensor)[dims]`` as a 1-D INT64 tensor, and the nodes that compute it (for the caller
    to insert): an initializer and no nodes when those dims are static, else Shape (+ Slice).

    Why: fold-constants runs before the passes that build shape values and folds every Shape over
    a static tensor, so a pass that built one would change its own output on a second run.
    `known`: dims from ONNX shape inference, merged with the tensor's annotation (see known_dims);
    `dims`: an index or a step-1 slice of the shape (the Slice is the opset >= 10 input form);
    `names`: a NameMaker (or any hint -> unique name callable).
    """
    if isinstance(dims, (int, np.integer)):
        dims = slice(int(dims), None if int(dims) == -1 else int(dims) + 1)
    if dims is not None and dims.step not in (None, 1):
        raise ValueError(f"shape_of: slice step {dims.step} is not supported (1 only)")
    shape = known_dims(tensor, known)
    picked = None if shape is None else (shape if dims is None else shape[dims])
    if picked is not None and None not in picked:
        return gs.Constant(names("shape"), np.array(picked, dtype=np.int64)), []
    full = gs.Variable(names("shape"), dtype=np.int64, shape=None if shape is None else [len(shape)])
    nodes = [gs.Node("Shape", names("Shape"), inputs=[tensor], outputs=[full])]
    if dims is None or (dims.start in (None, 0) and dims.stop is None):
        return full, nodes
    bounds = [np.array([v], np.int64) for v in (dims.start or 0, np.iinfo(np.int64).max if dims.stop is None
                                                 else dims.stop, 0)]
    part = gs.Variable(names("shape"), dtype=np.int64, shape=None if picked is None else [len(picked)])
    nodes.append(gs.Node("Slice", names("Slice"), inputs=[full] + [gs.Constant(names(h), v) for h, v in
                                                                    zip(("starts", "ends", "axes"), bounds)],
                         outputs=[part]))
    return part, nodes


def consumers(tensor) -> List[gs.Node]:
    return list(tensor.outputs)


def producer(tensor):
    return tensor.inputs[0] if tensor.inputs else None


def graph_io_names(graph: gs.Graph) -> set:
    return {t.name for t in graph.inputs} | {t.name for t in graph.outputs}


def sorted_nodes(nodes: Iterable[gs.Node]) -> List[gs.Node]:
    return sorted(nodes, key=lambda n: n.name)


def tensor_map(graph: gs.Graph) -> Dict[str, gs.Tensor]:
    return graph.tensors()


def is_topologically_sorted(graph: gs.Graph) -> bool:
    """Whether every node comes after the producers of its inputs (outer-scope names aside)."""
    produced = set()
    producers = {id(t) for n in graph.nodes for t in n.outputs}
    for node in graph.nodes:
        for t in node.inputs:
            if id(t) in producers and id(t) not in produced:
                return False
        produced.update(id(t) for t in node.outputs)
    return True


def remove_dead_nodes(graph: gs.Graph) -> List[str]:
    """graphsurgeon's cleanup (graph inputs and node outputs kept); the names of the nodes it
    removed, sorted, so that passes can record each one."""
    before = list(graph.nodes)
    graph.cleanup(remove_unused_node_outputs=False, remove_unused_graph_inputs=False)
    kept = {id(n) for n in graph.nodes}  # identity within this call only; never in output
    return sorted(n.name or n.op for n in before if id(n) not in kept)


def toposort_if_needed(graph: gs.Graph) -> bool:
    """Sort the graph (its subgraphs and functions too) where it is not in a valid order; whether
    any node moved. A sorted graph keeps its order (gs's toposort reorders sorted graphs too)."""
    return toposort(graph)


def toposort(graph: gs.Graph) -> bool:
    """Topological sort in place without recursion (gs's recursive sort overflows Python's stack
    from about 500 nodes deep): Kahn's algorithm taking, of the ready nodes, the one that came
    first, so the order is deterministic and moves as few nodes as it can. A node holding a
    subgraph comes after the producers of the outer values its body reads. Whether any node moved."""
    changed = False
    todo = [graph] + list(getattr(graph, "functions", None) or [])
    while todo:
        g = todo.pop()
        changed |= _sort_nodes(g)
        todo.extend(sub for node in g.nodes for sub in _subgraphs(node))
    return changed


def _subgraphs(node: gs.Node) -> List[gs.Graph]:
    return [v for v in node.attrs.values() if isinstance(v, gs.Graph)]


def nodes_deep(graph: gs.Graph) -> Iterator[gs.Node]:
    """The graph's nodes and those of every subgraph (If branches, Loop bodies), nested ones too."""
    todo = [graph]
    while todo:
        g = todo.pop()
        for node in g.nodes:
            yield node
            todo.extend(_subgraphs(node))


def _names_read_inside(node: gs.Node) -> List[str]:
    """Every tensor name read by the nodes of `node`'s subgraphs, nested ones included."""
    names: List[str] = []
    todo = _subgraphs(node)
    while todo:
        body = todo.pop()
        for inner in body.nodes:
            names.extend(t.name for t in inner.inputs if not t.is_empty())
            todo.extend(_subgraphs(inner))
    return names


def _sort_nodes(g: gs.Graph) -> bool:
    import heapq
    nodes = list(g.nodes)
    producer: Dict[str, int] = {}
    for i, node in enumerate(nodes):
        for t in node.outputs:
            if not t.is_empty():
                producer.setdefault(t.name, i)
    consumers: List[List[int]] = [[] for _ in nodes]
    waiting = [0] * len(nodes)          # producers each node still waits for
    for i, node in enumerate(nodes):
        names = [t.name for t in node.inputs if not t.is_empty()] + _names_read_inside(node)
        for j in {producer[n] for n in names if n in producer}:
            consumers[j].append(i)
            waiting[i] += 1
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: List[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for k in consumers[i]:
            waiting[k] -= 1
            if waiting[k] == 0:
                heapq.heappush(ready, k)
    if len(order) < len(nodes):
        stuck = sorted(nodes[i].name or nodes[i].op for i in set(range(len(nodes))) - set(order))
        raise ValueError(f"graph '{g.name}' has a cycle (or a node reading its own output) through "
                         f"{len(stuck)} node(s): {', '.join(stuck[:5])}")
    if order == list(range(len(nodes))):
        return False
    g.nodes = [nodes[i] for i in order]
    return True
