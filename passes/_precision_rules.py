"""Why a node must stay FP32 under mixed precision: by op, by its constants, by measured values.

Read by the precision pass. Each rule returns a short reason (for the report) or None. The facts
used: the ONNX schema of the node (which inputs/outputs share a float type variable), the target's
TensorRT profile (op types it imports), initializer values, and the activations of one run of the
FP32 model in ONNX Runtime on calibration inputs (or the seeded inputs the checks use).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
import onnx_graphsurgeon as gs

FLOAT = onnx.TensorProto.FLOAT
LOW_TYPES = {"fp16": onnx.TensorProto.FLOAT16, "bf16": onnx.TensorProto.BFLOAT16}
TYPE_STR = {onnx.TensorProto.FLOAT16: "tensor(float16)", onnx.TensorProto.BFLOAT16: "tensor(bfloat16)"}
LOW_MAX = {onnx.TensorProto.FLOAT16: float(np.finfo(np.float16).max), onnx.TensorProto.BFLOAT16: 3.3895314e38}
LOW_TINY = {onnx.TensorProto.FLOAT16: 2.0 ** -25, onnx.TensorProto.BFLOAT16: 2.0 ** -134}  # rounds to 0 below
# Activations above this fraction of the low type's max keep their node FP32: headroom for the
# next Add/MatMul, whose accumulations are not measured here (AutoCast's default is 512 for FP16).
DEFAULT_VALUE_FRACTION = 1.0 / 16
UNDERFLOW_BULK = 0.1           # an initializer losing more than this share of its nonzeros keeps FP32

NORMALIZATIONS = frozenset({"LayerNormalization", "GroupNormalization", "InstanceNormalization",
                            "RMSNormalization", "LpNormalization", "MeanVarianceNormalization",
                            "SimplifiedLayerNormalization"})
SOFTMAX = frozenset({"Softmax", "LogSoftmax", "Hardmax"})
ALWAYS_FP32 = {"CumSum": "running sums grow with the sequence and lose precision in FP16",
               "Range": "index arithmetic: FP16 cannot count past 2048 exactly",
               "QuantizeLinear": "Q/DQ scales stay FP32 for TensorRT's INT8 path",
               "DequantizeLinear": "Q/DQ scales stay FP32 for TensorRT's INT8 path"}
OVERFLOW_REDUCTIONS = frozenset({"ReduceSumSquare", "ReduceL2", "ReduceL1", "ReduceLogSum", "ReduceLogSumExp",
                                 "ReduceProd"})
UNBOUNDED_MATH = frozenset({"Exp", "Log", "Pow", "Sqrt", "Reciprocal"})
# Producers whose outputs are bounded: Exp/Pow/... of them cannot overflow
BOUNDED_PRODUCERS = frozenset({"Sigmoid", "Tanh", "Softmax", "Sin", "Cos", "Erf", "HardSigmoid", "Softsign"})


def label(node: gs.Node) -> str:
    return node.name or f"<unnamed {node.op}>"


def producer(tensor) -> Optional[gs.Node]:
    return tensor.inputs[0] if isinstance(tensor, gs.Variable) and len(tensor.inputs) == 1 else None


def const_of(tensor) -> Optional[np.ndarray]:
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    p = producer(tensor)
    if p is not None and p.op == "Constant" and isinstance(p.attrs.get("value"), gs.Constant):
        return np.asarray(p.attrs["value"].values)
    return None


# ------------------------------------------------------------------------------------ type slots

@dataclass
class Slots:
    """A node's float type variables: (input index | output index) per type variable."""
    inputs: Dict[str, List[int]] = field(default_factory=dict)
    outputs: Dict[str, List[int]] = field(default_factory=dict)
    problem: Optional[str] = None   # why the node cannot change type (set when it has FLOAT slots)

    @property
    def float_inputs(self) -> List[int]:
        return sorted(i for v in self.inputs.values() for i in v)

    @property
    def float_outputs(self) -> List[int]:
        return sorted(i for v in self.outputs.values() for i in v)


def _formal(params, index: int):
    if index < len(params):
        return params[index]
    last = params[-1] if params else None
    return last if last is not None and last.option == onnx.defs.OpSchema.FormalParameterOption.Variadic else None


