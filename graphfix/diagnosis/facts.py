"""What `graphfix check` knows about a model: dtypes, shapes, constants, consumers (main graph and
subgraphs). Constant values and the ops that never fold come from graphfix.onnx_values, which the
passes use too."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import numpy as np
import onnx

from ..onnx_values import DEFAULT_DOMAINS, constant_attr_value


def dtype_name(elem_type: int) -> Optional[str]:
    if not elem_type:
        return None
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return None


def node_attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            if isinstance(value, bytes):
                return value.decode("utf-8", "replace")
            if isinstance(value, list) and value and isinstance(value[0], bytes):
                return [v.decode("utf-8", "replace") for v in value]
            return value
    return default


def has_attr(node: onnx.NodeProto, name: str) -> bool:
    return any(a.name == name for a in node.attribute)


def subgraphs(node: onnx.NodeProto) -> List[onnx.GraphProto]:
    out = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def input_at(node: onnx.NodeProto, index: int) -> Optional[str]:
    """A node's input name at `index`, None when absent or written as ''."""
    return node.input[index] if index < len(node.input) and node.input[index] else None


@dataclass
class NodeRef:
    node: onnx.NodeProto
    display: str          # the node's name, or "<Op>#<index>" (with the subgraph path) when unnamed
    graph_path: str       # "" for the main graph


