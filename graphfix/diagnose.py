"""`graphfix check`: predict, without a GPU, which nodes a TensorRT version will reject or mishandle.

The facts come from the version profile (graphfix/profiles); this module only evaluates them on a
model. It needs each tensor's dtype and (where known) shape, so it runs ONNX shape inference, and it
needs to know which inputs are constants (the parser's "weights") and which could be folded into
constants by the fold-constants pass.

Findings have a severity:
  error         the parser or builder rejects the node (or the engine cannot run);
  wrong-result  TensorRT builds and runs the node but computes something else than ONNX;
  warning       works, with a caveat (precision risk, narrowed types, nondeterminism).
A model is clean when no finding is an error or a wrong result.

JSON schema (``graphfix check --json``)::

    {"schema": "graphfix.check/1", "model": str, "target": {"version": str, "source": str},
     "profile": {"line": str, "version": str}, "clean": bool,
     "counts": {"error": int, "wrong-result": int, "warning": int},
     "findings": [{"node": str|null, "op": str|null, "severity": "error"|"wrong-result"|"warning",
                   "reason": str, "fix_pass": str|null, "source": str, "rule": str}],
     "real_parser": null | {"available": bool, "reason": str, "parsed": bool, "crashed": bool,
                            "errors": [{"node": str|null, "op": str|null, "message": str}],
                            # with the TensorRT-RTX backend (profiles with "real_backend": "rtx"):
                            "backend": "rtx", "label": str, "built": bool}}

Which real TensorRT a profile's line is checked against is data: the profile's ``real_backend``
(default "trt", the installed tensorrt; "rtx" for the 11.x line: TensorRT-RTX's 11.x parser and its
ahead-of-time builder, graphfix.checks.rtx).

``fix_pass`` is the graphfix pass that fixes the finding, or null ("no automatic fix"). ``node`` is
null for model-level findings. ``source`` is the citation the fact comes from.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set, Tuple

import numpy as np
import onnx
from onnx import numpy_helper

from .model_io import load_model
from .profiles import Profile, load_profile
from .target import Target, resolve_target

SCHEMA = "graphfix.check/1"
PROBLEM_SEVERITIES = ("error", "wrong-result")
SEVERITY_ORDER = {"error": 0, "wrong-result": 1, "warning": 2}

# Plugins that TensorRT's own plugin library registers and the parser's fallback importer finds by
# op name (custom domain nodes carrying these names are imported as plugins).
KNOWN_TRT_PLUGINS = frozenset({
    "EfficientNMS_TRT", "BatchedNMS_TRT", "BatchedNMSDynamic_TRT", "ROIAlign_TRT", "PyramidROIAlign_TRT",
    "MultilevelCropAndResize_TRT", "DisentangledAttention_TRT", "InstanceNormalization_TRT",
    "GroupNormalizationPlugin", "LayerNorm", "ScatterND", "ScatterElements", "Gelu", "CustomEmbLayerNormPluginDynamic",
    "CustomSkipLayerNormPluginDynamic", "CustomFCPluginDynamic", "CustomQKVToContextPluginDynamic",
    "GridAnchor_TRT", "NMS_TRT", "Normalize_TRT", "Region_TRT", "Reorg_TRT", "ResizeNearest_TRT",
    "ProposalLayer_TRT", "EfficientNMS_ONNX_TRT", "ModulatedDeformConv2d", "CoordConvAC", "BatchTilePlugin_TRT",
    "CropAndResize", "DecodeBbox3DPlugin", "FlattenConcat_TRT", "GenerateDetection_TRT", "MultiscaleDeformableAttnPlugin_TRT",
    "NMSDynamic_TRT", "PillarScatterPlugin", "Proposal", "ProposalDynamic", "Split", "VoxelGeneratorPlugin",
})
DEFAULT_DOMAINS = ("", "ai.onnx")
NONDETERMINISTIC_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                                  "Bernoulli", "Multinomial", "Dropout"})


@dataclass(frozen=True)
class Finding:
    node: Optional[str]
    op: Optional[str]
    severity: str
    reason: str
    fix_pass: Optional[str]
    source: str
    rule: str

    def to_json(self) -> dict:
        return {"node": self.node, "op": self.op, "severity": self.severity, "reason": self.reason,
                "fix_pass": self.fix_pass, "source": self.source, "rule": self.rule}


@dataclass
class CheckResult:
    model: str
    target: Target
    profile: Profile
    findings: List[Finding] = field(default_factory=list)
    real_parser: Optional[dict] = None

    @property
    def clean(self) -> bool:
        return not any(f.severity in PROBLEM_SEVERITIES for f in self.findings)

    @property
    def exit_code(self) -> int:
        return 0 if self.clean else 1

    def counts(self) -> Dict[str, int]:
        out = {"error": 0, "wrong-result": 0, "warning": 0}
        for f in self.findings:
            out[f.severity] = out.get(f.severity, 0) + 1
        return out

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "model": self.model, "target": self.target.to_json(),
                "profile": {"line": self.profile.line, "version": str(self.profile.version)},
                "clean": self.clean, "counts": self.counts(),
                "findings": [f.to_json() for f in self.findings], "real_parser": self.real_parser}

    def table(self) -> str:
        return format_table(self)


# ------------------------------------------------------------------------------------------------
# What the checker knows about the model: dtypes, shapes, constants, consumers.

def _dtype_name(elem_type: int) -> Optional[str]:
    if not elem_type:
        return None
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return None


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            if isinstance(value, bytes):
                return value.decode("utf-8", "replace")
            if isinstance(value, list) and value and isinstance(value[0], bytes):
                return [v.decode("utf-8", "replace") for v in value]
            return value
    return default


def _has_attr(node: onnx.NodeProto, name: str) -> bool:
    return any(a.name == name for a in node.attribute)


def _subgraphs(node: onnx.NodeProto) -> List[onnx.GraphProto]:
    out = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


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
        self.foldable: Set[str] = self._foldable()
        self._values: Dict[str, Optional[np.ndarray]] = {}
        self._computed: Dict[str, Optional[np.ndarray]] = {}
        self.local_functions = {(f.domain, f.name) for f in model.functions}

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
            for sub in _subgraphs(node):
                self._collect(sub, f"{display}/{sub.name or 'body'}")
                # names a subgraph reads from the outer scope count as consumed by the owning node
                for name in _outer_names(sub):
                    self.consumers.setdefault(name, []).append(ref)

    # --- types and shapes
    def dtype(self, name: str) -> Optional[str]:
        t = self.types.get(name)
        if t is None or t.WhichOneof("value") != "tensor_type":
            return None
        return _dtype_name(t.tensor_type.elem_type)

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
                value = numpy_helper.to_array(self.initializers[name])
            elif name in self.constant_nodes:
                node = self.constant_nodes[name]
                for a in node.attribute:
                    if a.name == "value":
                        value = numpy_helper.to_array(a.t)
                    elif a.name in ("value_int", "value_float"):
                        value = np.array(onnx.helper.get_attribute_value(a))
                    elif a.name in ("value_ints", "value_floats"):
                        value = np.array(onnx.helper.get_attribute_value(a))
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
                    feeds[t] = shape[_attr(node, "start", 0):_attr(node, "end", len(shape))]
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

    def _foldable(self) -> Set[str]:
        """Tensors computable before run time: constants, and deterministic nodes fed only by them
        (Shape/Size of statically shaped tensors included). fold-constants can turn these into weights."""
        known = set(self.weights)
        changed = True
        while changed:
            changed = False
            for ref in self.nodes:
                node = ref.node
                if all(o in known for o in node.output if o) or node.op_type in NONDETERMINISTIC_OPS:
                    continue
                if _subgraphs(node) or node.domain not in DEFAULT_DOMAINS:
                    continue
                if node.op_type in ("Shape", "Size") and node.input and self.static(node.input[0]):
                    ok = True
                else:
                    ok = all(i in known for i in node.input if i)
                if ok:
                    known.update(o for o in node.output if o)
                    changed = True
        return known

    def used(self, name: str) -> bool:
        return bool(self.consumers.get(name)) or name in self.graph_outputs


def _outer_names(graph: onnx.GraphProto) -> Set[str]:
    """Names a subgraph (and its nested subgraphs) reads that it does not define itself."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    read: Set[str] = set()
    for node in graph.node:
        read.update(i for i in node.input if i)
        for sub in _subgraphs(node):
            read.update(_outer_names(sub))
        defined.update(o for o in node.output if o)
    return read - defined


