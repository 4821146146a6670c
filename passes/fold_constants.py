"""fold-constants: compute before run time every value that depends only on constants.

What counts as constant: initializers, Constant nodes, Shape/Size of tensors whose shape is
fully static after ONNX shape inference (with data propagation), Gather/Slice picking static dims
out of a partly static Shape, CastLike of a constant to a tensor of known type, and every
deterministic standard op fed only by those. Shape-derived chains (Shape -> Gather -> Unsqueeze ->
Concat -> Reshape target, Cast/Sqrt of a head size...) fold away; so do weight chains (Transpose
of a stored weight) and Constant-node arithmetic. See graphfix/fold_analysis.py.

Only the values a remaining node reads (the "frontier") are stored, as initializers under their
own names; the folded nodes are removed, then the nodes that fed only them (a Shape whose static
dims were picked out). Values come from numpy (Shape, Size, Constant) or ONNX Runtime, in batches
with per-region and per-node fallback (see _fold_eval). Shape inference is repeated after a round
whose stored values may make more shapes static, so one run reaches the fixed point and a second
run changes nothing.

Kept computed, on purpose:
- nodes producing a graph output: the output stays produced by a node, never an initializer
  (ONNX allows it, but the model's outputs stay as written and TensorRT cannot mark a weight as a
  network output); their inputs still fold;
- QuantizeLinear/DequantizeLinear (TensorRT needs the Q/DQ pairs explicit, on weights too);
- nondeterministic ops (Random*, Multinomial, Bernoulli), ops with subgraphs, non-standard
  domains, ops producing sequences or optionals;
- a value larger than PassContext.fold_size_limit (its producer stays; reported);
- a node ONNX Runtime cannot evaluate, and what depends on it (reported with the error).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Set

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from graphfix.graph_utils import OUTPUT_IR_VERSION
from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.fold_analysis import Analysis, InferredShapes
from graphfix.passes._fold_eval import EvalNode, OrtEvaluator, one_line
from graphfix.registry import register_pass
from graphfix.remedies import fixes_finding, fixes_parser_error

MAX_ROUNDS = 8                        # shape inference -> fold, while a round can reveal more static shapes
SHAPE_MODEL_INIT_BYTES = 64 * 1024    # initializers this small go into the shape-inference model
MAX_WARNINGS_PER_KIND = 20


def _foldable_input(site) -> bool:
    """Folding helps only where the profile rule's input can be computed before run time."""
    return site.input(site.params["input"]) in site.facts.foldable


