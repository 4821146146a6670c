"""Which nodes fold-constants can compute before run time, and how (numpy now, or ONNX Runtime).
`graphfix check` asks the same question (graphfix.diagnosis.facts), so both share this module.

Works on tensor names (taken from the nodes' own protos where the graph still matches its model,
which is much faster than walking graphsurgeon objects on 100k-node graphs) and resolves a name to
its graphsurgeon tensor only where one is needed (values to feed, tensors to turn into constants).
"""
from __future__ import annotations

import heapq
import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from graphfix.onnx_values import CONSTANT_VALUE_ATTRS, DEFAULT_DOMAINS, NONDETERMINISTIC_OPS, constant_attr_value

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
NON_TENSOR_OPS = frozenset({"SequenceConstruct", "SequenceEmpty", "SequenceInsert", "SequenceErase",
                            "SplitToSequence", "Optional", "OptionalGetElement"})
SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})
STANDARD_DOMAINS = frozenset(DEFAULT_DOMAINS)
SHAPE_STEERING_OPS = frozenset({"Resize", "Upsample"})  # float inputs that decide an output shape

# How a foldable node gets its value.
NUMPY, ORT = "numpy", "ort"

Dims = Tuple[Optional[int], ...]


class InferredShapes:
    """What ONNX shape inference found, by tensor name, decoded on demand."""

    def __init__(self, value_infos: Optional[Mapping[str, onnx.ValueInfoProto]] = None):
        self.value_infos = value_infos or {}

    def dims(self, name: str) -> Optional[Dims]:
        vi = self.value_infos.get(name)
        if vi is None or vi.type.WhichOneof("value") != "tensor_type" or not vi.type.tensor_type.HasField("shape"):
            return None
        return tuple(d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim)

    def elem_type(self, name: str) -> int:
        vi = self.value_infos.get(name)
        if vi is None or vi.type.WhichOneof("value") != "tensor_type":
            return 0
        return vi.type.tensor_type.elem_type


