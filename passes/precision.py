"""Mixed precision in the ONNX itself: FP16 (or BF16) where safe, FP32 islands where it is not.

TensorRT 11 and TensorRT-RTX build strongly typed networks (the FP16 builder flag is gone): the
ONNX's types are the engine's types. On 8.6/10.x, an FP16 engine of a mixed model is built with the
FP16 flag (``builder_fp16_flag``). Opt-in: ``PassContext.options["precision"] = "fp16" | "bf16"``
(CLI ``--precision``), with ``keep_io_types`` (default True) and ``calibration_data`` (an .npz path
or a dict of input arrays; default: the seeded inputs of the checks).

Each float node computes in the low type unless a rule in ``_precision_rules`` keeps it FP32 (by op:
normalizations, Softmax, statistics reductions, Exp/Log/Pow/Sqrt/Reciprocal on unbounded inputs,
CumSum, Range, Q/DQ, ops the target imports in FP32 only; by value: constants that overflow or
underflow in bulk, activations above a fraction of the low type's max on the calibration run). A
node with no such reason whose float inputs all come from FP32 and whose readers are all FP32 stays
FP32 too: converting it would only add Casts (MatMul, Gemm, Conv and the like convert all the same). Constants are stored in the low type (a -inf or
finfo(float32).min mask gets a finite stand-in); one Cast per tensor and direction joins the
islands; a Cast that would read a Cast reads its source instead. The report lists each FP32 node
with its reason and island.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphfix.graph_utils import NameMaker, remove_dead_nodes, to_model, toposort_if_needed
from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.profiles import load_profile
from graphfix.registry import register_pass
from graphfix.remedies import fixes_finding
from graphfix.target import TrtVersion

from ._precision_rules import (DEFAULT_VALUE_FRACTION, FLOAT, LOW_MAX, LOW_TYPES, calibration_feeds, const_of,
                               constant_reason, float_slots, label, load_calibration, mask_extreme, measure_absmax,
                               op_reason, producer, safe_mask_value, to_low, with_finite_masks)

LOW_NAMES = {onnx.TensorProto.FLOAT16: "FLOAT16", onnx.TensorProto.BFLOAT16: "BFLOAT16"}
CONSTANT_PRODUCERS = ("Constant", "ConstantOfShape")
MASK_FLOW = frozenset({"Mul", "Add", "Sub", "Neg", "Where", "Unsqueeze", "Squeeze", "Reshape", "Expand", "Cast",
                       "Concat", "Slice", "Transpose", "Min", "Max", "Tile", "Identity"})
# Worth their Casts: the speed of low precision is in these, so they convert even between FP32 nodes
COMPUTE_HEAVY = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum", "Attention", "MatMulInteger"})
BETWEEN_FP32 = "between FP32 nodes: converting it would only add Casts"


def builder_fp16_flag(target, precision: Optional[str]) -> bool:
    """Whether TensorRT's FP16 builder flag goes with a mixed-precision model on `target`: yes on
    8.6 and 10.x (weakly typed builders choose kernels by flag); no on 11.x, whose strongly typed
    networks take the ONNX's types as the engine's."""
    return precision == "fp16" and TrtVersion.parse(target) < TrtVersion(11, 0)


@register_pass
class Precision(Pass):
    info = PassInfo(
        name="precision",
        summary="Mixed precision in the ONNX (opt-in --precision fp16|bf16): low precision where safe, "
                "FP32 islands (with the reason per node) where values overflow or reductions lose accuracy",
        fixes="TensorRT 11 / TensorRT-RTX: no FP16 builder flag (strongly typed networks: precision lives in "
              "the ONNX); FP16 engines overflowing in decomposed LayerNorm, Softmax, -inf masks, Pow/Exp",
        after=("fuse-layernorm",),
        before=("plugins",),
        default=False,
        remedies=(fixes_finding("fp16-strongly-typed", flag="--precision fp16",
                                why="FP16 types in the ONNX, FP32 islands where values overflow"),),
    )

    def run(self, graph: gs.Graph) -> PassResult:
        result = PassResult()
        opts = self.context.options
        precision = opts.get("precision")
        if not precision:
            return result
        if precision not in LOW_TYPES:
            raise ValueError(f"precision must be one of {sorted(LOW_TYPES)}, not {precision!r}")
        low = LOW_TYPES[precision]
        profile = load_profile(self.context.target)
        if profile.native_dtypes and LOW_NAMES[low] not in profile.native_dtypes:
            result.warn(f"TensorRT {self.context.target} has no {LOW_NAMES[low]}: model left in FP32")
            return result
        from graphfix.checks.ort import TOLERANCES
        result.tolerance = TOLERANCES[low]
        model = self.context.model if self.context.model is not None else to_model(graph)
        plan = _Plan(graph, model, low, profile, keep_io=opts.get("keep_io_types", True) is not False)
        plan.decide(opts.get("calibration_data"), float(opts.get("precision_value_fraction", DEFAULT_VALUE_FRACTION)),
                    result)
        plan.apply(result)
        return result


def _dtypes(model: onnx.ModelProto) -> Dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)
             if v.type.WhichOneof("value") == "tensor_type" and v.type.tensor_type.elem_type}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


class _Plan:
    """The decisions for one graph: which nodes compute low, which stay FP32 and why."""

    def __init__(self, graph: gs.Graph, model: onnx.ModelProto, low: int, profile, keep_io: bool):
        self.graph, self.model, self.low, self.profile, self.keep_io = graph, model, low, profile, keep_io
        self.dtypes = _dtypes(model)
        self.slots = {}          # id(node) -> Slots, for nodes with FLOAT type-variable slots
        self.reason: Dict[int, str] = {}
        self.nodes = list(graph.nodes)
        opset = int(graph.opset)
        for node in self.nodes:
            if node.op in ("Cast",) + CONSTANT_PRODUCERS:
                continue
            s = float_slots(node, self.dtypes, opset, low)
            if s is not None and (s.problem or s.float_inputs or s.float_outputs):
                self.slots[id(node)] = s

    def is_low(self, node: gs.Node) -> bool:
        return id(node) in self.slots and id(node) not in self.reason

    # ------------------------------------------------------------------ decide
    def decide(self, calibration, fraction: float, result: PassResult) -> None:
        low_name = LOW_NAMES[self.low]
        from graphfix.checks.structural import subgraph_outer_refs
        outer = set()
        for proto in self.model.graph.node:
            outer |= subgraph_outer_refs(proto)
        for node in self.nodes:
            s = self.slots.get(id(node))
            if s is None:
                continue
            if any(t.name in outer for t in node.outputs):
                self.reason[id(node)] = "its output is read inside a subgraph (If/Loop/Scan body)"
                continue
            entry = self.profile.op(node.op) if node.domain in (None, "", "ai.onnx") else None
            why = s.problem or op_reason(node, (entry or {}).get("types"), low_name) or self._constant_reason(node, s)
            if why:
                self.reason[id(node)] = why
        self._value_reasons(calibration, fraction, result)
        self._absorb()

    def _constant_reason(self, node: gs.Node, s) -> Optional[str]:
        for i in s.float_inputs:
            t = node.inputs[i]
            values = const_of(t)
            if values is None:
                src = producer(t)
                if src is not None and src.op == "ConstantOfShape" and isinstance(src.attrs.get("value"), gs.Constant):
                    values = np.asarray(src.attrs["value"].values)
            if values is not None:
                why = constant_reason(t.name, values, self.low)
                if why:
                    return why
        return None

    def _value_reasons(self, calibration, fraction: float, result: PassResult) -> None:
        names = []
        for node in self.nodes:
            s = self.slots.get(id(node))
            if s is None or id(node) in self.reason:
                continue
            for t in [node.inputs[i] for i in s.float_inputs] + [node.outputs[i] for i in s.float_outputs]:
                if isinstance(t, gs.Variable) and const_of(t) is None:
                    names.append(t.name)
        masked = self._mask_derived()   # large by construction (the mask's finite stand-in)
        names = sorted(set(names) - masked)
        if not names:
            return
        inputs = {t.name for t in self.graph.inputs}
        feeds, source = calibration_feeds(self.model, calibration)   # the user's data must fit: raises
        try:
            probe, _ = with_finite_masks(self.model, self.low)
            absmax = measure_absmax(probe, [n for n in names if n not in inputs], feeds)
            absmax.update({n: float(np.abs(a.astype(np.float64)).max()) if a.size else 0.0
                           for n, a in feeds.items() if n in names and np.issubdtype(a.dtype, np.floating)})
        except Exception as exc:   # no measurement: the op and constant rules still apply
            result.warn(f"activations not measured ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                        "only op and constant rules applied")
            return
        limit = fraction * LOW_MAX[self.low]
        for node in self.nodes:
            s = self.slots.get(id(node))
            if s is None or id(node) in self.reason:
                continue
            for t in [node.inputs[i] for i in s.float_inputs] + [node.outputs[i] for i in s.float_outputs]:
                if absmax.get(t.name, 0.0) > limit:
                    self.reason[id(node)] = (f"'{t.name}' reaches {absmax[t.name]:.4g} on {source}, above "
                                             f"{fraction:g} of {LOW_NAMES[self.low]}'s max ({limit:.4g})")
                    break

    def _mask_derived(self) -> set:
        """Names of tensors computed from a mask constant (-inf, finfo.min) by ops that carry it to
        the scores: their magnitude is the stand-in's, so the value rule leaves them out."""
        derived = set()
        for node in self.nodes:
            for t in node.inputs:
                values = const_of(t)
                if values is not None and values.dtype == np.float32 and mask_extreme(values, self.low) is not None:
                    derived.add(t.name)
            if node.op == "ConstantOfShape" and isinstance(node.attrs.get("value"), gs.Constant) and \
                    mask_extreme(np.asarray(node.attrs["value"].values), self.low) is not None:
                derived.update(o.name for o in node.outputs)
            if node.op in MASK_FLOW and any(t.name in derived for t in node.inputs):
                derived.update(o.name for o in node.outputs)
        return derived

    def _absorb(self) -> None:
        """Nodes whose float inputs all come from FP32 and whose readers are all FP32 stay FP32."""
        changed = True
        while changed:
            changed = False
            for node in self.nodes:
                s = self.slots.get(id(node))
                if s is None or id(node) in self.reason or node.op in COMPUTE_HEAVY:
                    continue
                srcs = [node.inputs[i] for i in s.float_inputs]
                outs = [node.outputs[i] for i in s.float_outputs]
                if all(self._fp32_source(t) is not False for t in srcs) and \
                        all(self._fp32_readers(t) for t in outs):
                    self.reason[id(node)] = BETWEEN_FP32
                    changed = True

    def _fp32_source(self, t) -> Optional[bool]:
        """True: the tensor is FP32 after the rewrite; False: low; None: a constant (follows its reader)."""
        if const_of(t) is not None:
            return None
        src = producer(t)
        if src is None:
            return self.keep_io
        if src.op == "Cast" or src.op in CONSTANT_PRODUCERS:
            return True if src.op == "Cast" else None
        return not self.is_low(src) if id(src) in self.slots else True

    def _fp32_readers(self, t) -> bool:
        if any(t is o for o in self.graph.outputs) and not self.keep_io:
            return False
        for reader in t.outputs:
            if reader.op == "Cast":
                if reader.attrs.get("to") == self.low or (reader.attrs.get("to") == FLOAT
                                                          and self._retargets(reader)):
                    return False
                continue
            if id(reader) in self.slots:
                if self.is_low(reader) and any(reader.inputs[i] is t for i in self.slots[id(reader)].float_inputs):
                    return False
        return True

    def _retargets(self, cast: gs.Node) -> bool:
        """A Cast to FLOAT read only by low nodes becomes a Cast to the low type (see apply)."""
        return self._read_only_low(cast.outputs[0])

    def _read_only_low(self, t) -> bool:
        """Whether every reader of `t` is a low node reading it where its type follows the node's."""
        if any(t is o for o in self.graph.outputs) or not t.outputs:
            return False
        for r in t.outputs:
            typed = self.slots[id(r)].float_inputs if self.is_low(r) else []
            if not all(k in typed for k, x in enumerate(r.inputs) if x is t):
                return False
        return True

    # ------------------------------------------------------------------- apply
    def apply(self, result: PassResult) -> None:
        low, graph = self.low, self.graph
        low_nodes = [n for n in self.nodes if self.is_low(n)]
        wants: Dict[int, Dict[int, int]] = {}   # id(node) -> {input index: wanted type}
        for node in self.nodes:
            if node.op == "Cast":
                continue
            if self.is_low(node):
                typed = set(self.slots[id(node)].float_inputs)   # other FLOAT inputs have a fixed type
                wants[id(node)] = {i: (low if i in typed else FLOAT) for i, t in enumerate(node.inputs)
                                   if i in typed or (t.name and self.dtypes.get(t.name) == FLOAT)}
            else:
                wants[id(node)] = {i: FLOAT for i, t in enumerate(node.inputs)
                                   if t.name and self.dtypes.get(t.name) == FLOAT}
        low_tensors: Dict[int, gs.Tensor] = {}
        for node in low_nodes:
            for i in self.slots[id(node)].float_outputs:
                low_tensors[id(node.outputs[i])] = node.outputs[i]
        retargeted = [n for n in self.nodes if n.op == "Cast" and n.attrs.get("to") == FLOAT and self._retargets(n)]
        constants = [n for n in self.nodes if n.op in CONSTANT_PRODUCERS and n.outputs
                     and self.dtypes.get(n.outputs[0].name) == FLOAT and self._read_only_low(n.outputs[0])
                     and self._convertible_constant(n)]
        for n in retargeted + constants:
            low_tensors[id(n.outputs[0])] = n.outputs[0]
        if not self.keep_io:
            for t in graph.inputs:
                if self.dtypes.get(t.name) == FLOAT:
                    low_tensors[id(t)] = t
        if not low_tensors and not low_nodes:
            return   # nothing computes low (e.g. a second run): no change

        names = NameMaker(graph, "precision")
        self.new_nodes: List[gs.Node] = []
        self.casts: Dict[Tuple[str, int], gs.Tensor] = {}
        self.result = result
        self._graph_outputs(low_tensors, names)
        for t in low_tensors.values():
            t.dtype = _np_or_onnx(low)
        for n in retargeted:
            n.attrs["to"] = low
            result.change("retarget-cast", label(n), {"to": LOW_NAMES[low]})
            self._bypass_if_noop(n, low_tensors, result)
        for n in constants:
            self._convert_constant_node(n, result)
        low_consts: Dict[str, gs.Constant] = {}
        for node in self.nodes:
            for i, wanted in sorted(wants.get(id(node), {}).items()):
                t = node.inputs[i]
                if isinstance(t, gs.Constant):
                    if wanted == low:
                        node.inputs[i] = self._low_constant(t, low_consts, names, result)
                    continue
                values = const_of(t)
                if values is not None and wanted == low and id(t) not in low_tensors:
                    node.inputs[i] = self._low_constant(gs.Constant(t.name, values), low_consts, names, result)
                    continue
                current = low if id(t) in low_tensors else self.dtypes.get(t.name)
                if current != wanted and current in (FLOAT, low):
                    node.inputs[i] = self._cast(t, wanted, names, low_tensors)
        graph.nodes.extend(self.new_nodes)
        remove_dead_nodes(graph)
        toposort_if_needed(graph)
        self._report(low_nodes, result)

    def _bypass_if_noop(self, cast: gs.Node, low_tensors, result: PassResult) -> None:
        """A retargeted Cast whose input is already low (an export's `.to(float32)` of an FP32
        tensor) would be low -> low: its readers read the input (ONNX Runtime <= 1.19 refuses such a
        Cast unoptimized: 'InsertedPrecisionFreeCast ... does not match expected type')."""
        source = cast.inputs[0] if cast.inputs else None
        if source is None or not (id(source) in low_tensors or self.dtypes.get(source.name) == self.low):
            return
        out = cast.outputs[0]
        for reader in list(out.outputs):
            for i, x in enumerate(reader.inputs):
                if x is out:
                    reader.inputs[i] = source
        result.change("drop-cast", label(cast), {"reads": source.name})
        result.count("casts_dropped")

    def _convertible_constant(self, node: gs.Node) -> bool:
        value = node.attrs.get("value")
        if not isinstance(value, gs.Constant):
            return node.op == "ConstantOfShape" and value is None   # default value: 0.0
        return constant_reason(node.outputs[0].name, np.asarray(value.values), self.low) is None

    def _convert_constant_node(self, node: gs.Node, result: PassResult) -> None:
        value = node.attrs.get("value")
        values = np.asarray(value.values) if isinstance(value, gs.Constant) else np.zeros([1], np.float32)
        mask = mask_extreme(values, self.low)
        node.attrs["value"] = gs.Constant(value.name if isinstance(value, gs.Constant) else "value",
                                          to_low(values, self.low, mask))
        if mask is not None:
            result.change("finite-mask", label(node), {"from": mask, "to": safe_mask_value(mask, self.low)})
            result.count("masks_made_finite")
        result.count("constants_converted")

    def _low_constant(self, t: gs.Constant, cache, names, result: PassResult) -> gs.Constant:
        if t.name in cache:
            return cache[t.name]
        values = np.asarray(t.values)
        mask = mask_extreme(values, self.low)
        readers = [r for r in t.outputs]
        only_low = all(self.is_low(r) for r in readers) and not any(t is o for o in self.graph.outputs)
        if isinstance(t, gs.Constant) and only_low and t.outputs:
            t.values = to_low(values, self.low, mask)
            new = t
        else:
            new = gs.Constant(names(t.name.split("/")[-1][:40]), to_low(values, self.low, mask))
        if mask is not None:
            result.change("finite-mask", new.name, {"from": mask, "to": safe_mask_value(mask, self.low)})
            result.count("masks_made_finite")
        result.count("initializers_converted")
        cache[t.name] = new
        return new

    def _cast(self, t, wanted: int, names, low_tensors) -> gs.Tensor:
        key = (t.name, wanted)
        if key in self.casts:
            return self.casts[key]
        source, folded = t, False
        src = producer(t)
        if src is not None and src.op == "Cast" and id(t) not in low_tensors and src.inputs:
            source, folded = src.inputs[0], True      # Cast -> Cast: read the first Cast's input
            src_type = self.dtypes.get(source.name) if id(source) not in low_tensors else self.low
            if src_type == wanted:
                self.casts[key] = source
                self.result.change("fold-cast", label(src), {"tensor": t.name, "reads": source.name})
                self.result.count("casts_folded")
                return source
        out = gs.Variable(names(LOW_NAMES.get(wanted, "FLOAT").lower()), dtype=_np_or_onnx(wanted), shape=t.shape)
        cast = gs.Node("Cast", names("Cast"), attrs={"to": wanted}, inputs=[source], outputs=[out])
        self.new_nodes.append(cast)
        self.casts[key] = out
        self.result.change("insert-cast", cast.name, {"tensor": source.name, "to": LOW_NAMES.get(wanted, "FLOAT"),
                                                       "folded": folded})
        self.result.count("casts_inserted")
        return out

    def _graph_outputs(self, low_tensors, names) -> None:
        """Graph outputs keep their type (keep_io): the low producer writes a new tensor, a Cast
        writes the output; without keep_io, FLOAT outputs become low through a Cast where needed."""
        for k, out in enumerate(list(self.graph.outputs)):
            if self.dtypes.get(out.name) != FLOAT or not isinstance(out, gs.Variable) or not out.inputs:
                continue
            is_low = id(out) in low_tensors
            if self.keep_io == (not is_low):
                continue
            inner_type = self.low if is_low else FLOAT
            inner = gs.Variable(names(LOW_NAMES.get(inner_type, "float").lower()), dtype=_np_or_onnx(inner_type),
                                shape=out.shape)
            prod = out.inputs[0]
            prod.outputs[prod.outputs.index(out)] = inner
            for reader in list(out.outputs):
                for i, t in enumerate(reader.inputs):
                    if t is out:
                        reader.inputs[i] = inner
            if is_low:
                del low_tensors[id(out)]
                low_tensors[id(inner)] = inner
            else:
                low_tensors[id(out)] = out
            cast = gs.Node("Cast", names("Cast"), attrs={"to": FLOAT if is_low else self.low},
                           inputs=[inner], outputs=[out])
            self.new_nodes.append(cast)
            self.result.change("insert-cast", cast.name, {"tensor": out.name, "to": "FLOAT" if is_low
                                                          else LOW_NAMES[self.low], "graph_output": True})
            self.result.count("casts_inserted")
            self.dtypes[inner.name] = inner_type
        if not self.keep_io:
            for t in self.graph.inputs:
                if id(t) in low_tensors:
                    self.result.change("change-io-type", t.name, {"to": LOW_NAMES[self.low]})
            for t in self.graph.outputs:
                if id(t) in low_tensors:
                    self.result.change("change-io-type", t.name, {"to": LOW_NAMES[self.low]})

    def _report(self, low_nodes: List[gs.Node], result: PassResult) -> None:
        fp32 = [n for n in self.nodes if id(n) in self.slots and id(n) in self.reason]
        islands = _islands(fp32)
        for k, island in enumerate(islands):
            for n in island:
                result.change("keep-fp32", label(n), {"op": n.op, "reason": self.reason[id(n)], "island": k})
        result.change("convert", self.graph.name or "graph",
                      {"to": LOW_NAMES[self.low], "nodes": len(low_nodes), "fp32_nodes": len(fp32),
                       "fp32_islands": len(islands), "keep_io_types": self.keep_io})
        result.count("nodes_low", len(low_nodes))
        result.count("nodes_fp32", len(fp32))
        result.count("fp32_islands", len(islands))


def _islands(nodes: List[gs.Node]) -> List[List[gs.Node]]:
    """FP32 nodes grouped by data flow between them (Casts do not join islands), in graph order."""
    index = {id(n): k for k, n in enumerate(nodes)}
    parent = list(range(len(nodes)))

    def find(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k
    for k, n in enumerate(nodes):
        for t in n.outputs:
            for r in t.outputs:
                if id(r) in index:
                    parent[find(index[id(r)])] = find(k)
    groups: Dict[int, List[gs.Node]] = {}
    for k, n in enumerate(nodes):
        groups.setdefault(find(k), []).append(n)
    return sorted(groups.values(), key=lambda g: index[id(g[0])])


def _np_or_onnx(elem_type: int):
    """The dtype graphsurgeon takes for a Variable: numpy where numpy has the type, else the ONNX enum."""
    if elem_type == onnx.TensorProto.BFLOAT16:
        return onnx.TensorProto.BFLOAT16
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type)