def _read_only_by_folded(site) -> bool:
    """Every reader of the constant folds away (and it is no graph output)."""
    f, name = site.facts, site.tensor
    readers = f.consumers.get(name, [])
    return bool(readers) and all(o in f.foldable for c in readers for o in c.node.output if o) \
        and name not in f.graph_outputs


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
        remedies=(
            fixes_finding("const_input", applies=_foldable_input,
                          why="an input the parser needs as weights, computable before run time"),
            fixes_finding("float_shape_input", why="a shape computed from float values becomes a constant"),
            fixes_finding("int64-out-of-range", applies=_read_only_by_folded,
                          why="the value never reaches TensorRT when every reader folds away"),
            fixes_parser_error(r"must be an initializer|must be (?:a )?constant|is_weights\(\)|must be static",
                               why="the parser needs this input as a constant; folding computes it"),
        ),
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
        # folded nodes are all in the standard domain: import only it (ONNX Runtime may refuse others)
        self.evaluator = OrtEvaluator([o for o in self._opset_imports() if o.domain in ("", "ai.onnx")]
                                      or [helper.make_opsetid("", int(graph.opset))], self._ir_version())
        self.stored: Dict[str, np.ndarray] = {}   # values stored as initializers in this run
        self.excluded: Set[int] = set()            # id(node) of nodes kept for good (lookup only)
        self.reported: Set[str] = set()            # near misses already counted, by node label
        self.warned: Dict[str, int] = {}
        self._inits: Optional[Dict[str, onnx.TensorProto]] = None

    def run(self) -> None:
        for _ in range(MAX_ROUNDS):
            analysis = Analysis(self.graph, self._shape_facts(), self.excluded, self.protos)
            stored, removed = self._fold(analysis)
            if not stored or not analysis.more_shapes_possible(stored, removed):
                break
        self._flush_warning_counts()

    # -- shape facts ----------------------------------------------------------------------------------

    def _shape_facts(self) -> InferredShapes:
        """ONNX shape inference with data propagation (it follows Shape->Gather->Concat chains), run
        only when a Shape/Size/CastLike needs more than the model's own annotations say."""
        if not self._needs_inference():
            return InferredShapes()
        model = self._shape_model()
        if model is None:
            return InferredShapes()
        try:
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        except Exception as exc:  # a model ONNX's inference rejects: fold what the annotations give
            self._warn("shape-inference", f"ONNX shape inference failed ({one_line(exc)}); Shape nodes are "
                                          "folded only where the model's own annotations give static shapes")
            return InferredShapes()
        g = inferred.graph
        return InferredShapes({vi.name: vi for vi in list(g.input) + list(g.output) + list(g.value_info)})

    def _needs_inference(self) -> bool:
        """Shape/Size/CastLike over a computed tensor: its annotation alone is not trusted (inference
        reads it too, and checks it against the graph)."""
        return any(n.op in ("Shape", "Size", "CastLike") and n.inputs and isinstance(n.inputs[-1], gs.Variable)
                   for n in self.graph.nodes)

    def _shape_model(self) -> Optional[onnx.ModelProto]:
        """The current graph as a light ModelProto for shape inference: the nodes' own protos, small
        initializers with their values, large ones declared as inputs (type and shape only)."""
        if self.base is None:
            return None
        nodes = [self.protos[id(n)] for n in self.graph.nodes]
        inputs = list(self.base.graph.input)
        declared = {i.name for i in inputs}
        inits: List[onnx.TensorProto] = []
        for init in self.base.graph.initializer:
            if init.name in declared:
                continue
            if init.data_location != onnx.TensorProto.EXTERNAL and _proto_nbytes(init) <= SHAPE_MODEL_INIT_BYTES:
                inits.append(init)
            else:
                inputs.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        for name, value in self.stored.items():
            if value.nbytes <= SHAPE_MODEL_INIT_BYTES:
                inits.append(numpy_helper.from_array(value, name))
            else:
                inputs.append(helper.make_tensor_value_info(
                    name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
        graph = helper.make_graph([], "gf.fold-constants.shapes", inputs, list(self.base.graph.output), inits,
                                  value_info=list(self.base.graph.value_info))
        graph.node.extend(nodes)
        model = helper.make_model(graph, opset_imports=self._opset_imports())
        model.ir_version = self._ir_version()
        model.functions.extend(self.base.functions)
        return model

    # -- one round -------------------------------------------------------------------------------------

    def _fold(self, an: Analysis):
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
                self._too_large(an, name, an.values[name].nbytes)
                an.unfold(an.producer[name], cascade=False)
        return self._rewrite(an, needed)

    def _pre_demote(self, an: Analysis) -> None:
        """Values whose inferred size is over the limit are never computed (nor what depends on them)."""
        for name in sorted(an.frontier(), key=an.order_key):
            pos = an.producer[name]
            if pos not in an.foldable or an.is_constant_node(pos):
                continue
            size = an.static_nbytes(name)
            if size is not None and size > self.limit:
                self._too_large(an, name, size)
                an.unfold(pos, cascade=True)

    def _evaluate(self, an: Analysis, missing: Set[str]) -> None:
        cone = an.ort_cone(missing)
        reason = self.evaluator.unusable() if cone else None
        if reason is not None:   # one warning, not one per node
            dropped = [p for pos in cone if pos in an.foldable for p in an.unfold(pos, cascade=True)]
            self.result.count("kept_failed", len(dropped))
            self._warn("failed", f"ONNX Runtime cannot evaluate nodes of this model ({reason}): {len(dropped)} "
                                 "node(s) stay computed; only Shape/Size/Constant values were folded")
            for pos in cone:
                self.excluded.add(id(an.nodes[pos]))
            return
        nodes = []
        for pos in cone:
            if pos in an.as_cast:
                proto, inputs = an.as_cast[pos]
            else:
                proto, inputs = self._proto(an.nodes[pos]), an.input_names[pos]
            nodes.append(EvalNode(pos, proto, inputs, an.output_names[pos]))
        outcome = self.evaluator.evaluate(nodes, missing, an.source_view(self._base_initializers()))
        an.values.update(outcome.values)
        for pos, error in sorted(outcome.failed.items()):
            if pos not in an.foldable:
                continue  # already dropped as depending on an earlier failure
            dropped = an.unfold(pos, cascade=True)
            after = (f"it and {len(dropped) - 1} node(s) depending on it stay computed" if len(dropped) > 1
                     else "it stays computed")
            self._keep(an, pos, "failed", f"could not evaluate node '{an.label(pos)}' ({an.nodes[pos].op}): "
                                          f"{error}; {after}", n=len(dropped))
        for name in sorted(missing, key=an.order_key):  # never loop on a value nobody computed
            pos = an.producer[name]
            if name not in an.values and pos in an.foldable:
                dropped = an.unfold(pos, cascade=True)
                self._keep(an, pos, "failed", f"node '{an.label(pos)}' ({an.nodes[pos].op}) kept computed: "
                                              f"ONNX Runtime returned no value for '{name}'", n=len(dropped))

    def _too_large(self, an: Analysis, name: str, nbytes: int) -> None:
        pos = an.producer[name]
        self._keep(an, pos, "too-large", f"node '{an.label(pos)}' ({an.nodes[pos].op}) kept computed: its output "
                                         f"'{name}' would be a {_size(nbytes)} constant, over the fold size limit "
                                         f"of {_size(self.limit)}")

    def _keep(self, an: Analysis, pos: int, kind: str, message: str, n: int = 1) -> None:
        """Record a node left computed for good in this run (later rounds do not retry it)."""
        self.excluded.add(id(an.nodes[pos]))
        self.result.count("kept_too_large" if kind == "too-large" else "kept_failed", n)
        self._warn(kind, message)

    def _rewrite(self, an: Analysis, needed: Set[str]):
        """Store the frontier values as initializers, remove the nodes they replace and the nodes
        left dead; one change per stored value, naming the nodes it replaces."""
        frontier = sorted(needed, key=an.order_key)
        if not frontier:
            return {}, set()
        tensors = {name: an.tensor(name) for name in frontier}   # resolve before disconnecting
        removed: Set[int] = set()
        stored: Dict[str, np.ndarray] = {}
        for name in frontier:
            cone = [p for p in an.fold_cone(name) if p not in removed]
            removed.update(cone)
            value = np.asarray(an.values[name])
            tensors[name].to_constant(value)
            stored[name] = value
            self.result.change("fold", name, {
                "op": an.nodes[an.producer[name]].op, "nodes": [an.label(p) for p in cone],
                "dtype": str(value.dtype), "shape": [int(d) for d in value.shape]})
        for pos in sorted(removed):
            an.nodes[pos].inputs.clear()
            an.nodes[pos].outputs.clear()
        dead = self._sweep_dead(an, removed)
        gone = {id(an.nodes[p]) for p in removed | dead}
        self.graph.nodes = [n for n in self.graph.nodes if id(n) not in gone]   # the graph's own order
        self.stored.update(stored)
        self.result.count("nodes_folded", len(removed))
        self.result.count("tensors_folded", len(stored))
        if dead:
            self.result.count("dead_nodes_removed", len(dead))
        return stored, removed | dead

    def _sweep_dead(self, an: Analysis, removed: Set[int]) -> Set[int]:
        """Kept nodes whose outputs nothing reads any more (a Shape whose static dims were picked)."""
        dead: Set[int] = set()
        todo = sorted({an.producer[n] for pos in removed for n in an.input_names[pos]
                       if n in an.producer and an.producer[n] not in removed}, reverse=True)
        while todo:
            pos = todo.pop()
            if pos in dead or pos in removed:
                continue
            node = an.nodes[pos]
            if any(t.outputs or t.name in an.graph_outputs or t.name in an.subgraph_reads for t in node.outputs):
                continue
            dead.add(pos)
            self.result.change("remove-node", an.label(pos), {"op": node.op, "reason": "read only by folded nodes"})
            node.inputs.clear()
            node.outputs.clear()
            todo.extend(an.producer[n] for n in an.input_names[pos] if n in an.producer)
            todo.sort(reverse=True)
        return dead

    # -- reporting ---------------------------------------------------------------------------------------

    def _report_near_misses(self, an: Analysis) -> None:
        for pos, why in sorted(an.near_misses.items()):
            label = an.label(pos)
            if label in self.reported:
                continue
            self.reported.add(label)
            self.result.count({"graph output": "kept_graph_output", "Q/DQ": "kept_qdq"}.get(why, "kept_unfoldable"))
            if why not in ("graph output", "Q/DQ"):  # those two are expected and frequent: counted only
                self._warn("unfoldable", f"node '{label}' ({an.nodes[pos].op}) has only constant inputs but is "
                                         f"not folded: {why}")

    def _warn(self, kind: str, message: str) -> None:
        self.warned[kind] = self.warned.get(kind, 0) + 1
        if self.warned[kind] <= MAX_WARNINGS_PER_KIND:
            self.result.warn(message)

    def _flush_warning_counts(self) -> None:
        for kind, n in sorted(self.warned.items()):
            if n > MAX_WARNINGS_PER_KIND:
                self.result.warn(f"... and {n - MAX_WARNINGS_PER_KIND} more '{kind}' warnings like the above")

    # -- model facts ---------------------------------------------------------------------------------------

    def _proto(self, node: gs.Node) -> onnx.NodeProto:
        proto = self.protos.get(id(node))
        if proto is None:  # a graph with no model to match: export the node (first use only)
            from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
            proto = self.protos[id(node)] = OnnxExporter.export_node(node)
        return proto

    def _base_initializers(self) -> Dict[str, onnx.TensorProto]:
        if self._inits is None:
            self._inits = {t.name: t for t in self.base.graph.initializer} if self.base is not None else {}
        return self._inits

    def _opset_imports(self) -> List[onnx.OperatorSetIdProto]:
        if self.base is not None and self.base.opset_import:
            return list(self.base.opset_import)
        return [helper.make_opsetid("", int(self.graph.opset))]

    def _ir_version(self) -> int:
        ir = self.base.ir_version if self.base is not None and self.base.ir_version else OUTPUT_IR_VERSION
        return max(3, min(ir, OUTPUT_IR_VERSION))


def _aligned_model(graph: gs.Graph, model: Optional[onnx.ModelProto]) -> Optional[onnx.ModelProto]:
    """The model the graph was imported from, if it still matches node for node; else an export."""
    if model is not None and len(model.graph.node) == len(graph.nodes) and all(
            p.op_type == n.op and len(p.output) == len(n.outputs) and (not p.output or p.output[0] == n.outputs[0].name)
            for p, n in zip(model.graph.node, graph.nodes)):
        return model
    try:
        return gs.export_onnx(graph, do_type_check=False)
    except Exception:  # graphs gs cannot export whole: nodes are exported one by one when evaluated
        return None


_ITEMSIZE: Dict[int, int] = {}


def _proto_nbytes(proto: onnx.TensorProto) -> int:
    size = _ITEMSIZE.get(proto.data_type)
    if size is None:
        try:
            size = np.dtype(helper.tensor_dtype_to_np_dtype(proto.data_type)).itemsize
        except (KeyError, TypeError, ValueError):
            size = 8
        _ITEMSIZE[proto.data_type] = size
    return math.prod(proto.dims) * size


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.4g} {unit}"
    return f"{nbytes} bytes"


def refold(graph: gs.Graph, context, result: PassResult) -> None:
    """fold-constants over what another pass just brought into the main graph (an inlined If branch,
    an op's function body), its changes, warnings and counts added to that pass's result."""
    from graphfix.pass_api import PassContext
    ctx = PassContext(target=context.target, int32_io=context.int32_io, fold_size_limit=context.fold_size_limit,
                      options=context.options, model=None)
    folded = FoldConstants(ctx).run(graph)
    result.changes.extend(folded.changes)
    result.warnings.extend(folded.warnings)
    for key, n in folded.counts.items():
        result.count(key, n)