class Analysis:
    """The foldable nodes of the current graph (positions in topological order) and how to get
    each one's value; the frontier (values a kept node reads); the cones to evaluate and remove."""

    def __init__(self, graph: gs.Graph, facts: InferredShapes, excluded: Set[int] = frozenset(),
                 protos: Optional[Mapping[int, onnx.NodeProto]] = None):
        self.facts = facts
        self.excluded = excluded
        self.nodes: List[gs.Node] = list(graph.nodes)
        self._index_names(protos or {})
        self.graph_outputs = {t.name for t in graph.outputs}
        self.graph_inputs = {t.name for t in graph.inputs}
        self.subgraph_reads = _subgraph_reads(self.nodes)
        self.values: Dict[str, np.ndarray] = {}
        self.foldable: Dict[int, str] = {}          # pos -> NUMPY or ORT
        self.near_misses: Dict[int, str] = {}
        # CastLike(constant, x) evaluated as Cast(constant, to=type of x): pos -> (proto, inputs)
        self.as_cast: Dict[int, Tuple[onnx.NodeProto, Tuple[str, ...]]] = {}
        self._tensors: Dict[str, gs.Tensor] = {}
        self._classify()

    def _index_names(self, protos: Mapping[int, onnx.NodeProto]) -> None:
        def names(node: gs.Node):
            p = protos.get(id(node))
            if p is not None:
                return tuple(p.input), tuple(p.output)
            return tuple(t.name for t in node.inputs), tuple(t.name for t in node.outputs)

        pairs = [names(n) for n in self.nodes]
        self.input_names = [p[0] for p in pairs]
        self.output_names = [p[1] for p in pairs]
        self.producer: Dict[str, int] = {o: pos for pos, outs in enumerate(self.output_names) for o in outs if o}
        if any(self.producer.get(i, -1) >= pos for pos, ins in enumerate(self.input_names) for i in ins):
            order = _topological_order(self.input_names, self.producer)
            self.nodes = [self.nodes[i] for i in order]
            self.input_names = [self.input_names[i] for i in order]
            self.output_names = [self.output_names[i] for i in order]
            self.producer = {o: pos for pos, outs in enumerate(self.output_names) for o in outs if o}
        self.readers: Dict[str, List[int]] = {}
        for pos, ins in enumerate(self.input_names):
            for name in ins:
                if name:
                    self.readers.setdefault(name, []).append(pos)

    # -- names and tensors ----------------------------------------------------------------------------

    def tensor(self, name: str) -> gs.Tensor:
        """The graphsurgeon tensor of a name (via its producer or its first reader)."""
        tensor = self._tensors.get(name)
        if tensor is None:
            pos = self.producer.get(name)
            if pos is not None:
                tensor = self.nodes[pos].outputs[self.output_names[pos].index(name)]
            else:
                pos = self.readers[name][0]
                tensor = self.nodes[pos].inputs[self.input_names[pos].index(name)]
            self._tensors[name] = tensor
        return tensor

    def is_const(self, name: str) -> bool:
        if not name:
            return True  # an omitted optional input
        if name in self.graph_inputs:
            return False
        pos = self.producer.get(name)
        return pos in self.foldable if pos is not None else True  # read, not produced: an initializer

    def dims(self, name: str) -> Optional[Dims]:
        """Dims from shape inference or the model's own annotation, whichever knows more."""
        inferred = self.facts.dims(name)
        shape = getattr(self.tensor(name), "shape", None) if name in self.producer or name in self.readers else None
        annotated = None if shape is None else tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)
        if inferred is not None and (annotated is None or _unknown(inferred) <= _unknown(annotated)):
            return inferred   # inference read the annotations too, and checked them against the graph
        return annotated

    def elem_type(self, name: str) -> int:
        return self.facts.elem_type(name) or _elem_type(getattr(self.tensor(name), "dtype", None))

    def label(self, pos: int) -> str:
        node = self.nodes[pos]
        return node.name or f"{node.op} -> {self.output_names[pos][0] if self.output_names[pos] else '?'}"

    def order_key(self, name: str) -> Tuple[int, str]:
        return (self.producer.get(name, -1), name)

    # -- classification ---------------------------------------------------------------------------------

    def _classify(self) -> None:
        for pos, node in enumerate(self.nodes):
            if id(node) in self.excluded:
                continue
            how = self._how(pos, node)
            if how is None:
                continue
            if any(o in self.graph_outputs for o in self.output_names[pos]):
                self.near_misses[pos] = "graph output"
                continue
            self.foldable[pos] = how

    def _how(self, pos: int, node: gs.Node) -> Optional[str]:
        if (getattr(node, "domain", None) or "") not in STANDARD_DOMAINS:
            return None
        op, ins = node.op, self.input_names[pos]
        if op == "Constant":
            value = _constant_node_value(node)
            if value is not None:
                self.values[self.output_names[pos][0]] = value
                return NUMPY
            return ORT
        if op == "CastLike" and len(ins) == 2 and len(self.output_names[pos]) == 1 \
                and self.is_const(ins[0]) and not self.is_const(ins[1]):
            to = self.elem_type(ins[1])      # depends on x's type only, as Shape on its shape
            if not to:
                return None
            proto = helper.make_node("Cast", [ins[0]], list(self.output_names[pos]), name=node.name, to=to)
            self.as_cast[pos] = (proto, (ins[0],))
            return ORT
        if not all(self.is_const(name) for name in ins):
            value = self._static_shape_value(pos, node)
            if value is None:
                return None
            self.values[self.output_names[pos][0]] = value
            return NUMPY
        why = _unfoldable_reason(node)
        if why is not None:
            self.near_misses[pos] = why
            return None
        return ORT

    def _static_shape_value(self, pos: int, node: gs.Node) -> Optional[np.ndarray]:
        """Shape/Size of a static tensor; Gather/Slice of static dims out of a partly static Shape."""
        ins, outs = self.input_names[pos], self.output_names[pos]
        if node.op in ("Shape", "Size") and len(ins) == 1 and len(outs) == 1:
            dims = self.dims(ins[0])
            if dims is None:
                return None
            if node.op == "Size":
                return np.array(int(np.prod(dims, dtype=np.int64)), np.int64) if None not in dims else None
            picked = _shape_slice(dims, node.attrs.get("start", 0), node.attrs.get("end"))
            return np.array(picked, np.int64) if None not in picked else None
        if node.op in ("Gather", "Slice") and ins and len(outs) == 1:
            dims = self._partial_vector(ins[0])
            if dims is None or not all(self.is_const(name) for name in ins[1:]):
                return None
            picked = _pick_dims(node, list(dims), [self._known_value(name) for name in ins[1:]])
            if picked is None or None in picked.flat:
                return None
            return picked.astype(np.int64)
        return None

    def _partial_vector(self, name: str, depth: int = 0) -> Optional[List[Optional[int]]]:
        """A 1-D integer vector whose length is known and whose entries may be (None = run-time): a
        partly static Shape, and Concat/Cast/Identity/Unsqueeze of such vectors and constants (an
        exporter's Concat(Shape(x), [3]) -> Gather(2)). None when not such a vector."""
        if depth > 16:
            return None
        if self.is_const(name):
            value = self._known_value(name)
            if value is None or value.ndim > 1 or not np.issubdtype(value.dtype, np.integer):
                return None
            return [int(v) for v in value.reshape(-1)]
        pos = self.producer.get(name)
        if pos is None or pos in self.foldable:
            return None
        node, ins = self.nodes[pos], self.input_names[pos]
        if node.op == "Shape" and len(ins) == 1:
            dims = self.dims(ins[0])
            return None if dims is None else _shape_slice(dims, node.attrs.get("start", 0), node.attrs.get("end"))
        if node.op == "Concat" and int(node.attrs.get("axis", 0)) in (0, -1):
            parts = [self._partial_vector(i, depth + 1) for i in ins]
            return None if any(p is None for p in parts) else [d for p in parts for d in p]
        if node.op in ("Identity", "Cast") and ins and (node.op == "Identity" or int(node.attrs.get("to", 0)) in (
                onnx.TensorProto.INT64, onnx.TensorProto.INT32)):
            return self._partial_vector(ins[0], depth + 1)
        return None

    def _known_value(self, name: str) -> Optional[np.ndarray]:
        """A value known during classification: initializers, numpy-computed ones; not ORT ones."""
        if not name:
            return None
        if name in self.values:
            return self.values[name]
        if name not in self.producer:
            return np.asarray(self.tensor(name).values)
        return None

    # -- frontier, cones, demotion ----------------------------------------------------------------------

    def is_constant_node(self, pos: int) -> bool:
        return self.nodes[pos].op == "Constant"   # its value is in the model already: no size limit

    def frontier(self) -> Set[str]:
        """Values of foldable nodes that something kept computed reads: the values to store."""
        needed: Set[str] = set()
        for pos in self.foldable:
            for name in self.output_names[pos]:
                if name and (name in self.subgraph_reads
                             or any(r not in self.foldable for r in self.readers.get(name, ()))):
                    needed.add(name)
        return needed

    def unfold(self, pos: int, cascade: bool) -> List[int]:
        """Keep `pos` computed; with cascade, also every foldable node depending on it."""
        dropped = []
        stack = [pos]
        while stack:
            p = stack.pop()
            if p not in self.foldable:
                continue
            del self.foldable[p]
            dropped.append(p)
            if cascade:
                for name in self.output_names[p]:
                    stack.extend(r for r in self.readers.get(name, ()) if r in self.foldable)
        return sorted(dropped)

    def static_nbytes(self, name: str) -> Optional[int]:
        dims = self.dims(name)
        elem = self.elem_type(name)
        if dims is None or None in dims or not elem:
            return None
        try:
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(elem)).itemsize
        except (KeyError, TypeError, ValueError):
            return None
        return int(np.prod(dims, dtype=np.int64)) * itemsize

    def ort_cone(self, wanted: Iterable[str]) -> List[int]:
        """Foldable ORT nodes needed to compute `wanted` from known values, topological order."""
        cone: Set[int] = set()
        stack = [self.producer[n] for n in wanted if n not in self.values]
        while stack:
            pos = stack.pop()
            if pos in cone or self.foldable.get(pos) != ORT:
                continue
            cone.add(pos)
            ins = self.as_cast[pos][1] if pos in self.as_cast else self.input_names[pos]
            stack.extend(self.producer[n] for n in ins if n and n not in self.values and n in self.producer)
        return sorted(cone)

    def fold_cone(self, name: str) -> List[int]:
        """Foldable nodes whose work the stored value of `name` replaces."""
        cone: Set[int] = set()
        stack = [self.producer[name]]
        while stack:
            pos = stack.pop()
            if pos in cone or pos not in self.foldable:
                continue
            cone.add(pos)
            stack.extend(self.producer[n] for n in self.input_names[pos] if n in self.producer)
        return sorted(cone)

    def more_shapes_possible(self, stored: Mapping[str, np.ndarray], removed: Set[int]) -> bool:
        """Whether another round of shape inference could fold more: a Shape/Size is left over a
        non-static tensor, and a value just stored steers the shape of a node left with a non-static
        output (integers: Reshape targets, axes, repeats...; float scales of Resize)."""
        unresolved = any(self.nodes[pos].op in ("Shape", "Size") for pos in range(len(self.nodes))
                         if pos not in removed and pos not in self.foldable)
        if not unresolved:
            return False
        for name, value in stored.items():
            integer = np.issubdtype(value.dtype, np.integer)
            for pos in self.readers.get(name, ()):
                if pos in removed or (not integer and self.nodes[pos].op not in SHAPE_STEERING_OPS):
                    continue
                if any(self.dims(o) is None or None in self.dims(o) for o in self.output_names[pos] if o):
                    return True
        return False

    def source_view(self, initializers: Optional[Mapping[str, onnx.TensorProto]] = None) -> "SourceView":
        return SourceView(self, initializers or {})