# ------------------------------------------------------------------------------------------------
# Rule evaluation: each check returns None (rule does not apply) or a detail string ("" for none).

RuleFn = Callable[["_Ctx", NodeRef, dict], Optional[str]]
RULES: Dict[str, RuleFn] = {}


def rule(name: str):
    def register(fn: RuleFn) -> RuleFn:
        RULES[name] = fn
        return fn
    return register


@dataclass
class _Ctx:
    facts: ModelFacts
    profile: Profile


def _input(node: onnx.NodeProto, index: int) -> Optional[str]:
    return node.input[index] if index < len(node.input) and node.input[index] else None


@rule("always")
def _always(ctx, ref, r):
    return ""


@rule("attr_in")
def _attr_in(ctx, ref, r):
    value = _attr(ref.node, r["attr"], r.get("default"))
    if value is None or value in r["values"]:
        return None
    return f"{r['attr']} = {value!r}"


@rule("attr_absent")
def _attr_absent(ctx, ref, r):
    present = [a for a in r["attrs"] if _has_attr(ref.node, a)]
    return f"has {', '.join(present)}" if present else None


@rule("attr_present")
def _attr_present(ctx, ref, r):
    return f"{r['attr']} = {_attr(ref.node, r['attr'])!r}" if _has_attr(ref.node, r["attr"]) else None


@rule("attr_all_equal")
def _attr_all_equal(ctx, ref, r):
    values = _attr(ref.node, r["attr"])
    if not values or all(v == r["value"] for v in values):
        return None
    return f"{r['attr']} = {list(values)}"


@rule("shape_slice")
def _shape_slice(ctx, ref, r):
    """Shape with start/end that select less than the whole shape."""
    node = ref.node
    if not (_has_attr(node, "start") or _has_attr(node, "end")):
        return None
    start, end = _attr(node, "start", 0), _attr(node, "end")
    rank = ctx.facts.rank(node.input[0])
    if rank is None:
        return None if start == 0 and end is None else f"start = {start}, end = {end}"
    start_n = min(max(start + rank if start < 0 else start, 0), rank)
    end_n = rank if end is None else min(max(end + rank if end < 0 else end, 0), rank)
    return None if (start_n, end_n) == (0, rank) else f"start = {start}, end = {end}, rank {rank}"


def _axes_value(ctx: "_Ctx", name: str) -> Optional[np.ndarray]:
    """A Reduce axes input's value: empty when its static shape is [0] (whatever feeds it), else the
    constant or foldable value, else None."""
    if ctx.facts.shape(name) == [0]:
        return np.zeros(0, dtype=np.int64)
    return ctx.facts.computed_value(name)


@rule("reduce_axes_ignored")
def _reduce_axes_ignored(ctx, ref, r):
    """An axes input that an importer ignores (it reduces over every axis) matters unless the result is
    the same: the axes name every axis, or are empty (= every axis), or every axis they leave out has
    size 1 and keepdims = 1 (measured: such LayerNorm/RMSNorm expansions matched on 8.6.0)."""
    node = ref.node
    axes = _input(node, 1)
    if axes is None:
        return None
    shape = ctx.facts.shape(node.input[0])
    value = _axes_value(ctx, axes)
    if value is not None and shape is not None:
        rank = len(shape)
        if not value.size:
            if _attr(node, "noop_with_empty_axes", 0) == 0:
                return None
        elif rank:
            named = {int(a) % rank for a in value.reshape(-1)}
            if named == set(range(rank)):
                return None
            if _attr(node, "keepdims", 1) and all(d == 1 for i, d in enumerate(shape) if i not in named):
                return None
    return f"axes input '{axes}'"


