"""Compute tensors of element types the target TensorRT lacks in a type it has.

Which types: read from the target's profile (``dtypes``). INT16 and UINT16 exist in no TensorRT
line ("Unsupported ONNX data type: INT16"); UINT8 is an I/O-only type ("ElementWiseOperation SUM
requires inputs with activation or Int32 type"); INT8 is a quantized-only type before 11.x; DOUBLE
is narrowed to FLOAT by every parser, silently (no range check, no accuracy report).

How: the tensors that op schemas force to share one type (islands, see _type_islands) move
together: integer islands to INT32, DOUBLE islands to FLOAT. Constants are retyped, ops that
compute in their inputs' type follow, and a Cast back to the original type is placed wherever a
value leaves the island (an op that is not emulated, an op of another domain, a graph output), so
the model's signature is unchanged. With ``--int32-io`` (PassContext.int32_io) the integer graph
inputs/outputs become INT32 instead: TensorRT cannot bind INT16/UINT16 (or INT8 outside Q/DQ)
inputs at all, so without it such inputs keep failing; the pass says so in a warning.

Exactness (integers): only ops whose INT32 result equals the narrow type's are emulated
(data movement, Max/Min/Clip/Relu/Sign/Where, comparisons, Add/Sub/Mul/Neg/Abs, and Div of
non-negative values: UINT8/UINT16 always, signed types where constants show it); Mod, reductions,
MatMul and bit ops stay boundaries. Value ranges are tracked per tensor (constants by
their values, everything else by its type's range): where Add/Sub/Mul/Neg/Abs can leave the narrow
type's range, ONNX wraps around (INT8 100 + 100 = -56) and INT32 would not, so the pass re-wraps
that result in INT32 arithmetic (subtract 2^bits * floor((x - min) / 2^bits); divisions of
non-negative values only, so truncating and flooring division agree), which keeps every emulated
tensor equal to the original. An island whose values could leave INT32 itself is kept, with the
reason. DOUBLE -> FLOAT is not exact: the pass declares FLOAT's usual tolerance for its check, and
keeps an island whose constants do not fit FLOAT (the parsers clamp values beyond 3.4e38 to
FLT_MAX: onnx-tensorrt convertDouble / operators.md 10.x), with the reason.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Set, Tuple

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto

from graphfix.graph_utils import NameMaker
from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.profiles import load_profile
from graphfix.registry import register_pass
from graphfix.remedies import fixes_finding, fixes_parser_error

from ._type_islands import (Island, Retyper, TypeVarAnalysis, constant_node_value, infer_elem_types, np_dtype,
                            type_name)

INT32_MIN, INT32_MAX = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)
FLOAT_MAX = float(np.finfo(np.float32).max)

# Old type -> the type it is computed in. INT64 is int64-to-int32's (it needs Slice sentinels).
EMULATION = {TensorProto.INT8: TensorProto.INT32, TensorProto.UINT8: TensorProto.INT32,
             TensorProto.INT16: TensorProto.INT32, TensorProto.UINT16: TensorProto.INT32,
             TensorProto.DOUBLE: TensorProto.FLOAT}
INTEGER_OLD = (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16)

# FP64 computed in FP32: the tolerance graphfix uses for any FLOAT output (checks/ort.TOLERANCES).
FP64_AS_FP32_TOLERANCE = (1e-4, 1e-3)

# Integer ops emulated in INT32. Their output range follows from their inputs' (see _output_range).
_MOVES = {"Identity", "Reshape", "Transpose", "Concat", "Slice", "Gather", "GatherElements", "GatherND",
          "Squeeze", "Unsqueeze", "Expand", "Tile", "Flatten", "Split", "Where", "Max", "Min", "Clip", "Pad",
          "Relu"}
_COMPARES = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"}   # outputs are BOOL
_RING = {"Add", "Sub", "Mul", "Neg", "Abs"}   # may leave the narrow range: re-wrapped
_CASTS = {"Cast", "CastLike"}
_DIVIDE = {"Div"}   # exact on non-negative operands only (truncating and flooring division agree)
INTEGER_OPS = _MOVES | _COMPARES | _RING | _CASTS | _DIVIDE | {"Sign"}

Range = Tuple[int, int]


def type_range(elem: int) -> Range:
    info = np.iinfo(np_dtype(elem))
    return int(info.min), int(info.max)


def emulated_types(version) -> Dict[int, int]:
    """{old: new} for the types the target's profile says TensorRT does not compute natively."""
    profile = load_profile(version)
    return {old: new for old, new in EMULATION.items() if type_name(old) not in profile.native_dtypes}