class ModelFacts:
    """Dtypes, shapes, constant-ness and consumers of every tensor (main graph and subgraphs)."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.opset = 0
        for o in model.opset_import:
            if o.domain in DEFAULT_DOMAINS:
                self.opset = int(o.version)
        self.inferred, self.inference_error = self._infer(model)
        self.types: Dict[str, onnx.TypeProto] = {}
        self.initializers: Dict[str, onnx.TensorProto] = {}
        self.constant_nodes: Dict[str, onnx.NodeProto] = {}
        self.producers: Dict[str, NodeRef] = {}
        self.consumers: Dict[str, List[NodeRef]] = {}
        self.nodes: List[NodeRef] = []
        self.graph_inputs = [i.name for i in self.inferred.graph.input]
        self.graph_outputs = [o.name for o in self.inferred.graph.output]
        self._collect(self.inferred.graph, "")
        self.weights: Set[str] = set(self.initializers) | set(self.constant_nodes)
        self._fold_values: Dict[str, np.ndarray] = {}
        self._values: Dict[str, Optional[np.ndarray]] = {}
        self._computed: Dict[str, Optional[np.ndarray]] = {}
        self.local_functions = {(f.domain, f.name) for f in model.functions}
        self.memo: Dict[Any, Any] = {}   # what callers derive from these facts once (see derived)

    def derived(self, key, compute: Callable[[], Any]) -> Any:
        """What a caller derives from the model once per check (a pass's own analysis, for the table
        of remedies and the predicates), computed on first use."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    @staticmethod
    def _infer(model: onnx.ModelProto) -> Tuple[onnx.ModelProto, Optional[str]]:
        try:
            return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False,
                                                     data_prop=True), None
        except Exception as exc:  # inference is a help, not a requirement: keep what the model says
            return model, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"

    def _collect(self, graph: onnx.GraphProto, path: str) -> None:
        for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
            if vi.name and vi.type.WhichOneof("value") is not None:
                self.types.setdefault(vi.name, vi.type)
        for init in graph.initializer:
            self.initializers.setdefault(init.name, init)
            if init.name not in self.types:
                t = onnx.TypeProto()
                t.tensor_type.elem_type = init.data_type
                for d in init.dims:
                    t.tensor_type.shape.dim.add().dim_value = d
                self.types[init.name] = t
        counts: Dict[str, int] = {}
        for index, node in enumerate(graph.node):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
            display = node.name or f"<{node.op_type}#{index}>"
            if path:
                display = f"{path}/{display}"
            ref = NodeRef(node, display, path)
            self.nodes.append(ref)
            for name in node.output:
                if name:
                    self.producers[name] = ref
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(ref)
            if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS and node.output:
                self.constant_nodes[node.output[0]] = node
            for sub in subgraphs(node):
                self._collect(sub, f"{display}/{sub.name or 'body'}")
                # names a subgraph reads from the outer scope count as consumed by the owning node
                for name in outer_names(sub):
                    self.consumers.setdefault(name, []).append(ref)

    # --- types and shapes
    def dtype(self, name: str) -> Optional[str]:
        t = self.types.get(name)
        if t is None or t.WhichOneof("value") != "tensor_type":
            return None
        return dtype_name(t.tensor_type.elem_type)

    def kind(self, name: str) -> Optional[str]:
        t = self.types.get(name)
        return t.WhichOneof("value") if t is not None else None

    def shape(self, name: str) -> Optional[List[Optional[int]]]:
        t = self.types.get(name)
        if t is None or t.WhichOneof("value") != "tensor_type" or not t.tensor_type.HasField("shape"):
            return None
        return [d.dim_value if d.HasField("dim_value") else None for d in t.tensor_type.shape.dim]

    def rank(self, name: str) -> Optional[int]:
        s = self.shape(name)
        return None if s is None else len(s)

    def static(self, name: str) -> bool:
        s = self.shape(name)
        return s is not None and all(d is not None for d in s)

    # --- constants
    def is_weights(self, name: str) -> bool:
        """What the parser sees as weights: an initializer or a Constant node's output."""
        return name in self.weights

    def value(self, name: str) -> Optional[np.ndarray]:
        if name in self._values:
            return self._values[name]
        value = None
        try:
            if name in self.initializers:
                from ..mapped_data import values   # weights left in the input's files too
                value = values(self.initializers[name])
            elif name in self.constant_nodes:
                node = self.constant_nodes[name]
                value = constant_attr_value({a.name: onnx.helper.get_attribute_value(a) for a in node.attribute})
        except Exception:  # external data not loaded, exotic types: the value stays unknown
            value = None
        self._values[name] = value
        return value

    def computed_value(self, name: str) -> Optional[np.ndarray]:
        """The value of a constant, or of a foldable tensor computed with ONNX's reference evaluator
        (e.g. Reduce axes that an exporter computes from Shape/Size/Range); None when unknown."""
        if self.is_weights(name):
            return self.value(name)
        if name not in self.foldable:
            return None
        if name in self._fold_values:
            return self._fold_values[name]
        if name not in self._computed:
            try:
                self._computed[name] = self._evaluate(name)
            except Exception:  # the evaluator lacks an op or a type: the value stays unknown
                self._computed[name] = None
        return self._computed[name]

    def _evaluate(self, name: str, max_nodes: int = 64) -> Optional[np.ndarray]:
        """Run the main-graph nodes `name` depends on, with constants and static Shape/Size as feeds."""
        from onnx.reference import ReferenceEvaluator
        feeds: Dict[str, np.ndarray] = {}
        cone: Set[int] = set()
        order = {id(ref.node): i for i, ref in enumerate(self.nodes)}
        stack, seen = [name], set()
        while stack:
            t = stack.pop()
            if not t or t in seen:
                continue
            seen.add(t)
            if self.is_weights(t):
                value = self.value(t)
                if value is None:
                    return None
                feeds[t] = value
                continue
            ref = self.producers.get(t)
            if ref is None or ref.graph_path:
                return None
            node = ref.node
            if node.op_type in ("Shape", "Size") and node.input and self.static(node.input[0]):
                shape = np.array(self.shape(node.input[0]), dtype=np.int64)
                if node.op_type == "Size":
                    feeds[t] = np.array(int(np.prod(shape)), dtype=np.int64)
                else:  # Python slicing clamps start/end exactly as Shape-15 does
                    feeds[t] = shape[node_attr(node, "start", 0):node_attr(node, "end", len(shape))]
                continue
            cone.add(order[id(node)])
            if len(cone) > max_nodes:
                return None
            stack.extend(node.input)
        nodes = [self.nodes[i].node for i in sorted(cone)]
        inputs = [onnx.helper.make_tensor_value_info(k, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                  for k, v in sorted(feeds.items())]
        graph = onnx.helper.make_graph(nodes, "computed_value", inputs,
                                       [onnx.helper.make_empty_tensor_value_info(name)])
        opsets = [o for o in self.model.opset_import if o.domain in DEFAULT_DOMAINS]
        model = onnx.helper.make_model(graph, opset_imports=opsets)
        return np.asarray(ReferenceEvaluator(model).run([name], feeds)[0])

    @functools.cached_property
    def foldable(self) -> Set[str]:
        """Tensors computable before run time: constants, and what fold-constants would compute from
        them (graphfix.fold_analysis, the pass's own analysis: static Shape/Size and static dims
        picked out of partly static shapes included; Q/DQ, random ops and graph outputs excluded)."""
        known = set(self.weights)
        try:
            from ..fold_analysis import Analysis, InferredShapes
            from ..graph_utils import to_graph
            g = self.inferred.graph
            analysis = Analysis(to_graph(self.inferred), InferredShapes({vi.name: vi for vi in
                                                                 list(g.input) + list(g.output) + list(g.value_info)}))
        except Exception:  # a model graphsurgeon cannot import: no tensor is known to fold
            return known
        for pos in analysis.foldable:
            known.update(o for o in analysis.output_names[pos] if o)
        self._fold_values = dict(analysis.values)   # computed already (static shapes, Constant nodes)
        return known

    def axes_value(self, name: Optional[str]) -> Optional[np.ndarray]:
        """A Reduce axes input's value: empty when its static shape is [0] (whatever feeds it), else
        the constant or foldable value, else None."""
        if name is None:
            return None
        if self.shape(name) == [0]:
            return np.zeros(0, dtype=np.int64)
        return self.computed_value(name)

    def used(self, name: str) -> bool:
        return bool(self.consumers.get(name)) or name in self.graph_outputs


def outer_names(graph: onnx.GraphProto) -> Set[str]:
    """Names a subgraph (and its nested subgraphs) reads that it does not define itself."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    read: Set[str] = set()
    for node in graph.node:
        read.update(i for i in node.input if i)
        for sub in subgraphs(node):
            read.update(outer_names(sub))
        defined.update(o for o in node.output if o)
    return read - defined
