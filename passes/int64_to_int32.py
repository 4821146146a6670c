"""Narrow INT64 constants, and the tensors whose type they share, to INT32 for TensorRT < 9.

TensorRT 8.6 has no INT64: its parser casts every INT64 weight down to INT32 and clamps values
outside INT32 without saying which, which can change a model's results. TensorRT 9 and later run
INT64 natively, and there a blanket narrowing breaks parsing (mixed INT32/INT64 Concat inputs),
so this pass does nothing unless the target's profile says INT64 is not native.

What is narrowed: every island (tensors an op schema forces to share one type, see
_type_islands) that holds an INT64 constant (initializer, Constant node, ConstantOfShape value) and
that some op would read as INT32, or, with ``int32_io``, that holds an INT64 graph input or output.
Constants are retyped in place, ops computing in their inputs' type follow, a Cast to INT64 inside
the island is retargeted; sources that only make INT64 (Shape, ArgMax, graph inputs) get one Cast
to INT32, and inputs typed INT64-only (Reshape shape, Unsqueeze axes, ...) or read as INT64 by
ONNX shape inference (Pad axes) get one Cast back (for computed tensors) or keep an INT64 copy of
the constant (TensorRT 8.6 requires many of those inputs to be initializers, and narrows in-range
weights there losslessly).

Values outside INT32: INT64_MAX/INT64_MIN style "to the end" values that only reach Slice
starts/ends (directly or through data movement) become INT32_MAX/INT32_MIN, which slices the same;
any other such value keeps its whole island INT64, with a warning naming it.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Set

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto

from graphfix.graph_utils import NameMaker
from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.profiles import load_profile
from graphfix.registry import register_pass
from graphfix.remedies import fixes_finding, fixes_parser_error
from graphfix.target import TrtRange

from ._type_islands import (Island, Retyper, SlotType, TypeVarAnalysis, Use, constant_node_value,
                            infer_elem_types)

INT32_MIN, INT32_MAX = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)

# Inputs through which a value reaches the output unchanged (only moved, copied or selected).
_VALUE_MOVING = {
    "Identity": None, "Concat": None, "Unsqueeze": {0}, "Squeeze": {0}, "Reshape": {0},
    "Flatten": {0}, "Gather": {0}, "GatherElements": {0}, "GatherND": {0}, "Slice": {0},
    "Expand": {0}, "Tile": {0}, "Transpose": {0}, "Split": {0}, "Where": {1, 2},
}
# Slice clamps starts/ends to the axis length, so any value beyond INT32 acts like INT32_MAX/MIN.
_SLICE_BOUNDS = {1, 2}


# (op, type variable) pairs whose schema allows INT32 but whose constant values ONNX's own shape
# inference parses as INT64 only (ParseData<int64_t>): Pad's ``axes`` (onnx/defs/tensor/utils.cc).
# An INT32 constant there fails inference ("ParseData type mismatch ... Expected:int64"), so these
# inputs are boundaries that keep INT64. Found by reading every getInputData/getShapeInput in
# onnx 1.19-1.23's defs: the other readers of variable-typed inputs (Slice, Range, CenterCropPad,
# OneHot, DFT/STFT, window ops) accept INT32 and INT64 alike; Reshape, Expand, Resize sizes, Tile,
# Split, Squeeze/Unsqueeze and Reduce axes are typed tensor(int64) and are boundaries anyway.
_INT64_ONLY_DATA = {("Pad", "Tind")}


def _binds_int32(index: int, node: gs.Node, slot: SlotType) -> bool:
    if (node.op, slot.var) in _INT64_ONLY_DATA:
        return False
    return TensorProto.INT32 in slot.allowed and TensorProto.INT64 in slot.allowed


def _only_sentinels(site) -> bool:
    """The constant's out-of-INT32 values are all INT64_MAX/MIN, which this pass clamps."""
    value = site.facts.value(site.tensor)
    if value is None:
        return False
    outside = value[(value > np.iinfo(np.int32).max) | (value < np.iinfo(np.int32).min)]
    return bool(np.isin(outside, (np.iinfo(np.int64).max, np.iinfo(np.int64).min)).all())