@register_pass
class EmulateTypes(Pass):
    info = PassInfo(
        name="emulate-types",
        summary="Compute INT8/UINT8/INT16/UINT16 arithmetic in INT32 (range-checked, re-wrapped where ONNX "
                "wraps) and DOUBLE in FLOAT, with Casts where values leave; graph I/O kept unless --int32-io",
        fixes="Failed to convert ONNX date type to TensorRT data type (INT16/UINT16); operation SUM requires "
              "inputs with activation or Int32 type (UINT8/INT8 arithmetic); Your ONNX model has been generated "
              "with double-typed weights ... Attempting to cast down to float",
        after=("fold-constants", "target-opset", "int64-to-int32"),
        before=("cast-bool",),
        remedies=tuple(
            [fixes_finding(kind, applies=lambda site: _emulated(site, io=False),
                           why="the tensor's island is computed in INT32 (or FLOAT), Casts where values leave")
             for kind in ("io-only-dtype", "quantized-only-dtype", "unsupported-dtype")]
            + [fixes_finding(kind, applies=lambda site: _emulated(site, io=True), flag="--int32-io",
                             why="a graph input/output TensorRT cannot bind becomes INT32 (signature change)")
               for kind in ("io-only-dtype", "quantized-only-dtype", "unsupported-dtype")]
            + [fixes_parser_error(r"Failed to convert ONNX date type|Unsupported data type for the Cast operator|"
                                  r"requires inputs with activation or Int32 type|"
                                  r"(?:invalid|unsupported) input type of U?INT8",
                                  why="TensorRT has no INT16/UINT16 and computes INT8/UINT8 only through Q/DQ "
                                      "or I/O Casts")]),
    )

    def run(self, graph: gs.Graph) -> PassResult:
        self.moved: Set[str] = set()    # tensors of the islands emulated (planned_tensors reads it)
        result = PassResult()
        wanted = emulated_types(self.context.target)
        if not wanted:
            return result
        types = infer_elem_types(graph)
        # wider types first: a Cast from a narrower one into their island is then still exact to
        # retarget (UINT8 -> INT16 becomes UINT8 -> INT32 before the UINT8 island moves)
        present = sorted({e for e in types.values() if e in wanted}, key=lambda e: (-np_dtype(e).itemsize, e))
        namer = NameMaker(graph, "emulate-types")
        for old in present:
            self._emulate(graph, old, wanted[old], types, namer, result)
            types = infer_elem_types(graph)   # the next type's analysis sees this one's Casts
        return result

    # -- one old type ----------------------------------------------------------------------------
    def _emulate(self, graph: gs.Graph, old: int, new: int, types: Dict[str, int], namer: NameMaker,
                 result: PassResult) -> None:
        integer = old in INTEGER_OLD
        io_new = integer and self.context.int32_io
        profile = load_profile(self.context.target)
        if integer and _clip_relu_as_max_min(graph, old, types, profile, namer, result):
            types = infer_elem_types(graph)
        analysis = TypeVarAnalysis(graph, _binder(old, new, types, profile))
        seeds = sorted(name for name, elem in types.items() if elem == old and name in analysis.tensors)
        retyper = Retyper(graph, analysis, namer, result, old, new, io_new=io_new, retarget_cast=True)
        wraps: Dict[str, List[gs.Node]] = {}
        for island in analysis.islands(seeds):
            if not island.bound:
                continue
            if any(types.get(n) != old for n in island.tensors):
                result.warn(f"{island.anchor}: not emulated, its island mixes element types")
                continue
            if _quantized_path(island, analysis):
                result.count("quantized_islands_kept")   # Q -> (data movement) -> DQ: the target's own
                continue
            computing = _computing_nodes(island, analysis)
            io = [n for n in island.tensors if n in analysis.graph_inputs or n in analysis.graph_outputs]
            if not computing and not (io_new and io):
                continue   # only Casts read it: moving it would add a Cast and remove nothing
            reason, needs_wrap = self._check(island, old, analysis, integer)
            if reason is not None:
                result.warn(f"{island.anchor}: kept {type_name(old)} with its island of {len(island.tensors)} "
                            f"tensor(s): {reason}")
                result.count("islands_kept")
                continue
            stats = retyper.retype(island, lambda name, values: _convert(values, new))
            self.moved.update(island.tensors)
            for name in needs_wrap:
                wraps[name] = _wrap_nodes(analysis.tensors[name], old, needs_wrap[name], namer)
            if io and not io_new and integer and type_name(old) not in profile.io_only_dtypes:
                result.warn(f"{island.anchor}: graph input/output {_short(io)} stays {type_name(old)} (signature "
                            f"kept); TensorRT cannot bind {type_name(old)}: `graphfix fix --int32-io` makes it INT32")
            result.change("emulate", island.anchor, {
                "from": type_name(old), "to": type_name(new), "tensors": stats.tensors, "nodes": len(computing),
                "casts": len(stats.casts), "constant_copies": len(stats.copies), "wraps": len(needs_wrap),
                "io_retyped": len(io) if io_new else 0})
            result.count("islands_emulated")
            result.count("tensors_retyped", stats.tensors)
            result.count("casts_inserted", len(stats.casts))
            result.count("wraps_inserted", len(needs_wrap))
            if not integer:
                result.tolerance = FP64_AS_FP32_TOLERANCE
        retyper.finish()
        if wraps:
            _place_wraps(graph, wraps)

    def _check(self, island: Island, old: int, analysis: TypeVarAnalysis, integer: bool):
        """(reason to keep the island, None if it can move; {tensor: its range} to re-wrap)."""
        constants = {n: v for n in island.tensors for v in [_constant_values(n, analysis)] if v is not None}
        if not integer:
            for name, values in sorted(constants.items()):
                finite = values[np.isfinite(values)]
                if finite.size and np.abs(finite).max() > FLOAT_MAX:
                    return (f"constant '{name}' holds {float(finite[np.abs(finite).argmax()]):.3g}, beyond FLOAT "
                            "(TensorRT's parser clamps it to +-3.4e38)"), {}
            return None, {}
        return _integer_ranges(island, old, analysis, constants)