@rule("float_shape_input")
def _float_shape_input(ctx, ref, r):
    """Inputs whose values become an output shape must not be FLOAT values known only at run time.
    ``int_cast_ok``: a FLOAT made by a Cast from an integer tensor is accepted (the parser follows the
    integer shape values through the Cast; measured on TensorRT-RTX 1.7)."""
    for index in r["inputs"]:
        name = _input(ref.node, index)
        if name is None or name in ctx.facts.foldable:
            continue
        if ctx.facts.dtype(name) in ("FLOAT", "FLOAT16", "DOUBLE", "BFLOAT16"):
            producer = ctx.facts.producers.get(name)
            if (r.get("int_cast_ok") and producer is not None and producer.node.op_type == "Cast"
                    and (ctx.facts.dtype(producer.node.input[0]) or "").startswith(("INT", "UINT"))):
                continue
            return f"'{name}' is a run-time {ctx.facts.dtype(name)} tensor"
    return None


@rule("inputs_same_shape")
def _inputs_same_shape(ctx, ref, r):
    """The listed inputs must have equal shapes (where both are known)."""
    names = [_input(ref.node, i) for i in r["inputs"]]
    shapes = [ctx.facts.shape(n) if n else None for n in names]
    if any(s is None for s in shapes):
        return None
    first = shapes[0]
    for name, shape in zip(names[1:], shapes[1:]):
        if len(shape) != len(first) or any(a is not None and b is not None and a != b for a, b in zip(first, shape)):
            return f"'{names[0]}' {first} vs '{name}' {shape}"
    return None


@rule("loop_scan_without_trip_count")
def _loop_scan_without_trip_count(ctx, ref, r):
    node = ref.node
    carried = max(len(node.input) - 2, 0)
    scans = [o for o in node.output[carried:] if o]
    if not scans:
        return None
    trip = _input(node, 0)
    if trip is not None:
        value = ctx.facts.value(trip) if ctx.facts.is_weights(trip) else None
        if value is None or int(value.reshape(-1)[0]) < np.iinfo(np.int32).max:
            return None
    return f"{len(scans)} scan output(s), no trip count"


@rule("input_absent")
def _input_absent(ctx, ref, r):
    name = _input(ref.node, r["input"])
    return f"input {r['input']} ('{name}') is set" if name else None


@rule("input_empty")
def _input_empty(ctx, ref, r):
    """An optional input written as an empty name ('') rather than left out."""
    idx = r["input"]
    return f"input {idx} is ''" if idx < len(ref.node.input) and not ref.node.input[idx] else None


@rule("input_required")
def _input_required(ctx, ref, r):
    return None if _input(ref.node, r["input"]) else f"input {r['input']} is missing"


@rule("const_input")
def _const_input(ctx, ref, r):
    name = _input(ref.node, r["input"])
    if name is None or ctx.facts.is_weights(name):
        return None
    if name in ctx.facts.graph_inputs:
        return f"'{name}' is a graph input"
    return f"'{name}' is computed at run time"


@rule("const_input_false")
def _const_input_false(ctx, ref, r):
    name = _input(ref.node, r["input"])
    if name is None or not ctx.facts.is_weights(name):
        return None
    value = ctx.facts.value(name)
    return "training_mode is true" if value is not None and bool(np.any(value)) else None


@rule("max_used_outputs")
def _max_used_outputs(ctx, ref, r):
    extra = [o for o in ref.node.output[r["count"]:] if o and ctx.facts.used(o)]
    return f"uses output(s) {', '.join(extra)}" if extra else None


@rule("rank_in")
def _rank_in(ctx, ref, r):
    name = _input(ref.node, r["input"])
    rank = ctx.facts.rank(name) if name else None
    return None if rank is None or rank in r["ranks"] else f"input rank {rank}"


@rule("min_rank")
def _min_rank(ctx, ref, r):
    name = _input(ref.node, r["input"])
    rank = ctx.facts.rank(name) if name else None
    return None if rank is None or rank >= r["rank"] else f"input rank {rank}"


@rule("static_shape")
def _static_shape(ctx, ref, r):
    name = _input(ref.node, r["input"])
    if name is None or ctx.facts.shape(name) is None or ctx.facts.static(name):
        return None
    return f"'{name}' has dynamic dimensions"


@rule("einsum_chars")
def _einsum_chars(ctx, ref, r):
    equation = _attr(ref.node, "equation", "") or ""
    bad = sorted({c for c in equation if not ("a" <= c <= "z") and c not in "->., "})
    return f"equation {equation!r} has {''.join(bad)!r}" if bad else None


@rule("einsum_features")
def _einsum_features(ctx, ref, r):
    equation = (_attr(ref.node, "equation", "") or "").replace(" ", "")
    lhs = equation.split("->")[0]
    operands = lhs.split(",")
    found = []
    if "..." in equation:
        found.append("ellipsis")
    if any(len(set(op.replace(".", ""))) != len(op.replace(".", "")) for op in operands):
        found.append("diagonal (repeated subscript)")
    dims: Dict[str, Set[int]] = {}
    for op_labels, name in zip(operands, ref.node.input):
        shape = ctx.facts.shape(name) if name else None
        if shape is None or "..." in op_labels or len(shape) != len(op_labels):
            continue
        for label, dim in zip(op_labels, shape):
            if dim is not None:
                dims.setdefault(label, set()).add(dim)
    if any(len(v) > 1 and 1 in v for v in dims.values()):
        found.append("broadcasting")
    return f"equation {equation!r}: {', '.join(found)}" if found else None


@rule("cast_to_supported")
def _cast_to_supported(ctx, ref, r):
    to = _dtype_name(_attr(ref.node, "to", 0))
    if to is None:
        return None
    eff = ctx.profile.effective_dtype(to)
    p = ctx.profile
    if eff in p.native_dtypes or eff in p.io_only_dtypes or eff in p.quantized_only_dtypes:
        return None
    return f"to = {to}"