@register_pass
class Int64ToInt32(Pass):
    info = PassInfo(
        name="int64-to-int32",
        summary="Narrow INT64 constants and the tensors typed with them to INT32, with Casts only at "
                "INT64-only inputs; INT64_MAX Slice ends become INT32_MAX, other out-of-range "
                "values are kept and reported",
        fixes="Your ONNX model has been generated with INT64 weights, while TensorRT does not natively "
              "support INT64. Attempting to cast down to INT32. / One or more weights outside the "
              "range of INT32 was clamped",
        trt=TrtRange(below="9.0"),
        after=("fold-constants", "target-opset"),
        remedies=(
            fixes_finding("int64-weights", why="INT64 constants narrowed where every consumer allows INT32"),
            fixes_finding("int64-io", flag="--int32-io",
                          why="with --int32-io, INT64 graph inputs/outputs become INT32"),
            fixes_finding("int64-out-of-range", applies=_only_sentinels,
                          why="INT64_MAX/MIN 'to the end' sentinels are clamped on their way to a Slice"),
            # 8.6 prints its INT64 notice as a warning before the errors it causes
            fixes_parser_error(r"\bINT64\b", warnings=True,
                               why="TensorRT 8.6 has no INT64 (\"generated with INT64 weights\", mixed "
                                   "INT32/INT64 inputs)"),
        ),
    )

    def run(self, graph: gs.Graph) -> PassResult:
        result = PassResult()
        target = self.context.target
        if not self.info.trt.contains(target) or load_profile(target).int64_native:
            return result  # INT64 is native there: narrowing would only mix INT32 into INT64 ops
        types = infer_elem_types(graph)
        analysis = TypeVarAnalysis(graph, _binds_int32)
        constants = _int64_constants(graph, analysis, types)
        io = set()
        if self.context.int32_io:
            io = {t.name for t in list(graph.inputs) + list(graph.outputs)
                  if types.get(t.name) == TensorProto.INT64 and not isinstance(t, gs.Constant)}
        retyper = Retyper(graph, analysis, NameMaker(graph, "int64-to-int32"), result,
                          TensorProto.INT64, TensorProto.INT32, io_new=self.context.int32_io,
                          retarget_cast=True)
        for island in analysis.islands(set(constants) | io):
            if any(types.get(n, TensorProto.INT64) != TensorProto.INT64 for n in island.tensors):
                result.warn(f"{island.anchor}: not narrowed, its island mixes element types "
                            f"({', '.join(island.tensors[:5])})")
                continue
            seeds = [n for n in island.tensors if n in constants]
            if not (island.bound or (io & set(island.tensors))):
                self._note_unbound_constants(seeds, constants, analysis, result)
                continue
            clamps = self._check_range(island, seeds, constants, analysis, result)
            if clamps is None:
                continue
            self._narrow(island, clamps, retyper, result)
        retyper.finish()
        return result

    # -- decisions ---------------------------------------------------------------------------------
    def _check_range(self, island: Island, seeds: List[str], constants: Dict[str, np.ndarray],
                     analysis: TypeVarAnalysis, result: PassResult) -> Optional[Set[str]]:
        """Constants to clamp as Slice sentinels; None when the island must stay INT64."""
        clamps: Set[str] = set()
        for name in seeds:
            values = constants[name]
            outside = (values > INT32_MAX) | (values < INT32_MIN)
            if not outside.any():
                continue
            if _only_reaches_slice_bounds(name, analysis):
                clamps.add(name)
                continue
            bad = values[outside].ravel()
            result.warn(f"{name}: kept INT64 with its island of {len(island.tensors)} tensor(s) "
                        f"({_short(island.tensors)}): value {int(bad[0])} is outside INT32 and is not "
                        f"a Slice start/end sentinel; TensorRT {self.context.target} will clamp it")
            result.count("islands_kept")
            return None
        return clamps

    def _note_unbound_constants(self, seeds, constants, analysis, result) -> None:
        """Constants read only where the schema allows INT64 alone stay INT64 initializers."""
        for name in seeds:
            result.count("constants_kept_int64")
            values = constants[name]
            outside = (values > INT32_MAX) | (values < INT32_MIN)
            if outside.any():
                readers = sorted({u.node.name or u.node.op for u in analysis.uses.get(name, [])})
                result.warn(f"{name}: value {int(values[outside].ravel()[0])} is outside INT32 and "
                            f"feeds INT64-only inputs ({', '.join(readers)}); TensorRT "
                            f"{self.context.target} will clamp it")

    # -- rewrite -----------------------------------------------------------------------------------
    def _narrow(self, island: Island, clamps: Set[str], retyper: Retyper, result: PassResult) -> None:
        clamped = [0]

        def convert(name: str, values: np.ndarray) -> np.ndarray:
            values = np.asarray(values)
            if name in clamps:
                narrowed = np.clip(values, INT32_MIN, INT32_MAX)
                clamped[0] += int(np.count_nonzero(narrowed != values))
                values = narrowed
            return values.astype(np.int32)

        stats = retyper.retype(island, convert)
        result.change("retype", island.anchor, {
            "from": "INT64", "to": "INT32", "tensors": stats.tensors, "casts": len(stats.casts),
            "constant_copies": len(stats.copies), "sentinels_clamped": clamped[0]})
        result.count("islands_narrowed")
        result.count("tensors_narrowed", stats.tensors)
        result.count("casts_inserted", len(stats.casts))
        result.count("casts_retargeted", len(stats.retargeted))
        result.count("constants_copied", len(stats.copies))
        result.count("sentinels_clamped", clamped[0])


