"""fold-constants: compute before run time every value that depends only on constants.

What counts as constant: initializers, Constant nodes, Shape/Size of tensors whose shape is
fully static after ONNX shape inference (with data propagation), Gather/Slice picking static dims
out of a partly static Shape, and every deterministic standard op fed only by those. Shape-derived
chains (Shape -> Gather -> Unsqueeze -> Concat -> Reshape target, Cast/Sqrt of a head dim...) fold
away; so do weight chains (Transpose of a weight) and Constant-node arithmetic.

Only the values a remaining node reads (the "frontier") are stored, as initializers under their
own names; the folded nodes are removed, then the nodes that fed only them (a Shape whose static
dims were picked out). Evaluation runs in ONNX Runtime in batches (see _fold_eval), Shape/Size/
Constant values come from numpy. Shape inference is repeated after a round whose folded values may
make more shapes static, so one run reaches the fixed point and a second run changes nothing.

Kept computed, on purpose:
- nodes producing a graph output (the output stays produced by a node, never an initializer:
  TensorRT cannot mark a weight as a network output, and the model's I/O stays as written);
- QuantizeLinear/DequantizeLinear (TensorRT needs the Q/DQ pairs explicit, weights included);
- nondeterministic ops (Random*, Multinomial, Bernoulli), ops with subgraphs, non-standard domains,
  ops producing sequences or optionals;
- a value larger than PassContext.fold_size_limit (its producer stays; reported);
- a node ONNX Runtime cannot evaluate, and what depends on it (reported, with the error).
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from graphfix.graph_utils import OUTPUT_IR_VERSION
from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.passes._fold_eval import EvalNode, OrtEvaluator, one_line
from graphfix.registry import register_pass

NONDETERMINISTIC_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                                  "Multinomial", "Bernoulli"})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
NON_TENSOR_OPS = frozenset({"SequenceConstruct", "SequenceEmpty", "SequenceInsert", "SequenceErase",
                            "SplitToSequence", "Optional", "OptionalGetElement"})
STANDARD_DOMAINS = frozenset({"", "ai.onnx"})
SIMPLE_CONSTANT_ATTRS = frozenset({"value", "value_float", "value_floats", "value_int", "value_ints"})
# Float values that steer shapes (so folding them can make shape inference see more).
SHAPE_STEERING_OPS = frozenset({"Resize", "Upsample"})
MAX_ROUNDS = 8              # shape inference -> fold, repeated while a round can reveal more static shapes
SHAPE_MODEL_INIT_BYTES = 64 * 1024   # initializers this small go into the shape-inference model
MAX_WARNINGS_PER_KIND = 20

# How a foldable node gets its value.
NUMPY, ORT = "numpy", "ort"


@register_pass
class FoldConstants(Pass):
    info = PassInfo(
        name="fold-constants",
        summary="Compute values that depend only on constants (static Shape chains included) into initializers",
        fixes="parser asserts an input is a constant: '... must be an initializer', "
              "'inputs.at(1).is_weights()' (Reshape/Expand/TopK/Pad/Resize/Reduce axes computed from "
              "constants or static shapes); large Shape-arithmetic subgraphs",
        needs=("onnxruntime",),
        after=("normalize",),
    )

    def run(self, graph: gs.Graph) -> PassResult:
        result = PassResult()
        _Folder(graph, self.context, result).run()
        return result


class _Folder:
    """One run of the pass over one graph: rounds of (shape facts -> analysis -> evaluate -> rewrite)."""

    def __init__(self, graph: gs.Graph, context, result: PassResult):
        self.graph = graph
        self.result = result
        self.limit = int(context.fold_size_limit)
        self.base = _aligned_model(graph, context.model)
        self.protos: Dict[int, onnx.NodeProto] = {}   # id(node) -> proto: lookup only, never in output
        if self.base is not None:
            self.protos = {id(n): p for n, p in zip(graph.nodes, self.base.graph.node)}
        self.evaluator = OrtEvaluator(self._opset_imports(), self._ir_version())
        self.warned: Dict[str, int] = {}
        self.excluded: Set[int] = set()      # id(node) of nodes kept in an earlier round (lookup only)
        self.reported: Set[str] = set()      # near misses already counted, by node label

    # -- driver -------------------------------------------------------------------------------------

    def run(self) -> None:
        for _ in range(MAX_ROUNDS):
            facts = self._shape_facts()
            analysis = _Analysis(self.graph, facts, self.excluded)
            materialized = self._fold(analysis)
            if not materialized or not analysis.more_shapes_possible(materialized):
                break
        self._flush_warning_counts()

    # -- shape facts ----------------------------------------------------------------------------------

    def _shape_facts(self) -> "_Facts":
        """Tensor name -> dims (None for an unknown dim) and element type, from the graph's own
        annotations and from ONNX shape inference with data propagation (which follows
        Shape->Gather->Concat chains)."""
        facts = _Facts({}, {})
        for tensor in self.graph.tensors().values():
            if isinstance(tensor, gs.Variable):
                if tensor.shape is not None:
                    facts.dims[tensor.name] = tuple(d if isinstance(d, int) and d >= 0 else None
                                                    for d in tensor.shape)
                elem = _elem_type(tensor.dtype)
                if elem:
                    facts.types[tensor.name] = elem
        if not self._needs_inference():
            return facts
        model = self._shape_model()
        if model is None:
            return facts
        try:
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        except Exception as exc:  # a model ONNX's inference rejects: fold what the annotations give
            self._warn("shape-inference", f"ONNX shape inference failed ({one_line(exc)}); Shape nodes are "
                                          "folded only where the model's own annotations give static shapes")
            return facts
        g = inferred.graph
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            if vi.type.WhichOneof("value") != "tensor_type":
                continue
            tt = vi.type.tensor_type
            if tt.elem_type:
                facts.types.setdefault(vi.name, tt.elem_type)
            if tt.HasField("shape"):
                dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
                old = facts.dims.get(vi.name)
                if old is None or sum(d is None for d in dims) < sum(d is None for d in old):
                    facts.dims[vi.name] = dims
        return facts

    def _needs_inference(self) -> bool:
        """Shape/Size over variable tensors whose annotated shape is not static, CastLike whose
        type source has no annotated type."""
        for node in self.graph.nodes:
            if not node.inputs or not isinstance(node.inputs[-1], gs.Variable):
                continue
            if node.op in ("Shape", "Size"):
                shape = node.inputs[0].shape
                if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
                    return True
            elif node.op == "CastLike" and len(node.inputs) == 2 and not _elem_type(node.inputs[1].dtype):
                return True
        return False

    def _shape_model(self) -> Optional[onnx.ModelProto]:
        """The current graph as a light ModelProto for shape inference: the nodes' own protos, small
        initializers with their values, large ones declared as inputs (type and shape only)."""
        nodes = [self._proto(n) for n in self.graph.nodes]
        if any(p is None for p in nodes):
            return None
        base_inits = {t.name: t for t in self.base.graph.initializer} if self.base is not None else {}
        inputs: List[onnx.ValueInfoProto] = []
        inits: List[onnx.TensorProto] = []
        seen: Set[str] = set()
        graph_inputs = {t.name for t in self.graph.inputs}
        for node in self.graph.nodes:
            for t in node.inputs:
                if not isinstance(t, gs.Constant) or t.name in seen or t.name in graph_inputs:
                    continue
                seen.add(t.name)
                proto = base_inits.get(t.name)
                if proto is not None and proto.data_location != onnx.TensorProto.EXTERNAL \
                        and _proto_nbytes(proto) <= SHAPE_MODEL_INIT_BYTES:
                    inits.append(proto)
                    continue
                shape, dtype = _const_meta(t, proto)
                if dtype is None:
                    continue
                if proto is None and int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize \
                        <= SHAPE_MODEL_INIT_BYTES:
                    inits.append(numpy_helper.from_array(np.asarray(t.values), t.name))
                else:
                    inputs.append(helper.make_tensor_value_info(
                        t.name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape))
        if self.base is not None:
            g_in = list(self.base.graph.input)
            g_out = list(self.base.graph.output)
            value_info = list(self.base.graph.value_info)
        else:
            return None
        init_names = {t.name for t in inits}
        graph = helper.make_graph([], "gf.fold-constants.shapes",
                                  [i for i in g_in if i.name not in init_names] + inputs, g_out, inits,
                                  value_info=value_info)
        graph.node.extend(nodes)
        model = helper.make_model(graph, opset_imports=self._opset_imports())
        model.ir_version = self._ir_version()
        if self.base is not None:
            model.functions.extend(self.base.functions)
        return model

    # -- one round -------------------------------------------------------------------------------------

    def _fold(self, an: "_Analysis") -> List[gs.Tensor]:
        """Evaluate the frontier of the foldable region, store it, remove what it replaced."""
        self._report_near_misses(an)
        self._pre_demote(an)
        while True:
            needed = an.frontier()
            missing = {n for n in needed if n not in an.values}
            if missing:
                self._evaluate(an, missing)
                continue
            oversize = [n for n in sorted(needed, key=an.order_key)
                        if an.values[n].nbytes > self.limit and not an.is_constant_node(an.producer[n])]
            if not oversize:
                break
            for name in oversize:  # the value is known: nodes reading it may still fold (no cascade)
                pos = an.producer[name]
                self._keep(an, pos, "too-large", f"node '{an.label(pos)}' ({an.nodes[pos].op}) kept computed: "
                                                 f"its output '{name}' would be a {_size(an.values[name].nbytes)} "
                                                 f"constant, over the fold size limit of {_size(self.limit)}")
                an.unfold(pos, cascade=False)
        return self._rewrite(an, needed)

    def _pre_demote(self, an: "_Analysis") -> None:
        """Values whose inferred size is over the limit are never computed (nor what depends on them)."""
        for name in sorted(an.frontier(), key=an.order_key):
            pos = an.producer[name]
            size = an.static_nbytes(name)
            if pos in an.foldable and size is not None and size > self.limit and not an.is_constant_node(pos):
                self._keep(an, pos, "too-large", f"node '{an.label(pos)}' ({an.nodes[pos].op}) kept computed: its "
                                                 f"output '{name}' would be a {_size(size)} constant, over the fold "
                                                 f"size limit of {_size(self.limit)}")
                an.unfold(pos, cascade=True)

    def _evaluate(self, an: "_Analysis", missing: Set[str]) -> None:
        cone = an.ort_cone(missing)
        nodes = [EvalNode(pos, an.as_cast[pos][0], an.as_cast[pos][1], an.output_names[pos]) if pos in an.as_cast
                 else EvalNode(pos, self._proto(an.nodes[pos]), an.input_names[pos], an.output_names[pos])
                 for pos in cone]
        if any(n.proto is None for n in nodes):  # no proto for a node: export it (graphs without a model)
            from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
            nodes = [n if n.proto is not None else
                     EvalNode(n.pos, OnnxExporter.export_node(an.nodes[n.pos]), n.inputs, n.outputs) for n in nodes]
        outcome = self.evaluator.evaluate(nodes, missing, an.SourceView(an))
        an.values.update(outcome.values)
        for pos, error in sorted(outcome.failed.items()):
            if pos not in an.foldable:
                continue  # already dropped as depending on an earlier failure
            dropped = an.unfold(pos, cascade=True)
            blocked = len(dropped) - 1
            self._keep(an, pos, "failed", f"could not evaluate node '{an.label(pos)}' ({an.nodes[pos].op}): "
                                          f"{error}; " + (f"it and {blocked} node(s) depending on it stay computed" if blocked
                                                       else "it stays computed"), n=len(dropped))
        for name in sorted(missing, key=an.order_key):  # never loop on a value nobody computed
            pos = an.producer[name]
            if name not in an.values and pos in an.foldable:
                dropped = an.unfold(pos, cascade=True)
                self._keep(an, pos, "failed", f"node '{an.label(pos)}' ({an.nodes[pos].op}) kept computed: "
                                              f"ONNX Runtime returned no value for '{name}'", n=len(dropped))

    def _keep(self, an: "_Analysis", pos: int, kind: str, message: str, n: int = 1) -> None:
        """Record a node left computed for good in this run (later rounds do not retry it)."""
        self.excluded.add(id(an.nodes[pos]))
        self.result.count("kept_too_large" if kind == "too-large" else "kept_failed", n)
        self._warn(kind, message)

    def _rewrite(self, an: "_Analysis", needed: Set[str]) -> List[gs.Tensor]:
        frontier = sorted((n for n in needed if n in an.values), key=an.order_key)
        if not frontier:
            return []
        attributed: Set[int] = set()
        folded_nodes: List[int] = []
        materialized: List[gs.Tensor] = []
        for name in frontier:
            cone = [p for p in an.fold_cone(name) if p not in attributed]
            attributed.update(cone)
            folded_nodes.extend(cone)
            value = np.asarray(an.values[name])
            tensor = an.tensors[name]
            tensor.to_constant(value)
            materialized.append(tensor)
            self.result.change("fold", name, {
                "op": an.nodes[an.producer[name]].op,
                "nodes": [an.label(p) for p in cone],
                "dtype": str(value.dtype), "shape": [int(d) for d in value.shape]})
        removed = set(folded_nodes)
        for pos in sorted(removed):
            an.nodes[pos].inputs.clear()
            an.nodes[pos].outputs.clear()
        for tensor in materialized:
            tensor.inputs.clear()
        dead = self._sweep_dead(an, removed)
        keep = [n for i, n in enumerate(an.nodes) if i not in removed and i not in dead]
        order = {id(n): i for i, n in enumerate(self.graph.nodes)}
        self.graph.nodes = sorted(keep, key=lambda n: order[id(n)])  # the graph's own order, not ours
        self.result.count("nodes_folded", len(removed))
        self.result.count("tensors_folded", len(materialized))
        if dead:
            self.result.count("dead_nodes_removed", len(dead))
        return materialized

    def _sweep_dead(self, an: "_Analysis", removed: Set[int]) -> Set[int]:
        """Kept nodes whose outputs nothing reads any more (a Shape whose static dims were picked)."""
        dead: Set[int] = set()
        todo = sorted({an.producer[t.name] for pos in removed for t in an.original_inputs[pos]
                       if t.name in an.producer and an.producer[t.name] not in removed}, reverse=True)
        while todo:
            pos = todo.pop()
            if pos in dead or pos in removed:
                continue
            node = an.nodes[pos]
            if any(t.outputs or t.name in an.graph_outputs or t.name in an.subgraph_reads for t in node.outputs):
                continue
            dead.add(pos)
            self.result.change("remove-node", an.label(pos), {"op": node.op, "reason": "read only by folded nodes"})
            inputs = list(node.inputs)
            node.inputs.clear()
            node.outputs.clear()
            todo.extend(an.producer[t.name] for t in inputs if t.name in an.producer)
            todo.sort(reverse=True)
        return dead

    # -- reporting ---------------------------------------------------------------------------------------

    def _report_near_misses(self, an: "_Analysis") -> None:
        for pos, why in sorted(an.near_misses.items()):
            if an.label(pos) in self.reported:
                continue
            self.reported.add(an.label(pos))
            key = {"graph output": "kept_graph_output", "Q/DQ": "kept_qdq"}.get(why, "kept_unfoldable")
            self.result.count(key)
            if why in ("graph output", "Q/DQ"):
                continue  # expected and frequent: counted, not warned
            self._warn("unfoldable", f"node '{an.label(pos)}' ({an.nodes[pos].op}) has only constant inputs "
                                     f"but is not folded: {why}")

    def _warn(self, kind: str, message: str) -> None:
        self.warned[kind] = self.warned.get(kind, 0) + 1
        if self.warned[kind] <= MAX_WARNINGS_PER_KIND:
            self.result.warn(message)

    def _flush_warning_counts(self) -> None:
        for kind, n in sorted(self.warned.items()):
            if n > MAX_WARNINGS_PER_KIND:
                self.result.warn(f"... and {n - MAX_WARNINGS_PER_KIND} more '{kind}' warnings like the above")

    # -- model facts ---------------------------------------------------------------------------------------

    def _proto(self, node: gs.Node) -> Optional[onnx.NodeProto]:
        return self.protos.get(id(node))

    def _opset_imports(self) -> List[onnx.OperatorSetIdProto]:
        if self.base is not None and self.base.opset_import:
            return list(self.base.opset_import)
        return [helper.make_opsetid("", int(self.graph.opset))]

    def _ir_version(self) -> int:
        ir = self.base.ir_version if self.base is not None and self.base.ir_version else OUTPUT_IR_VERSION
        return max(3, min(ir, OUTPUT_IR_VERSION))


class _Facts:
    """What shape inference and the annotations say: dims (None where unknown) and element types."""

    def __init__(self, dims: Dict[str, Tuple[Optional[int], ...]], types: Dict[str, int]):
        self.dims = dims
        self.types = types


class _Analysis:
    """Which nodes of the current graph can be computed before run time, and how."""

    def __init__(self, graph: gs.Graph, facts: "_Facts", excluded: Set[int] = frozenset()):
        self.facts = facts.dims
        self.types = facts.types
        self.excluded = excluded
        self.nodes: List[gs.Node] = _topological(graph.nodes)
        self.input_names = [tuple(t.name for t in n.inputs) for n in self.nodes]
        self.output_names = [tuple(t.name for t in n.outputs) for n in self.nodes]
        self.original_inputs = [list(n.inputs) for n in self.nodes]
        self.producer: Dict[str, int] = {}
        self.readers: Dict[str, List[int]] = {}
        self.tensors: Dict[str, gs.Tensor] = {}
        for pos, node in enumerate(self.nodes):
            for t in node.outputs:
                if t.name:
                    self.producer[t.name] = pos
                    self.tensors[t.name] = t
            for t in node.inputs:
                if t.name:
                    self.readers.setdefault(t.name, []).append(pos)
                    self.tensors.setdefault(t.name, t)
        self.graph_outputs = {t.name for t in graph.outputs}
        self.graph_inputs = {t.name for t in graph.inputs}
        self.subgraph_reads = _subgraph_reads(self.nodes)
        self.values: Dict[str, np.ndarray] = {}
        self.foldable: Dict[int, str] = {}          # pos -> NUMPY or ORT
        # CastLike(constant, x) evaluated as Cast(constant, to=type of x): pos -> (proto, inputs)
        self.as_cast: Dict[int, Tuple[onnx.NodeProto, Tuple[str, ...]]] = {}
        self.near_misses: Dict[int, str] = {}
        self._classify()

    # -- classification ------------------------------------------------------------------------------

    def is_const(self, name: str) -> bool:
        if not name:
            return True  # an omitted optional input
        if name in self.graph_inputs:
            return False
        pos = self.producer.get(name)
        if pos is not None:
            return pos in self.foldable
        return isinstance(self.tensors.get(name), gs.Constant)

    def _classify(self) -> None:
        for pos, node in enumerate(self.nodes):
            if id(node) in self.excluded:
                continue
            how = self._how(pos, node)
            if how is None:
                continue
            if any(t.name in self.graph_outputs for t in node.outputs):
                self.near_misses[pos] = "graph output"
                continue
            self.foldable[pos] = how

    def _how(self, pos: int, node: gs.Node) -> Optional[str]:
        if (node.domain or "") not in STANDARD_DOMAINS:
            return None
        if node.op == "Constant":
            value = _constant_node_value(node)
            if value is not None:
                self.values[node.outputs[0].name] = value
                return NUMPY
            return ORT
        if node.op == "CastLike" and len(node.inputs) == 2 and len(node.outputs) == 1 \
                and self.is_const(node.inputs[0].name) and not self.is_const(node.inputs[1].name):
            to = self.types.get(node.inputs[1].name)    # depends on x's type only, like Shape on its shape
            if not to:
                return None
            src, out = node.inputs[0].name, node.outputs[0].name
            self.as_cast[pos] = (helper.make_node("Cast", [src], [out], name=node.name, to=to), (src,))
            return ORT
        inputs_const = all(self.is_const(t.name) for t in node.inputs)
        if not inputs_const:
            value = self._static_shape_value(node)
            if value is None:
                return None
            self.values[node.outputs[0].name] = value
            return NUMPY
        why = _unfoldable_reason(node)
        if why is not None:
            self.near_misses[pos] = why
            return None
        return ORT

    def _static_shape_value(self, node: gs.Node) -> Optional[np.ndarray]:
        """Shape/Size of a static tensor; Gather/Slice of static dims out of a partly static Shape."""
        if node.op in ("Shape", "Size") and len(node.inputs) == 1 and len(node.outputs) == 1:
            dims = self.facts.get(node.inputs[0].name)
            if dims is None:
                return None
            if node.op == "Size":
                return np.array(int(np.prod(dims, dtype=np.int64)), np.int64) if None not in dims else None
            picked = _shape_slice(dims, node.attrs.get("start", 0), node.attrs.get("end"))
            return np.array(picked, np.int64) if None not in picked else None
        if node.op in ("Gather", "Slice") and node.inputs and len(node.outputs) == 1:
            shape_pos = self.producer.get(node.inputs[0].name)
            if shape_pos is None or self.nodes[shape_pos].op != "Shape" or shape_pos in self.foldable:
                return None
            shape_node = self.nodes[shape_pos]
            dims = self.facts.get(shape_node.inputs[0].name)
            if dims is None or not all(self.is_const(t.name) for t in node.inputs[1:]):
                return None
            dims = _shape_slice(dims, shape_node.attrs.get("start", 0), shape_node.attrs.get("end"))
            picked = _pick_dims(node, dims, [self._value_of(t) for t in node.inputs[1:]])
            if picked is None or None in picked.flat:
                return None
            return picked.astype(np.int64)
        return None

    def _value_of(self, tensor: gs.Tensor) -> Optional[np.ndarray]:
        if not tensor.name:
            return None
        if tensor.name in self.values:
            return self.values[tensor.name]
        if isinstance(tensor, gs.Constant):
            return np.asarray(tensor.values)
        return None  # computed by ONNX Runtime later: not known during classification

    # -- queries used by the folder ---------------------------------------------------------------

    def order_key(self, name: str) -> Tuple[int, str]:
        return (self.producer.get(name, -1), name)

    def label(self, pos: int) -> str:
        node = self.nodes[pos]
        return node.name or f"{node.op} -> {self.output_names[pos][0] if self.output_names[pos] else '?'}"

    def is_constant_node(self, pos: int) -> bool:
        return self.nodes[pos].op == "Constant"  # its value is in the model already: no size limit

    def frontier(self) -> Set[str]:
        needed: Set[str] = set()
        for pos in self.foldable:
            needed.update(self._frontier_outputs(pos))
        return needed

    def frontier_of(self, pos: int) -> Set[str]:
        """Values a node now kept computed reads from foldable nodes (they become frontier)."""
        return {name for name in self.input_names[pos] if name and self.producer.get(name) in self.foldable}

    def _frontier_outputs(self, pos: int) -> Iterable[str]:
        for name in self.output_names[pos]:
            if not name:
                continue
            if name in self.subgraph_reads or any(r not in self.foldable for r in self.readers.get(name, ())):
                yield name

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
        dims = self.facts.get(name)
        tensor = self.tensors.get(name)
        dtype = getattr(tensor, "dtype", None)
        if dims is None or None in dims or dtype is None:
            return None
        try:
            itemsize = np.dtype(dtype).itemsize
        except TypeError:
            return None
        return int(np.prod(dims, dtype=np.int64)) * itemsize

    def ort_cone(self, wanted: Set[str]) -> List[int]:
        """Foldable ORT nodes needed to compute `wanted` from known values, topological order."""
        cone: Set[int] = set()
        stack = [self.producer[n] for n in wanted if n not in self.values]
        while stack:
            pos = stack.pop()
            if pos in cone or self.foldable.get(pos) != ORT:
                continue
            cone.add(pos)
            for name in self.input_names[pos]:
                if name and name not in self.values and name in self.producer:
                    stack.append(self.producer[name])
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
            for inp in self.input_names[pos]:
                if inp in self.producer:
                    stack.append(self.producer[inp])
        return sorted(cone)

    def more_shapes_possible(self, materialized: Sequence[gs.Tensor]) -> bool:
        """Whether another round of shape inference could fold more: a Shape/Size is left over a
        non-static tensor, and a value just stored steers the shape of a node left with a non-static
        output (integer values: Reshape targets, axes, repeats...; float scales of Resize)."""
        unresolved = any(n.op in ("Shape", "Size") and n.inputs and not isinstance(n.inputs[0], gs.Constant)
                         and n.outputs and n.outputs[0].inputs for n in self.nodes)
        if not unresolved:
            return False
        for tensor in materialized:
            integer = np.issubdtype(np.asarray(tensor.values).dtype, np.integer)
            for node in tensor.outputs:
                if not integer and node.op not in SHAPE_STEERING_OPS:
                    continue
                if any(self.facts.get(t.name) is None or None in self.facts[t.name] for t in node.outputs if t.name):
                    return True
        return False

    class SourceView:
        """Values the evaluator may feed: stored constants and values computed so far."""

        def __init__(self, an: "_Analysis"):
            self.an = an

        def __contains__(self, name: str) -> bool:
            return name in self.an.values or isinstance(self.an.tensors.get(name), gs.Constant)

        def __getitem__(self, name: str) -> np.ndarray:
            if name in self.an.values:
                return self.an.values[name]
            return np.asarray(self.an.tensors[name].values)


# -- helpers -----------------------------------------------------------------------------------------------

def _aligned_model(graph: gs.Graph, model: Optional[onnx.ModelProto]) -> Optional[onnx.ModelProto]:
    """The model the graph was imported from, if it still matches node for node; else an export."""
    if model is not None and len(model.graph.node) == len(graph.nodes) and all(
            p.op_type == n.op and list(p.output) == [t.name for t in n.outputs]
            for p, n in zip(model.graph.node, graph.nodes)):
        return model
    try:
        return gs.export_onnx(graph, do_type_check=False)
    except Exception:  # graphs gs cannot export whole: nodes are exported one by one when evaluated
        return None


def _topological(nodes: Sequence[gs.Node]) -> List[gs.Node]:
    """Nodes in topological order, keeping the given order where it is already valid."""
    nodes = list(nodes)
    producer = {t.name: i for i, n in enumerate(nodes) for t in n.outputs if t.name}
    deps = [{producer[t.name] for t in n.inputs if t.name in producer} for n in nodes]
    if all(all(d < i for d in ds) for i, ds in enumerate(deps)):
        return nodes
    import heapq
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
    order.extend(i for i in range(len(nodes)) if pending[i] > 0)  # a cycle: leave it to the checks
    return [nodes[i] for i in order]


def _subgraph_reads(nodes: Sequence[gs.Node]) -> Set[str]:
    """Names read inside If/Loop/Scan bodies (they may be outer-scope values)."""
    names: Set[str] = set()
    stack = [v for n in nodes for v in n.attrs.values() if isinstance(v, gs.Graph)]
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
    if len(node.attrs) != 1 or len(node.outputs) != 1:
        return None
    (key, value), = node.attrs.items()
    if key not in SIMPLE_CONSTANT_ATTRS:
        return None
    if key == "value":
        return np.asarray(value.values) if isinstance(value, gs.Constant) else None
    if key in ("value_float", "value_floats"):
        return np.asarray(value, dtype=np.float32)
    return np.asarray(value, dtype=np.int64)


def _shape_slice(dims: Sequence[Optional[int]], start, end) -> List[Optional[int]]:
    """The dims Shape(start, end) returns (ONNX clamps exactly like a Python slice)."""
    return list(dims)[slice(int(start), None if end is None else int(end))]


def _pick_dims(node: gs.Node, dims: List[Optional[int]], params: List[Optional[np.ndarray]]
               ) -> Optional[np.ndarray]:
    """Gather (axis 0) or Slice (axis 0) applied to a partly known shape vector; None if not static."""
    vec = np.array(dims, dtype=object)
    if node.op == "Gather":
        if int(node.attrs.get("axis", 0)) not in (0, -1) or not params or params[0] is None:
            return None
        idx = params[0].astype(np.int64)
        if np.any(idx < -len(dims)) or np.any(idx >= len(dims)):
            return None
        return vec[np.where(idx < 0, idx + len(dims), idx)]
    # Slice: opset >= 10 takes starts/ends/axes/steps as inputs, older ones as attributes
    if params:
        starts, ends = params[0], params[1] if len(params) > 1 else None
        axes = params[2] if len(params) > 2 else None
        steps = params[3] if len(params) > 3 else None
        if starts is None or ends is None or (len(params) > 2 and node.inputs[3].name and axes is None) \
                or (len(params) > 3 and node.inputs[4].name and steps is None):
            return None
    else:
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
    """ONNX element type of a graphsurgeon dtype (0 when unknown or not a numpy dtype)."""
    if dtype is None:
        return 0
    if isinstance(dtype, int):
        return dtype
    try:
        return int(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
    except (TypeError, KeyError, ValueError):
        return 0


def _const_meta(tensor: gs.Constant, proto: Optional[onnx.TensorProto]):
    if proto is not None:
        try:
            return list(proto.dims), helper.tensor_dtype_to_np_dtype(proto.data_type)
        except Exception:
            return list(proto.dims), None
    try:
        return list(tensor.shape), np.dtype(tensor.dtype)
    except TypeError:
        return list(tensor.shape), None


def _proto_nbytes(proto: onnx.TensorProto) -> int:
    n = int(np.prod(list(proto.dims), dtype=np.int64)) if proto.dims else 1
    try:
        return n * np.dtype(helper.tensor_dtype_to_np_dtype(proto.data_type)).itemsize
    except Exception:
        return n * 8


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.4g} {unit}"
    return f"{nbytes} bytes"