@rule("int_input_max")
def _int_input_max(ctx, ref, r):
    name = _input(ref.node, r["input"])
    value = ctx.facts.value(name) if name and ctx.facts.is_weights(name) else None
    if value is None or value.size == 0:
        return None
    top = int(np.max(value))
    return f"{top} > {r['max']}" if top > r["max"] else None


@rule("noop_empty_axes")
def _noop_empty_axes(ctx, ref, r):
    node = ref.node
    if _attr(node, "noop_with_empty_axes", 0) != 1 or _attr(node, "axes"):
        return None
    axes = _input(node, 1)
    if axes is not None and r.get("axes_input_read"):   # the importer reduces over exactly these axes
        return None
    if axes is not None:
        value = _axes_value(ctx, axes)
        if value is None or value.size:
            return None
    return "noop_with_empty_axes = 1 without axes"


@rule("split_uneven")
def _split_uneven(ctx, ref, r):
    node = ref.node
    n = _attr(node, "num_outputs")
    if n is None or _input(node, 1):
        return None
    shape = ctx.facts.shape(node.input[0])
    axis = _attr(node, "axis", 0)
    if shape is None or not -len(shape) <= axis < len(shape) or shape[axis] is None:
        return None
    dim = shape[axis]
    return f"dimension {dim} split into {n}" if dim % n else None


@rule("opset_at_least")
def _opset_at_least(ctx, ref, r):
    return f"model opset {ctx.facts.opset}" if ctx.facts.opset >= r["opset"] else None


@rule("squeeze_needs_axes")
def _squeeze_needs_axes(ctx, ref, r):
    node = ref.node
    if _attr(node, "axes") or _input(node, 1):
        return None
    if ctx.facts.shape(node.input[0]) is None or ctx.facts.static(node.input[0]):
        return None
    return "no axes and a dynamic input shape"


@rule("zero_point_zero")
def _zero_point_zero(ctx, ref, r):
    name = _input(ref.node, r["input"])
    if name is None:
        return None
    if not ctx.facts.is_weights(name):
        return f"zero point '{name}' is not a constant"
    value = ctx.facts.value(name)
    if value is None:
        return None
    return "non-zero zero point" if np.any(value.astype(np.float64) != 0) else None


@rule("mod_float_fmod0")
def _mod_float_fmod0(ctx, ref, r):
    if _attr(ref.node, "fmod", 0) != 0:
        return None
    dt = ctx.facts.dtype(ref.node.input[0])
    return f"{dt} inputs" if dt in ("FLOAT", "FLOAT16", "DOUBLE", "BFLOAT16") else None


@rule("rnn_directions_match")
def _rnn_directions_match(ctx, ref, r):
    node = ref.node
    if _attr(node, "direction", "forward") != "bidirectional":
        return None
    for name in ("activations", "activation_alpha", "activation_beta"):
        values = list(_attr(node, name, []) or [])
        half = len(values) // 2
        if values and values[:half] != values[half:]:
            return f"{name} = {values}"
    return None


@rule("attr_missing")
def _attr_missing(ctx, ref, r):
    """An attribute the importer defaults differently from ONNX: right only when written out."""
    if _has_attr(ref.node, r["attr"]):
        return None
    return f"no '{r['attr']}' attribute; ONNX default {r['onnx_default']!r}"


@rule("dim_equals")
def _dim_equals(ctx, ref, r):
    """A static dimension of an input that must have one value (an unknown dimension is not flagged)."""
    name = _input(ref.node, r["input"])
    shape = ctx.facts.shape(name) if name else None
    axis = r["axis"]
    if shape is None or not -len(shape) <= axis < len(shape) or shape[axis] is None:
        return None
    return None if shape[axis] == r["value"] else f"dimension {axis} of '{name}' is {shape[axis]}"