def planned_tensors(model, version) -> Set[str]:
    """Names of the tensors the pass would move out of their type on `model` (a ModelProto) for
    TensorRT `version`: `graphfix check` names this pass only for those (same analysis, no copy
    of the rules)."""
    from graphfix.graph_utils import to_graph
    from graphfix.pass_api import PassContext
    from graphfix.target import TrtVersion
    emulate = EmulateTypes(PassContext(target=TrtVersion.parse(str(version)), model=model))
    emulate.run(to_graph(model))
    return emulate.moved


def _emulated(site, io: bool) -> bool:
    """Whether `check`'s finding on site.tensor goes with this pass: the tensor is in an island the
    pass moves; for io=True a graph input/output of a type TensorRT cannot bind (only --int32-io
    changes those), for io=False any other such tensor."""
    facts, name = site.facts, site.tensor
    if name is None or TensorProto.DataType.Value(facts.dtype(name) or "UNDEFINED") not in INTEGER_OLD:
        return False       # (DOUBLE: every parser narrows it to FLOAT by itself; check does not flag it)
    # once per model: the pass's own analysis, no copy of its rules
    planned = facts.derived(("emulate-types", str(site.profile.version)),
                            lambda: planned_tensors(facts.model, site.profile.version))
    if name not in planned:
        return False
    unbindable_io = (name in facts.graph_inputs or name in facts.graph_outputs) \
        and facts.dtype(name) not in site.profile.io_only_dtypes
    return unbindable_io == io