def float_slots(node: gs.Node, dtypes: Dict[str, int], opset: int, low: int) -> Optional[Slots]:
    """The node's inputs/outputs whose type is FLOAT and bound to a type variable; None when none is.
    ``problem`` says why such a node cannot be converted to `low` (no schema, an output type set by
    an attribute, a type variable that does not allow `low`)."""
    touches_float = any(dtypes.get(t.name) == FLOAT for t in list(node.inputs) + list(node.outputs) if t.name)
    if not touches_float:
        return None
    slots = Slots()
    if node.domain not in (None, "", "ai.onnx"):
        slots.problem = f"custom-domain op {node.domain}::{node.op}"
        return slots
    if any(isinstance(v, gs.Graph) for v in node.attrs.values()):
        slots.problem = f"{node.op} has a subgraph; its body is not converted"
        return slots
    try:
        schema = onnx.defs.get_schema(node.op, opset, "")
    except Exception:
        slots.problem = f"no ONNX schema for {node.op} at opset {opset}"
        return slots
    constraints = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    for kind, tensors, params, into in (("in", node.inputs, schema.inputs, slots.inputs),
                                        ("out", node.outputs, schema.outputs, slots.outputs)):
        for i, t in enumerate(tensors):
            if not t.name or dtypes.get(t.name) != FLOAT:
                continue
            formal = _formal(params, i)
            if formal is None:
                slots.problem = f"{node.op} has no {kind}put {i} in its ONNX schema"
                return slots
            if formal.type_str in constraints:   # a fixed "tensor(float)" (Resize scales) stays FLOAT
                into.setdefault(formal.type_str, []).append(i)
    for var in sorted(set(slots.inputs) | set(slots.outputs)):
        if TYPE_STR[low] not in constraints[var]:
            slots.problem = f"ONNX {node.op}-{schema.since_version} does not allow {TYPE_STR[low]}"
            return slots
        if var in slots.outputs and var not in slots.inputs and not _bound_by_input(node, schema, var):
            slots.problem = f"{node.op}'s output type is set by an attribute"
            return slots
    return slots


def _bound_by_input(node: gs.Node, schema, var: str) -> bool:
    return any(p.type_str == var for p in schema.inputs)


# ------------------------------------------------------------------------------------- op rules

def op_reason(node: gs.Node, profile_types: Optional[List[str]], low_name: str) -> Optional[str]:
    """Why this op must compute in FP32 whatever its values."""
    op = node.op
    if profile_types and "FLOAT" in profile_types and low_name not in profile_types:
        return f"TensorRT imports {op} for {', '.join(profile_types)} only"
    if op in NORMALIZATIONS:
        return "normalization: statistics over many elements overflow or lose precision in low precision"
    if op in SOFTMAX:
        return f"{op}: exponentials and their sum over the axis"
    if op in ALWAYS_FP32:
        return ALWAYS_FP32[op]
    if op in OVERFLOW_REDUCTIONS:
        return f"{op}: sums of squares / products / exponentials overflow"
    if op in ("ReduceMean", "ReduceSum") and node.inputs:
        src = producer(node.inputs[0])
        if src is not None and (_is_square(src) or src.op == "Exp"):
            return f"{op} of {'squares' if src.op != 'Exp' else 'exponentials'}: normalization statistics"
        if any(_is_statistic_reader(c, node.outputs[0]) for c in node.outputs[0].outputs):
            return f"{op} feeds Sqrt/Reciprocal/a divisor: normalization statistics"
    if op in UNBOUNDED_MATH and node.inputs:
        src = producer(node.inputs[0])
        if src is not None and src.op in BOUNDED_PRODUCERS:
            return None
        return f"{op} on an unbounded input overflows or loses range in low precision"
    return None


def _is_square(node: gs.Node) -> bool:
    if node.op == "Mul" and len(node.inputs) == 2 and node.inputs[0] is node.inputs[1]:
        return True
    if node.op == "Pow" and len(node.inputs) == 2:
        e = const_of(node.inputs[1])
        return e is not None and e.size == 1 and float(e.reshape(-1)[0]) == 2.0
    return False


def _is_statistic_reader(consumer: gs.Node, tensor) -> bool:
    if consumer.op in ("Sqrt", "Reciprocal"):
        return True
    if consumer.op == "Add" and consumer.outputs:   # var + eps -> Sqrt
        return any(c.op in ("Sqrt", "Reciprocal") for c in consumer.outputs[0].outputs)
    return consumer.op == "Div" and len(consumer.inputs) == 2 and consumer.inputs[1] is tensor


# ------------------------------------------------------------------------------------ constants

def mask_extreme(values: np.ndarray, low: int) -> Optional[float]:
    """The one extreme value (-inf, finfo(float32).min, -1e9, ...) of a mask-like constant that the
    low type cannot hold, or None when the constant is not such a mask."""
    v = np.asarray(values, dtype=np.float64)
    extreme = np.isinf(v) | (np.abs(v) > LOW_MAX[low])
    if not extreme.any():
        return None
    found = np.unique(v[extreme])
    return float(found[0]) if found.size == 1 and not np.isnan(found[0]) else None


def safe_mask_value(extreme: float, low: int) -> float:
    """A finite stand-in for a mask's extreme: half the low type's max, so that adding scores to
    it cannot overflow, and exp() of it is 0 as for -inf."""
    return float(np.sign(extreme)) * LOW_MAX[low] / 2