@rule("pool_ceil_last_window")
def _pool_ceil_last_window(ctx, ref, r):
    """ceil_mode = 1 where the last window would start in the right padding: opset 22 drops that
    window, a parser computing the output size with the older formula keeps it (one more position)."""
    node = ref.node
    if _attr(node, "ceil_mode", 0) != 1:
        return None
    auto_pad = _attr(node, "auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):   # SAME_*: the size comes from the stride alone
        return None
    shape = ctx.facts.shape(node.input[0]) if node.input else None
    kernel = list(_attr(node, "kernel_shape", []) or [])
    if shape is None or len(shape) < 3 or len(kernel) != len(shape) - 2:
        return None
    n = len(kernel)
    strides = list(_attr(node, "strides", []) or [1] * n)
    dilations = list(_attr(node, "dilations", []) or [1] * n)
    pads = list(_attr(node, "pads", []) or [0] * 2 * n) if auto_pad == "NOTSET" else [0] * 2 * n
    changed = []
    for i, size in enumerate(shape[2:]):
        if size is None:
            continue
        room = size + pads[i] + pads[i + n] - ((kernel[i] - 1) * dilations[i] + 1)
        if room < 0:
            continue
        out = -(-room // strides[i]) + 1
        if (out - 1) * strides[i] >= size + pads[i]:
            changed.append(f"spatial dim {i}: {out} instead of {out - 1}")
    return "; ".join(changed) if changed else None


# Ops that carry a value unchanged or by arithmetic: a shape value computed through them from a network
# input makes that input a shape tensor in TensorRT.
SHAPE_VALUE_OPS = frozenset({"Cast", "Identity", "Add", "Sub", "Mul", "Div", "Ceil", "Floor", "Round", "Relu",
                             "Neg", "Abs", "Max", "Min", "Clip", "Concat", "Gather"})
SHAPE_VALUE_DATA_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Slice", "Flatten"})   # input 0 only
FLOAT_DTYPES = ("FLOAT", "FLOAT16", "DOUBLE", "BFLOAT16")


@rule("float_input_to_shape")
def _float_input_to_shape(ctx, ref, r):
    """A value TensorRT takes as a shape tensor, computed at run time from a floating-point graph input:
    that network input would have to be a shape tensor, and those must be INT32 (INT64 from 10.0)."""
    f = ctx.facts
    for index in r["inputs"]:
        name = _input(ref.node, index)
        if name is None or name in f.foldable:
            continue
        stack, seen = [name], set()
        while stack:
            t = stack.pop()
            if t in seen or t in f.foldable:
                continue
            seen.add(t)
            if t in f.graph_inputs:
                if f.dtype(t) in FLOAT_DTYPES:
                    return f"'{name}' is computed from the {f.dtype(t)} graph input '{t}'"
                continue
            producer = f.producers.get(t)
            if producer is None:
                continue
            if producer.node.op_type in SHAPE_VALUE_OPS:
                stack.extend(i for i in producer.node.input if i)
            elif producer.node.op_type in SHAPE_VALUE_DATA_OPS and producer.node.input:
                stack.append(producer.node.input[0])
    return None


@rule("input_dtype")
def _input_dtype(ctx, ref, r):
    name = _input(ref.node, r["input"])
    dt = ctx.facts.dtype(name) if name else None
    return None if dt is None or dt in r["dtypes"] else f"'{name}' is {dt}"


# A rule's fix pass acts only where it can: folding needs a foldable input, and target-opset turns a
# Reduce axes input into an attribute only when the axes are known before run time.
FIX_APPLIES: Dict[Tuple[str, str], Callable] = {
    ("const_input", "fold-constants"): lambda ctx, ref, r: _input(ref.node, r["input"]) in ctx.facts.foldable,
    ("reduce_axes_ignored", "target-opset"): lambda ctx, ref, r: _axes_value(ctx, _input(ref.node, 1)) is not None,
    # a DequantizeLinear zero point is added for INT8 data only (8.6 rejects UINT8 data anyway)
    ("input_required", "target-opset"): lambda ctx, ref, r: ctx.facts.dtype(ref.node.input[0]) == "INT8",
}


def _when_holds(ctx: _Ctx, ref: NodeRef, when: Optional[dict]) -> bool:
    if not when:
        return True
    if "opset_ge" in when and ctx.facts.opset < when["opset_ge"]:
        return False
    if "opset_lt" in when and ctx.facts.opset >= when["opset_lt"]:
        return False
    for name, value in (when.get("attrs") or {}).items():
        if _attr(ref.node, name) != value:
            return False
    if "input_present" in when and _input(ref.node, when["input_present"]) is None:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# The checker

class _Checker:
    def __init__(self, model: onnx.ModelProto, profile: Profile, fp16: bool = False):
        self.fp16 = fp16                 # an FP16 engine is wanted
        self.facts = ModelFacts(model)
        self.profile = profile
        self.ctx = _Ctx(self.facts, profile)
        self.findings: List[Finding] = []
        self._seen: Set[Tuple] = set()
        self._doc = profile.sources[0] if profile.sources else ""   # the line's operators.md
        self._refusals: Optional[Dict[str, str]] = None   # decompose-ops near misses (lazy)
        self._emulated: Optional[Set[str]] = None           # tensors emulate-types moves (lazy)

    def add(self, node: Optional[str], op: Optional[str], severity: str, reason: str,
            fix: Optional[str], source: str, rule_name: str) -> None:
        key = (node, op, severity, reason)
        if key in self._seen:
            return
        self._seen.add(key)
        self.findings.append(Finding(node, op, severity, reason, fix, self.profile.cite(source), rule_name))

    def run(self) -> List[Finding]:
        self._model_level()
        if self.fp16:
            self._fp16_request()
        self._tensor_dtypes()
        for ref in self.facts.nodes:
            self._node(ref)
        self._layernorm_patterns()
        return self.findings

    # --- model level
    def _model_level(self) -> None:
        p, f = self.profile, self.facts
        v = p.version
        if f.inference_error:
            self.add(None, None, "warning", f"ONNX shape inference failed ({f.inference_error}); dtype and "
                     "shape checks are incomplete", None, "", "shape-inference")
        if f.opset > p.max_opset:
            self.add(None, None, "warning", f"model opset {f.opset} is above {p.max_opset}, the highest opset "
                     f"TensorRT {v} documents; nodes whose meaning changed are listed separately",
                     "target-opset", p.sources[0] if p.sources else "", "max-opset")
        if 0 < f.opset < 7:
            self.add(None, None, "warning", f"model opset {f.opset} is below 7, which TensorRT does not "
                     "guarantee to import", "target-opset", self._doc, "min-opset")
        if not p.int64_native:
            self._int64_narrowing()
        doubles = sorted(n for n in set(f.graph_inputs) | set(f.graph_outputs) if f.dtype(n) == "DOUBLE")
        if doubles and "DOUBLE" in p.narrowed_dtypes:
            self.add(None, None, "warning", f"DOUBLE inputs/outputs ({', '.join(doubles)}) are computed in FP32 "
                     "and bound as FLOAT", None, self._doc, "double-narrowed")

    def _fp16_request(self) -> None:
        """Strongly typed TensorRT (11.x, TensorRT-RTX) has no FP16 builder flag: the ONNX's types are
        the engine's, so an FP32-only model builds an FP32 engine."""
        if not self.profile.extra.get("strongly_typed"):
            return
        f = self.facts
        low = ("FLOAT16", "BFLOAT16")
        names = set(f.initializers) | {o for r in f.nodes for o in r.node.output if o} | set(f.graph_inputs)
        if any(f.dtype(n) in low for n in names):
            return
        self.add(None, None, "warning", f"an FP16 engine was asked for, but TensorRT {self.profile.version} builds "
                 "strongly typed networks (no FP16 builder flag) and this model has no FP16/BF16 tensors: it "
                 "would build in FP32; convert it with graphfix fix --precision fp16", "precision",
                 "trt-11-notes", "fp16-strongly-typed")

    def _int64_narrowing(self) -> None:
        f = self.facts
        int64_weights = sorted(n for n in f.weights if f.dtype(n) == "INT64" and f.used(n))
        if int64_weights:
            self.add(None, None, "warning", f"{len(int64_weights)} INT64 initializer(s)/constant(s) are narrowed "
                     f"to INT32 by the TensorRT {self.profile.version} parser", "int64-to-int32",
                     "importer-8.6", "int64-weights")
        for name in int64_weights:
            value = f.value(name)
            if value is None or value.size == 0:
                continue
            out_of_range = (value > np.iinfo(np.int32).max) | (value < np.iinfo(np.int32).min)
            if not np.any(out_of_range):
                continue
            consumers = f.consumers.get(name, [])
            # Slice starts/ends clamp INT64 sentinels to INT32 limits harmlessly
            if consumers and all(c.node.op_type == "Slice" and name in c.node.input[1:3] for c in consumers):
                continue
            self.add(None, None, "wrong-result", f"INT64 constant '{name}' has values outside the INT32 range; "
                     "the parser clamps them", self._out_of_range_fix(name, value[out_of_range]),
                     "importer-8.6", "int64-out-of-range")
        io64 = sorted(n for n in list(f.graph_inputs) + list(f.graph_outputs)
                      if f.dtype(n) == "INT64" and n not in f.initializers)
        if io64:
            self.add(None, None, "warning", f"INT64 inputs/outputs ({', '.join(io64)}) are bound as INT32 "
                     f"by TensorRT {self.profile.version}", "int64-to-int32", "importer-8.6", "int64-io")

    def _out_of_range_fix(self, name: str, values: np.ndarray) -> Optional[str]:
        """fold-constants where every reader folds away (the value never reaches TensorRT);
        int64-to-int32 for INT64_MAX/MIN "to the end" sentinels, which it clamps on their way to a
        Slice; otherwise no pass can keep a value that INT32 cannot hold."""
        f = self.facts
        readers = f.consumers.get(name, [])
        if readers and all(o in f.foldable for c in readers for o in c.node.output if o) \
                and name not in f.graph_outputs:
            return "fold-constants"
        limits = (np.iinfo(np.int64).max, np.iinfo(np.int64).min)
        return "int64-to-int32" if np.isin(values, limits).all() else None

    # --- tensor dtypes
    def _tensor_dtypes(self) -> None:
        p, f = self.profile, self.facts
        names = list(f.graph_inputs) + [o for r in f.nodes for o in r.node.output if o]
        names += sorted(n for n in f.initializers if f.used(n) and n not in f.graph_inputs)
        for name in dict.fromkeys(names):
            kind = f.kind(name)
            producer = f.producers.get(name)
            where = (producer.display, producer.node.op_type) if producer else (None, None)
            label = f"graph input '{name}'" if name in f.graph_inputs else f"tensor '{name}'"
            if kind is not None and kind != "tensor_type":
                if f.used(name):
                    self.add(*where, "error", f"{label} is a {kind.replace('_type', '')}: TensorRT handles "
                             "tensors only", None, p.sources[0] if p.sources else "", "non-tensor-type")
                continue
            dt = f.dtype(name)
            if dt is None or not f.used(name):
                continue
            eff = p.effective_dtype(dt)
            if eff in p.native_dtypes:
                continue
            if eff in p.io_only_dtypes:
                if self._io_only_ok(name):
                    continue
                fix, note = self._dtype_fix(name, dt, self._rewritten_with(name))
                self.add(*where, "error", f"{label} is {dt}: TensorRT {p.version} supports {dt} only for network "
                         f"inputs/outputs that go straight through a Cast{note}", fix, self._doc, "io-only-dtype")
                continue
            if eff in p.quantized_only_dtypes:
                if self._quantized_ok(name):
                    continue
                fix, note = self._dtype_fix(name, dt, self._rewritten_with(name))
                self.add(*where, "error", f"{label} is {dt}: TensorRT {p.version} supports {dt} only as the "
                         f"output of QuantizeLinear / input of DequantizeLinear{note}", fix, self._doc,
                         "quantized-only-dtype")
                continue
            fix, note = self._dtype_fix(name, dt, None)
            self.add(*where, "error", f"{label} is {dt}, a type TensorRT {p.version} does not have{note}", fix,
                     self._doc, "unsupported-dtype")

    def _dtype_fix(self, name: str, dt: str, fix: Optional[str]) -> Tuple[Optional[str], str]:
        """(pass, note for the reason) for a tensor of a type the target lacks: a rewrite rule that
        replaces its ops, else emulate-types for the integer types it computes in INT32. Graph
        inputs/outputs of types TensorRT cannot bind change only with --int32-io, so there the
        finding names no default fix, only the flag (UINT8 ones are fine once a Cast reads them)."""
        if fix is not None:
            return fix, ""
        from .passes.emulate_types import INTEGER_OLD, emulated_types, planned_tensors
        if onnx.TensorProto.DataType.Value(dt) not in set(emulated_types(self.profile.version)) & set(INTEGER_OLD):
            return None, ""
        if self._emulated is None:
            self._emulated = planned_tensors(self.facts.model, self.profile.version)
        f = self.facts
        if name not in self._emulated:
            return None, ""
        if (name in f.graph_inputs or name in f.graph_outputs) and dt not in self.profile.io_only_dtypes:
            return None, "; `graphfix fix --int32-io` makes such graph inputs/outputs INT32 (pass emulate-types)"
        return "emulate-types", ""

    def _rewritten_with(self, name: str) -> Optional[str]:
        """The pass whose rewrite rules replace the op producing `name`, or every op reading it: the
        tensor's type problem goes with them (quantize_dynamic's UINT8 chains and decompose-quantized)."""
        from .plugin_rules import passes_for_op
        f = self.facts
        producer = f.producers.get(name)
        refs = [producer] if producer is not None else list(f.consumers.get(name, []))
        found = [passes_for_op(r.node.op_type, r.node.domain, self.profile.version) for r in refs]
        if not found or not all(found):
            return None
        first = found[0][0]
        return first if all(first in passes for passes in found) else None

    def _io_only_ok(self, name: str) -> bool:
        f = self.facts
        if name in f.graph_inputs:   # "io_only_consumers": ops measured to take such inputs (8.6: Equal)
            consumers = set(self.profile.extra.get("io_only_consumers", ["Cast"]))
            return all(c.node.op_type in consumers for c in f.consumers.get(name, []))
        producer = f.producers.get(name)
        if name in f.graph_outputs and producer is not None and producer.node.op_type == "Cast":
            return not f.consumers.get(name)
        if name in f.weights:  # UINT8 constants feeding Q/DQ are imported (10.10 changelog)
            return all(c.node.op_type in ("DequantizeLinear", "QuantizeLinear") for c in f.consumers.get(name, []))
        return False

    def _quantized_ok(self, name: str) -> bool:
        f = self.facts
        producer = f.producers.get(name)
        consumers = f.consumers.get(name, [])
        if producer is not None and producer.node.op_type == "QuantizeLinear":
            return True
        if name in f.weights:  # quantized weights and zero points are read by Q/DQ nodes
            return bool(consumers) and all(c.node.op_type in ("QuantizeLinear", "DequantizeLinear")
                                           for c in consumers)
        return bool(consumers) and all(c.node.op_type == "DequantizeLinear" and c.node.input[0] == name
                                       for c in consumers)

    # --- nodes
    def _node(self, ref: NodeRef) -> None:
        p, node = self.profile, ref.node
        op = node.op_type
        if node.domain not in DEFAULT_DOMAINS:
            self._custom_domain(ref)
            return
        if not p.imports(op):
            entry = p.op(op) or {}
            if (node.domain, op) in self.facts.local_functions:
                self._local_function(ref)
                return
            since = entry.get("available_since")
            why = (f"TensorRT imports {op} from {since}" if since else
                   f"the TensorRT {p.version} ONNX parser has no importer for {op}")
            self.add(ref.display, op, "error", why, self._missing_op_fix(node, ref),
                     entry.get("source") or (p.sources[0] if p.sources else ""), "unsupported-op")
            return
        entry = p.op(op)
        self._input_types(ref, entry)
        for r in entry.get("rules", []):
            if not _when_holds(self.ctx, ref, r.get("when")):
                continue
            fn = RULES.get(r["check"])
            if fn is None:
                raise KeyError(f"profile {p.line}: unknown rule check '{r['check']}' for {op}")
            detail = fn(self.ctx, ref, r)
            if detail is None:
                continue
            fix = r.get("fix")
            applies = FIX_APPLIES.get((r["check"], fix))
            if applies is not None and not applies(self.ctx, ref, r):
                fix = None
            if fix is None:   # a rewrite rule that removes this finding (plugin_rules: Rule.fixes)
                from .plugin_rules import passes_for_finding
                fix = self._unless_refused(ref, next(iter(passes_for_finding(op, r["check"], p.version)), None))
            reason = r["reason"] + (f" ({detail})" if detail else "")
            self.add(ref.display, op, r["severity"], reason, fix, r.get("source", ""), r["check"])
        if p.myelin_bool_unsafe_ops and op in p.myelin_bool_unsafe_ops:
            bools = [i for i in node.input[:1] if i and self.facts.dtype(i) == "BOOL"]
            if bools:
                self.add(ref.display, op, "warning", f"bool data through {op}: Myelin-fused regions may reject "
                         "bool I/O at build time", "cast-bool", self._doc, "myelin-bool")

    def _input_types(self, ref: NodeRef, entry: dict) -> None:
        types = entry.get("types")
        if not types:
            return
        p, f, node = self.profile, self.facts, ref.node
        which = entry.get("typed_inputs", [0])
        if which == "all":
            names = [i for i in node.input if i]
        elif which == "outputs":
            names = [o for o in node.output[:1] if o]
        else:
            names = [node.input[i] for i in which if i < len(node.input) and node.input[i]]
        for name in names:
            dt = f.dtype(name)
            if dt is None:
                continue
            eff = p.effective_dtype(dt)
            if eff not in p.native_dtypes:
                continue  # reported once per tensor by _tensor_dtypes
            if eff in types:
                continue
            fix = None
            if eff == "BOOL" and node.op_type in p.bool_rejecting_ops:
                fix = "cast-bool"
            shown = dt if eff == dt else f"{dt} (as {eff})"
            accepted = ", ".join(types)
            self.add(ref.display, node.op_type, "error", f"{node.op_type} does not take {shown} input "
                     f"'{name}' on TensorRT {p.version} (documented types: {accepted})", fix,
                     entry.get("source", ""), "dtype")

    def _custom_domain(self, ref: NodeRef) -> None:
        node = ref.node
        if (node.domain, node.op_type) in self.facts.local_functions:
            self._local_function(ref)
            return
        if node.op_type in KNOWN_TRT_PLUGINS:
            self.add(ref.display, node.op_type, "warning", f"imported as the TensorRT plugin {node.op_type}; "
                     "ONNX Runtime cannot run it", None, self._doc, "plugin-node")
            return
        self.add(ref.display, node.op_type, "error", f"custom-domain op {node.domain}::{node.op_type}: the parser "
                 f"looks for a TensorRT plugin named {node.op_type} and none is known", self._missing_op_fix(node),
                 self._doc, "custom-op")

    def _unless_refused(self, ref: Optional[NodeRef], fix: Optional[str]) -> Optional[str]:
        """`fix`, unless it is decompose-ops and its rule's own match refuses this node."""
        if fix != "decompose-ops" or ref is None:
            return fix
        if ref.graph_path:   # the pass rewrites main-graph nodes only
            return None
        if self._refusals is None:
            from .plugin_rules.ops_base import refusals
            self._refusals = refusals(self.facts.model, self.profile.version)
        return None if ref.display in self._refusals else fix

    def _missing_op_fix(self, node: onnx.NodeProto, ref: Optional[NodeRef] = None) -> Optional[str]:
        """The pass that rewrites an op the parser cannot import: a rewrite rule's pass (contrib and
        quantized decompositions, plugins), else target-opset's decompositions and CastLike -> Cast."""
        from .plugin_rules import passes_for_op
        found = passes_for_op(node.op_type, node.domain, self.profile.version)
        if found:
            return self._unless_refused(ref, found[0])
        if node.domain in DEFAULT_DOMAINS:
            from .passes.target_opset import replaces_missing_op
            return "target-opset" if replaces_missing_op(node.op_type) else None
        return None

    def _local_function(self, ref: NodeRef) -> None:
        if self.profile.local_functions:
            return
        self.add(ref.display, ref.node.op_type, "error", f"calls the model-local function "
                 f"{ref.node.domain}::{ref.node.op_type}; the TensorRT {self.profile.version} parser does not import "
                 "local functions (inline them, e.g. with onnx.inliner)", None, "changelog", "local-function")

    # --- patterns
    def _layernorm_patterns(self) -> None:
        """ReduceMean -> Sub -> Pow/Mul -> ReduceMean -> Add -> Sqrt -> Div: FP16 overflow risk."""
        f = self.facts
        for ref in f.nodes:
            node = ref.node
            if node.op_type != "Div" or len(node.input) != 2:
                continue
            sub, sqrt = f.producers.get(node.input[0]), f.producers.get(node.input[1])
            if not (sub and sqrt and sub.node.op_type == "Sub" and sqrt.node.op_type == "Sqrt"):
                continue
            add = f.producers.get(sqrt.node.input[0])
            if not (add and add.node.op_type == "Add"):
                continue
            var = next((f.producers.get(i) for i in add.node.input
                        if f.producers.get(i) and f.producers[i].node.op_type == "ReduceMean"), None)
            if var is None:
                continue
            sq = f.producers.get(var.node.input[0])
            if not (sq and sq.node.op_type in ("Pow", "Mul") and sub.node.output[0] in sq.node.input):
                continue
            mean = f.producers.get(sub.node.input[1])
            if not (mean and mean.node.op_type == "ReduceMean"):
                continue
            self.add(mean.display, "ReduceMean", "warning", "decomposed LayerNormalization (ReduceMean, Sub, Pow, "
                     "ReduceMean, Add, Sqrt, Div): in FP16 the variance can overflow; a fused "
                     "LayerNormalization runs in FP32 internally", "fuse-layernorm", "ln-fp16", "layernorm-pattern")


# ------------------------------------------------------------------------------------------------
# Entry points

def check_model(src, trt=None, real_parser: bool = False, fp16: bool = False) -> CheckResult:
    """Check a model (path, bytes or ModelProto) against a TensorRT version (default: resolve_target).
    ``fp16``: an FP16 engine is wanted (strongly typed targets need the precision in the ONNX)."""
    from .checks.structural import validate_input
    loaded = load_model(src)
    validate_input(loaded.model, loaded.source)   # the same refusals as `fix` (exit 2)
    target = resolve_target(trt)
    profile = load_profile(target.version)
    findings = _Checker(loaded.model, profile, fp16=fp16).run()
    findings.sort(key=lambda x: (x.node is not None, SEVERITY_ORDER.get(x.severity, 9)))
    result = CheckResult(loaded.source, target, profile, findings)
    if real_parser:
        if profile.extra.get("real_backend") == "rtx":
            result.real_parser = run_rtx_parser(loaded.path, loaded.model)
        else:
            result.real_parser = run_real_parser(loaded.path, loaded.model)
    return result


@contextlib.contextmanager
def _model_file(path: Optional[str], model: onnx.ModelProto):
    """`path`, or a temporary copy of `model` (removed afterwards) for a parser that reads a file."""
    if path is not None:
        yield path
        return
    fd, tmp = tempfile.mkstemp(suffix=".onnx", prefix="graphfix-check-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(model.SerializeToString())
        yield tmp
    finally:
        os.unlink(tmp)


def run_real_parser(path: Optional[str], model: onnx.ModelProto) -> dict:
    """The real TensorRT parser's verdict, when TensorRT and a GPU are here; never raises."""
    from .checks.trt_env import trt_unavailable_reason
    reason = trt_unavailable_reason()
    if reason is not None:
        return {"available": False, "reason": reason}
    try:
        from .checks.trt import parse_in_subprocess
    except ImportError as exc:
        return {"available": False, "reason": f"real parser unavailable ({exc})"}
    try:
        with _model_file(path, model) as file:
            outcome = parse_in_subprocess(file)
        return {"available": True, "reason": "", "parsed": bool(outcome.parsed), "crashed": bool(outcome.crashed),
                "errors": [dict(e) for e in outcome.errors]}
    except Exception as exc:  # the real parser is evidence beside the prediction, not a requirement
        return {"available": False, "reason": f"real parser unavailable ({type(exc).__name__}: {exc})"}


def run_rtx_parser(path: Optional[str], model: onnx.ModelProto) -> dict:
    """TensorRT-RTX's verdict (11.x parser, then an ahead-of-time build on the CPU); never raises."""
    from .checks.trt_backends import get_backend
    from .checks.trt_env import rtx_unavailable_reason
    label = get_backend("rtx").label(None)
    reason = rtx_unavailable_reason()
    if reason is not None:
        return {"available": False, "reason": reason, "backend": "rtx", "label": label}
    try:
        from .checks.rtx import build_only
        with _model_file(path, model) as file:
            outcome = build_only(file, progress=False)
        return {"available": True, "reason": "", "backend": "rtx", "label": outcome.label or label,
                "parsed": bool(outcome.parsed), "built": bool(outcome.built), "crashed": bool(outcome.crashed),
                "errors": [dict(e) for e in outcome.errors]}
    except Exception as exc:  # evidence beside the prediction, not a requirement
        return {"available": False, "reason": f"TensorRT-RTX unavailable ({type(exc).__name__}: {exc})",
                "backend": "rtx", "label": label}


def format_table(result: CheckResult, width: int = 100, verbosity: int = 0) -> str:
    """The terminal rendering (graphfix.check_render)."""
    from .check_render import render_check
    return render_check(result, width=width, verbosity=verbosity)


__all__ = ["Finding", "CheckResult", "ModelFacts", "check_model", "run_real_parser", "run_rtx_parser", "format_table",
           "RULES", "SCHEMA"]