# -- binding ---------------------------------------------------------------------------------------
def _binder(old: int, new: int, types: Dict[str, int], profile):
    """Which schema type variables join tensors into an island for old -> new: ops emulated for
    the old type whose target importer takes the new type (the profile's documented types: 8.6's
    Clip and Relu take INT8 but not INT32, so they stay boundaries there)."""
    integer = old in INTEGER_OLD
    old_range = type_range(old) if integer else None
    new_name = type_name(new)

    def binds(index: int, node: gs.Node, slot) -> bool:
        if old not in slot.allowed or new not in slot.allowed:
            return False
        if integer and node.op not in INTEGER_OPS:
            return False
        documented = (profile.op(node.op) or {}).get("types")
        if documented and new_name not in documented and node.op not in _CASTS:
            return False
        if node.op in _CASTS and slot.var == "T2":
            # A Cast into the island is retargeted where that is exact: from floats (ONNX: a value
            # out of the fixed-point type's range is undefined, so the output is in range) and from
            # integer types that fit; a wider integer source wraps in ONNX and stays a boundary.
            if not integer:
                return True
            src = types.get(node.inputs[0].name) if node.inputs else None
            if src in (TensorProto.BOOL, TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16,
                       TensorProto.DOUBLE):
                return True
            if src not in INTEGER_OLD + (TensorProto.INT32, TensorProto.INT64):
                return False
            lo, hi = type_range(src)
            return old_range[0] <= lo and hi <= old_range[1]
        return True
    return binds


def _clip_relu_as_max_min(graph: gs.Graph, old: int, types: Dict[str, int], profile, namer: NameMaker,
                          result: PassResult) -> int:
    """Integer Clip/Relu where the target's importer takes no INT32 for them (8.6) become Max/Min,
    which it does take: Clip(x, lo, hi) = Min(Max(x, lo), hi), Relu(x) = Max(x, 0), exact."""
    nodes: List[gs.Node] = []
    rewritten = 0
    for node in graph.nodes:
        documented = (profile.op(node.op) or {}).get("types") if node.op in ("Clip", "Relu") else None
        if not documented or "INT32" in documented or not node.inputs or types.get(node.inputs[0].name) != old:
            nodes.append(node)
            continue
        x, out = node.inputs[0], node.outputs[0]
        if node.op == "Relu":
            bounds = [("Max", gs.Constant(namer("zero"), np.array(0, dtype=np_dtype(old))))]
        else:
            given = [node.inputs[i] if len(node.inputs) > i and not node.inputs[i].is_empty() else None
                     for i in (1, 2)]   # Clip's optional min and max (min > max gives max: so does Min(Max))
            bounds = [(op, t) for op, t in zip(("Max", "Min"), given) if t is not None]
        current = x
        for k, (op, bound) in enumerate(bounds):
            last = k == len(bounds) - 1
            made = out if last else gs.Variable(namer(op.lower()), dtype=out.dtype, shape=out.shape)
            nodes.append(gs.Node(op, name=node.name if last else namer(op.lower()), inputs=[current, bound],
                                 outputs=[made]))
            current = made
        if not bounds:
            nodes.append(gs.Node("Identity", name=node.name, inputs=[x], outputs=[out]))
        node.outputs = []    # the replacement writes `out` now
        result.change("rewrite", node.name or node.op, {"op": node.op, "as": "+".join(b[0] for b in bounds) or
                                                        "Identity", "why": f"no INT32 {node.op} on the target"})
        rewritten += 1
    if rewritten:
        graph.nodes = nodes
        result.count("clip_relu_rewritten", rewritten)
    return rewritten


def _computing_nodes(island: Island, analysis: TypeVarAnalysis) -> List[str]:
    """Names of the non-Cast nodes that read or write the island through a bound type variable."""
    names = set()
    for name in island.tensors:
        for use in analysis.uses.get(name, []):
            if use.bound and use.node.op not in _CASTS:
                names.add(use.node.name or use.node.op)
        node = analysis.producer_node(name)
        if node is not None and node.op not in _CASTS and analysis.bound_output(name):
            names.add(node.name or node.op)
    return sorted(names)