class SourceView:
    """The values the evaluator may feed: initializers and values computed so far."""

    INLINE_BYTES = 1 << 20   # model initializers up to this size go into evaluation models as protos

    def __init__(self, an: Analysis, initializers: Mapping[str, onnx.TensorProto]):
        self.an = an
        self.initializers = initializers

    def initializer_proto(self, name: str) -> Optional[onnx.TensorProto]:
        """The model's own TensorProto for a small initializer (None: feed the value instead)."""
        proto = self.initializers.get(name)
        if proto is None or name in self.an.values or name in self.an.producer \
                or proto.data_location == onnx.TensorProto.EXTERNAL or not proto.data_type \
                or math.prod(proto.dims) * 8 > self.INLINE_BYTES:   # 8: the widest numeric item
            return None
        return proto

    def __contains__(self, name: str) -> bool:
        an = self.an
        return name in an.values or (bool(name) and name not in an.producer and name not in an.graph_inputs)

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.an.values:
            return self.an.values[name]
        return np.asarray(self.an.tensor(name).values)


# -- helpers ---------------------------------------------------------------------------------------------

def _unknown(dims: Dims) -> int:
    return sum(d is None for d in dims)


def _topological_order(input_names: Sequence[Tuple[str, ...]], producer: Mapping[str, int]) -> List[int]:
    """Kahn's order, the given order breaking ties (a cycle's nodes go last, for the checks to report)."""
    deps = [{producer[n] for n in ins if n in producer} for ins in input_names]
    users: Dict[int, List[int]] = {}
    pending = [len(ds) for ds in deps]
    for i, ds in enumerate(deps):
        for d in ds:
            users.setdefault(d, []).append(i)
    ready = [i for i, p in enumerate(pending) if p == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users.get(i, ()):
            pending[u] -= 1
            if pending[u] == 0:
                heapq.heappush(ready, u)
    order.extend(i for i in range(len(input_names)) if pending[i] > 0)
    return order


def _subgraph_reads(nodes: Sequence[gs.Node]) -> Set[str]:
    """Names read inside If/Loop/Scan bodies (they may be outer-scope values)."""
    names: Set[str] = set()
    stack = [v for n in nodes if n.op in SUBGRAPH_OPS or (getattr(n, "domain", None) or "") not in STANDARD_DOMAINS
             for v in n.attrs.values() if isinstance(v, gs.Graph)]
    while stack:
        body = stack.pop()
        for node in body.nodes:
            names.update(t.name for t in node.inputs if t.name)
            stack.extend(v for v in node.attrs.values() if isinstance(v, gs.Graph))
    return names


def _unfoldable_reason(node: gs.Node) -> Optional[str]:
    if node.op in QDQ_OPS:
        return "Q/DQ"
    if node.op in NONDETERMINISTIC_OPS:
        return "nondeterministic op"
    if node.op in NON_TENSOR_OPS:
        return "its output is not a tensor"
    for value in node.attrs.values():
        if isinstance(value, gs.Graph) or (isinstance(value, (list, tuple)) and value
                                           and isinstance(value[0], gs.Graph)):
            return "op with a subgraph"
        if type(value).__name__ == "AttributeRef":
            return "attribute refers to a function attribute"
    if not node.outputs:
        return "no outputs"
    return None


def _constant_node_value(node: gs.Node) -> Optional[np.ndarray]:
    """A Constant node's value from its attribute; None for kinds numpy does not mirror (strings,
    sparse): those go to ONNX Runtime."""
    if len(node.attrs) != 1 or len(node.outputs) != 1 or next(iter(node.attrs)) not in CONSTANT_VALUE_ATTRS:
        return None
    return constant_attr_value(node.attrs)


def _shape_slice(dims: Sequence[Optional[int]], start, end) -> List[Optional[int]]:
    """The dims Shape(start, end) returns (ONNX clamps exactly like a Python slice)."""
    return list(dims)[slice(int(start), None if end is None else int(end))]


def _pick_dims(node: gs.Node, dims: List[Optional[int]], params: List[Optional[np.ndarray]]
               ) -> Optional[np.ndarray]:
    """Gather (axis 0) or Slice (axis 0) applied to a partly known shape vector; None if unknown."""
    vec = np.array(dims, dtype=object)
    if node.op == "Gather":
        if int(node.attrs.get("axis", 0)) not in (0, -1) or not params or params[0] is None:
            return None
        idx = params[0].astype(np.int64)
        if np.any(idx < -len(dims)) or np.any(idx >= len(dims)):
            return None
        # np.asarray: a scalar index picks a bare Python int out of the object array (ViT exports)
        return np.asarray(vec[np.where(idx < 0, idx + len(dims), idx)], dtype=object)
    if params:   # Slice from opset 10: starts/ends/axes/steps are inputs
        starts, ends = params[0], params[1] if len(params) > 1 else None
        axes = params[2] if len(params) > 2 else None
        steps = params[3] if len(params) > 3 else None
        if starts is None or ends is None or (len(params) > 2 and node.inputs[3].name and axes is None) \
                or (len(params) > 3 and node.inputs[4].name and steps is None):
            return None
    else:        # Slice before opset 10: attributes
        starts, ends = node.attrs.get("starts"), node.attrs.get("ends")
        axes, steps = node.attrs.get("axes"), None
        if starts is None or ends is None:
            return None
    starts, ends = np.ravel(starts), np.ravel(ends)
    axes = np.ravel(axes) if axes is not None else np.zeros(1, np.int64)
    steps = np.ravel(steps) if steps is not None else np.ones(1, np.int64)
    if not (len(starts) == len(ends) == len(axes) == len(steps) == 1) or int(axes[0]) not in (0, -1) \
            or int(steps[0]) == 0:
        return None
    return vec[slice(int(starts[0]), int(ends[0]), int(steps[0]))]


def _elem_type(dtype) -> int:
    """ONNX element type of a graphsurgeon dtype (0 when unknown)."""
    if dtype is None:
        return 0
    if isinstance(dtype, int):
        return dtype
    try:
        return int(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
    except (TypeError, KeyError, ValueError):
        return 0