def _int64_constants(graph: gs.Graph, analysis: TypeVarAnalysis, types: Dict[str, int]) -> Dict[str, np.ndarray]:
    """INT64 weights by tensor name: initializers, Constant-node outputs, ConstantOfShape values."""
    found: Dict[str, np.ndarray] = {}
    for name, tensor in analysis.tensors.items():
        if isinstance(tensor, gs.Constant):
            if types.get(name) == TensorProto.INT64:
                found[name] = np.asarray(tensor.values)
            continue
        node = analysis.producer_node(name)
        if node is None:
            continue
        if node.op == "Constant":
            value = constant_node_value(node)
            if value is not None and value.dtype == np.int64:
                found[name] = value
        elif node.op == "ConstantOfShape" and isinstance(node.attrs.get("value"), gs.Constant):
            value = np.asarray(node.attrs["value"].values)
            if value.dtype == np.int64:
                found[name] = value
    return found


def _only_reaches_slice_bounds(name: str, analysis: TypeVarAnalysis) -> bool:
    """Every read of the constant's values ends as a Slice start or end (possibly after moving)."""
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in analysis.graph_outputs:
            return False
        for use in analysis.uses.get(current, []):
            if not _moves_or_ends(use):
                return False
            if use.node.op != "Slice" or use.slot not in _SLICE_BOUNDS:
                todo.extend(t.name for t in use.node.outputs if not t.is_empty())
    return True


def _moves_or_ends(use: Use) -> bool:
    if use.nested or not use.bound:
        return False
    if use.node.op == "Slice" and use.slot in _SLICE_BOUNDS:
        return True
    if use.node.op not in _VALUE_MOVING:
        return False
    slots = _VALUE_MOVING[use.node.op]
    return slots is None or use.slot in slots


def _short(names: List[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f", ... {len(names) - limit} more" if len(names) > limit else "")