_QUANTIZE = {"QuantizeLinear", "DynamicQuantizeLinear"}


def _quantized_path(island: Island, analysis: TypeVarAnalysis) -> bool:
    """The island carries quantized data (made by a QuantizeLinear or read by a DequantizeLinear):
    TensorRT takes INT8 there, and Casts would break the Q/DQ pairs it fuses."""
    for name in island.tensors:
        node = analysis.producer_node(name)
        if node is not None and node.op in _QUANTIZE:
            return True
        if any(u.node.op == "DequantizeLinear" for u in analysis.uses.get(name, [])):
            return True
    return False


def _constant_values(name: str, analysis: TypeVarAnalysis) -> Optional[np.ndarray]:
    tensor = analysis.tensors.get(name)
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = analysis.producer_node(name)
    if node is None:
        return None
    if node.op == "Constant":
        return constant_node_value(node)
    if node.op == "ConstantOfShape" and isinstance(node.attrs.get("value"), gs.Constant):
        return np.asarray(node.attrs["value"].values)
    return None


def _convert(values: np.ndarray, new: int) -> np.ndarray:
    return np.asarray(values).astype(np_dtype(new))


# -- integer ranges --------------------------------------------------------------------------------
def _integer_ranges(island: Island, old: int, analysis: TypeVarAnalysis, constants: Dict[str, np.ndarray]):
    """Walk the island's nodes in graph order, tracking each tensor's value range. Returns
    (reason, {}) when an emulated value could leave INT32, else (None, {tensor: raw range}) for the
    ring results that can leave the old type's range (to re-wrap)."""
    full = type_range(old)
    members = set(island.tensors)
    ranges: Dict[str, Range] = {}
    for name in island.tensors:
        if name in constants:
            values = constants[name]
            ranges[name] = (int(values.min()), int(values.max())) if values.size else (0, 0)
    wraps: Dict[str, Range] = {}
    for node in analysis.nodes:
        outs = [t.name for t in node.outputs if not t.is_empty() and t.name in members
                and analysis.bound_output(t.name) and t.name not in ranges]
        if not outs:
            continue
        ins = [ranges.get(t.name, full) for j, t in enumerate(node.inputs)
               if t.name in members and any(u.bound and u.node is node and u.slot == j
                                            for u in analysis.uses.get(t.name, []))]
        if node.op in _DIVIDE and any(r[0] < 0 for r in ins):
            return (f"Div '{node.name}' may divide negative values (ONNX truncates; TensorRT's INT32 "
                    "division is not documented to), only non-negative ones are emulated"), {}
        raw = _output_range(node, ins, full)
        if raw[0] < INT32_MIN or raw[1] > INT32_MAX:
            return (f"{node.op} '{node.name}' can reach {raw[0]}..{raw[1]}, beyond INT32 (ONNX wraps in "
                    f"{type_name(old)}; INT32 would overflow first)"), {}
        for name in outs:
            if raw[0] < full[0] or raw[1] > full[1]:
                if not _wrap_fits(raw, full):
                    return f"re-wrapping {node.op} '{node.name}' ({raw[0]}..{raw[1]}) would overflow INT32", {}
                wraps[name] = raw
                ranges[name] = full
            else:
                ranges[name] = raw
    return None, wraps