def constant_reason(name: str, values: np.ndarray, low: int) -> Optional[str]:
    """Why a float constant cannot be stored in `low` (overflow that is no mask, bulk underflow)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return None
    low_name = "FP16" if low == onnx.TensorProto.FLOAT16 else "BF16"
    big = np.isfinite(v) & (np.abs(v) > LOW_MAX[low])
    if big.any() and mask_extreme(v, low) is None:
        return f"initializer '{name}' holds values up to {np.abs(v[big]).max():.3g}, beyond {low_name}'s max"
    nonzero = v != 0
    flushed = nonzero & (np.abs(v) < LOW_TINY[low])
    if nonzero.any() and flushed.sum() > UNDERFLOW_BULK * nonzero.sum():
        return (f"initializer '{name}': {100.0 * flushed.sum() / nonzero.sum():.0f}% of its nonzero values "
                f"underflow to zero in {low_name}")
    return None


def to_low(values: np.ndarray, low: int, mask: Optional[float]) -> np.ndarray:
    """`values` stored in the low type; a mask's extreme replaced by its finite stand-in."""
    v = np.asarray(values, dtype=np.float32)
    if mask is not None:
        v = np.where(v == np.float32(mask), np.float32(safe_mask_value(mask, low)), v).astype(np.float32)
    if low == onnx.TensorProto.FLOAT16:
        return v.astype(np.float16)
    import ml_dtypes
    return v.astype(ml_dtypes.bfloat16)


# ------------------------------------------------------------------------------------- measured

def load_calibration(path: str) -> Dict[str, np.ndarray]:
    """Inputs from an .npz file (one array per graph input name); InputError when unreadable."""
    from graphfix.errors import InputError
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except FileNotFoundError:
        raise InputError(path, "no such calibration file") from None
    except Exception as exc:
        raise InputError(path, f"not a readable .npz file ({' '.join(str(exc).split())[:200]})") from None


def calibration_feeds(model: onnx.ModelProto, calibration) -> Tuple[Dict[str, np.ndarray], str]:
    """(feeds, where they came from): the user's calibration data, else the checks' seeded inputs."""
    from graphfix.checks.inputs import graph_inputs, make_feeds
    from graphfix.checks.ort import _quiet_polygraphy
    _quiet_polygraphy()
    if calibration is None:
        return next(iter(make_feeds(model, seed=1))), "seeded inputs (seed 1)"
    data = load_calibration(calibration) if isinstance(calibration, str) else dict(calibration)
    wanted = [i.name for i in graph_inputs(model)]
    missing = [n for n in wanted if n not in data]
    if missing:
        raise ValueError(f"calibration data lacks inputs {missing} (has {sorted(data)})")
    feeds = {}
    for inp in graph_inputs(model):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        feeds[inp.name] = np.asarray(data[inp.name]).astype(dtype, copy=False)
    return feeds, (calibration if isinstance(calibration, str) else "calibration data")


def with_finite_masks(model: onnx.ModelProto, low: int) -> Tuple[onnx.ModelProto, int]:
    """A copy of `model` whose mask-like FLOAT constants hold their finite stand-ins (what the mixed
    model computes with), and how many there were."""
    from onnx import numpy_helper

    from graphfix.mapped_data import values as mapped_values
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    tensors = [t for t in probe.graph.initializer]
    for node in probe.graph.node:
        if node.op_type in ("Constant", "ConstantOfShape"):
            tensors += [a.t for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR]
    found = 0
    for t in tensors:
        if t.data_type != FLOAT:
            continue
        values = mapped_values(t)   # weights left in the input's files are read from there
        extreme = mask_extreme(values, low)
        if extreme is not None:
            fixed = np.where(values == np.float32(extreme), np.float32(safe_mask_value(extreme, low)), values)
            t.CopyFrom(numpy_helper.from_array(fixed.astype(np.float32), t.name))
            found += 1
    return probe, found


def measure_absmax(model: onnx.ModelProto, names: List[str], feeds: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Largest finite |value| of each named FLOAT tensor in one ONNX Runtime run of `model`."""
    from graphfix.checks.ort import run_ort, runnable_copy
    probe = onnx.ModelProto()
    probe.CopyFrom(runnable_copy(model))
    present = {o.name for o in probe.graph.output}
    for name in names:
        if name not in present:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, FLOAT, None))
    outputs = run_ort(probe, feeds)
    found = {}
    for name in names:
        a = np.asarray(outputs.get(name, np.zeros(0)), dtype=np.float64)
        a = np.abs(a[np.isfinite(a)])
        found[name] = float(a.max()) if a.size else 0.0
    return found