def _output_range(node: gs.Node, ins: List[Range], full: Range) -> Range:
    """Range of a bound output from the ranges of the node's bound inputs (an over-approximation)."""
    op = node.op
    if not ins:
        return full
    if op == "Sign":
        return (-1, 1)
    if op in _CASTS:
        return full    # retargeted only where the input's type fits: within the old range
    a = ins[0]
    if op == "Neg":
        return (-a[1], -a[0])
    if op == "Abs":
        top = max(abs(a[0]), abs(a[1]))
        return (0 if a[0] <= 0 <= a[1] else min(abs(a[0]), abs(a[1])), top)
    if op == "Div":   # both non-negative (checked): x / y <= x for y >= 1 (y = 0 is undefined in ONNX)
        return (0, a[1])
    if op in ("Add", "Sub", "Mul") and len(ins) == 2:
        b = ins[1]
        if op == "Add":
            return (a[0] + b[0], a[1] + b[1])
        if op == "Sub":
            return (a[0] - b[1], a[1] - b[0])
        corners = [x * y for x in a for y in b]
        return (min(corners), max(corners))
    if op == "Max":
        return (max(r[0] for r in ins), max(r[1] for r in ins))
    if op == "Min":
        return (min(r[0] for r in ins), min(r[1] for r in ins))
    if op == "Relu":
        return (max(a[0], 0), max(a[1], 0))
    lo, hi = min(r[0] for r in ins), max(r[1] for r in ins)
    if op == "Pad":   # its default value is 0
        lo, hi = min(lo, 0), max(hi, 0)
    return (lo, hi)


# -- re-wrapping -----------------------------------------------------------------------------------
def _wrap_fits(raw: Range, full: Range) -> bool:
    z_lo, z_hi = raw[0] - full[0], raw[1] - full[0]
    return INT32_MIN <= z_lo and z_hi <= INT32_MAX and (full[1] - full[0] + 1) - 1 - z_lo <= INT32_MAX


def _wrap_nodes(tensor: gs.Variable, old: int, raw: Range, namer: NameMaker) -> List[gs.Node]:
    """Nodes computing ``tensor`` = the old type's wrap-around of its raw INT32 value; the producer
    now writes a new tensor. x -> min + ((x - min) mod 2^bits), floor division of non-negative
    values only (an offset makes them non-negative where INT32 allows, else a Where picks the
    negative side's ceiling form)."""
    full = type_range(old)
    m = full[1] - full[0] + 1
    producer = tensor.inputs[0]
    raw_t = gs.Variable(namer("raw"), dtype=np.int32, shape=tensor.shape)
    producer.outputs = [raw_t if o is tensor else o for o in producer.outputs]
    nodes: List[gs.Node] = []

    def op(kind: str, inputs, out: Optional[gs.Variable] = None, dtype=np.int32) -> gs.Variable:
        out = out if out is not None else gs.Variable(namer(kind.lower()), dtype=dtype, shape=tensor.shape)
        nodes.append(gs.Node(kind, name=namer(kind.lower()), inputs=list(inputs), outputs=[out]))
        return out

    def c(value: int) -> gs.Constant:
        return gs.Constant(namer("c"), np.array(value, dtype=np.int32))

    low = full[0]
    z_lo, z_hi = raw[0] - low, raw[1] - low
    offset = m * max(0, -(z_lo // m))              # makes z non-negative
    if z_hi + offset <= INT32_MAX:                 # q = floor(z / m) with z >= 0
        z = op("Add", [raw_t, c(offset - low)]) if offset - low else raw_t
        q = op("Div", [z, c(m)])
    else:                                          # floor(z / m) = -ceil(-z / m) for z < 0
        z = op("Sub", [raw_t, c(low)]) if low else raw_t
        negative = op("Less", [z, c(0)], dtype=np.bool_)
        up = op("Div", [z, c(m)])
        down = op("Sub", [c(0), op("Div", [op("Sub", [c(m - 1), z]), c(m)])])
        q = op("Where", [negative, down, up])
    step = op("Mul", [q, c(m)])
    if low:                                        # low + (z - q * m), in [low, high]
        op("Add", [op("Sub", [z, step]), c(low)], out=tensor)
    else:
        op("Sub", [z, step], out=tensor)
    return nodes


def _place_wraps(graph: gs.Graph, wraps: Dict[str, List[gs.Node]]) -> None:
    """Put each wrap chain right after the node that now writes its raw value (before any reader)."""
    by_raw = {nodes[0].inputs[0].name: nodes for nodes in wraps.values()}
    ordered: List[gs.Node] = []
    for node in graph.nodes:
        ordered.append(node)
        for out in node.outputs:
            ordered.extend(by_raw.get(out.name, ()))
    graph.nodes = ordered


def _short(names: List[str], limit: int = 3) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
