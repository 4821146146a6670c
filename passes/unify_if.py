"""unify-if: give TensorRT If nodes whose two branches return the same shapes.

TensorRT requires the two branches of a run-time If to produce outputs of one shape; the parser
stops with "IIfConditionalOutputLayer inputs must have the same shape. Shapes are [-1] and [-1,1]"
(8.6, onnx-tensorrt issues, e.g. NVIDIA/TensorRT#1731, #3321). It imports only the taken branch
when the condition is an initializer, so an If is a problem only while its condition is computed.

Two forms are rewritten, at any depth (If branches, nested Ifs):
1. **Conditions that shapes decide.** PyTorch exports `x.squeeze(d)` as
   If(Shape(x)[d] == 1, Squeeze, Identity) and unbatched-input checks of LSTM/GRU as
   If(Size(Shape(x)) == 2, Unsqueeze, Identity). When the dim tested is static (or only the rank is
   tested, which is always static), the condition is a constant: the taken branch replaces the If.
   fold-constants does this only for main-graph conditions it can fold; inside a branch (Silero VAD
   puts its whole network in the branches of an If on the sample rate) nothing else does.
2. **Outputs of one rank whose static dims differ** (then [N, 8], else [N, 4]) under a run-time
   condition computed from integer inputs (a configuration input), below 11.x: the smaller branch
   pads its output with zeros to the larger dims; after the If, a Slice cuts the output back to
   Where(cond, then dims, else dims). Exact, any dtype. The condition's inputs then feed a shape, so
   TensorRT treats them as shape-tensor inputs (their values belong in the optimization profile).

Not covered, reported as a warning: outputs whose rank depends on a run-time condition (a squeeze
of a dimension that is dynamic: its size decides the rank), and sizes decided by float data
(data-dependent shapes). No ONNX rewrite keeps their meaning; a static input shape (export with
fixed sizes) or `--freeze` of the configuration input that the condition reads is the way out. A
symbolic dim against a static one is not flagged: TensorRT's parser sees -1 there, and nothing
measured shows it refused.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphfix.graph_utils import NameMaker, graph_protos, toposort
from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.registry import register_pass
from graphfix.remedies import fixes_finding
from graphfix.target import TrtRange

MAX_ROUNDS = 16          # rounds of (shape inference -> decide -> inline); nested Ifs need one each
Dim = Union[int, str, None]   # static size, symbol, unknown
SAME_SHAPE_ERROR = "IIfConditionalOutputLayer inputs must have the same shape"
# Where outputs of one rank but different dims pass: the 11.x parser (TensorRT-RTX 1.7, measured: it
# parsed and built if_static_dims_differ as it is, and wants equal ranks only). 10.13 still refused
# [2] vs [1] (NVIDIA/TensorRT#4603).
SAME_RANK_ACCEPTED = TrtRange(since="11.0")

_COMPARE = {"Equal": np.equal, "Greater": np.greater, "Less": np.less, "GreaterOrEqual": np.greater_equal,
            "LessOrEqual": np.less_equal, "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor,
            "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum, "Min": np.minimum}


@register_pass
class UnifyIf(Pass):
    info = PassInfo(
        name="unify-if",
        summary="If nodes: inline branches that shapes decide; pad differing static output dims to one shape",
        fixes=f"{SAME_SHAPE_ERROR}. Shapes are [-1] and [-1,1]",
        after=("fold-constants",),
        before=("int64-to-int32",),
        remedies=(fixes_finding("if_branch_shapes", applies=lambda site: removes_finding(site, "if_shape_problems"),
                                why="inlines Ifs that static shapes decide; pads outputs of one rank"),),
    )

    def run(self, graph: gs.Graph) -> PassResult:
        result = PassResult()
        if not any(True for _ in _ifs(graph)):
            return result           # no shape inference for models without If
        names = NameMaker(graph, "unify-if")
        for _ in range(MAX_ROUNDS):
            facts = ShapeFacts.of(graph)
            folded = fold_branch_shape_arithmetic(graph, facts, _opset(graph) or 17)
            if folded:
                result.change("fold-in-branches", graph.name or "graph", {"tensors": folded})
                result.count("branch_values_folded", folded)
                facts = ShapeFacts.of(graph)
            decided = [(g, n, v) for g, n in _ifs(graph) for v in [decide(n, facts)] if v is not None]
            if not decided:
                break
            into_main = False
            for g, node, value in decided:
                if not _still_in(g, node):   # inside a branch inlined just now: next round
                    continue
                into_main |= g is graph
                count = inline_branch(g, node, value, names)
                result.change("inline-if", node.name or node.outputs[0].name,
                              {"branch": "then_branch" if value else "else_branch", "nodes": count,
                               "why": "the condition is a constant, or follows from static shapes"})
                result.count("ifs_inlined")
            if into_main:
                self._fold(graph, result)
        facts = ShapeFacts.of(graph)
        for g, node in list(_ifs(graph)):
            plan = mismatch(node, facts)
            if plan is None:
                continue
            kind, detail = plan
            if kind == "pad" and SAME_RANK_ACCEPTED.contains(self.context.target):
                continue            # the target takes outputs of one rank with different dims
            if kind == "pad" and _opset(graph) >= 11:
                pad_outputs(g, node, facts, names)
                result.change("pad-if-outputs", node.name or node.outputs[0].name, {"outputs": detail})
                result.count("ifs_padded")
            else:
                result.warn(f"If '{node.name}': {explain(kind, detail)}")
        if result.changes:
            toposort(graph)
        return result

    def _fold(self, graph: gs.Graph, result: PassResult) -> None:
        """fold-constants over what an inlined branch brought into the main graph (Shape chains, pads
        computed from constants): the dims the next conditions test often become static only then."""
        from graphfix.passes.fold_constants import refold
        refold(graph, self.context, result)


def removes_finding(site, cache: str) -> bool:
    """For the table of remedies: whether the pass removes the finding `check` made at this node
    (the predicate cached its verdict on the facts: passes/unify_if.py, passes/bound_topk.py)."""
    found = site.facts.memo.get(cache, {}).get(site.ref.node.output[0]) if site.ref is not None else None
    return bool(found and found[0])


def explain(kind: str, detail) -> str:
    """Why an If cannot be unified, and what to do by hand."""
    if kind == "pad":
        return f"branch outputs differ in static dims ({detail}): unify-if pads them (opset >= 11 needed)"
    if kind == "data":
        return (f"branch outputs differ in static dims ({detail}) under a condition computed from float "
                "values: the output's size is data-dependent, and TensorRT computes shapes from integer "
                "inputs only (measured on TensorRT-RTX: 'Network input ... is a shape tensor and must have "
                "type Int32 or Int64'); no rewrite keeps it; freeze or move the decision out of the model")
    return (f"branch outputs differ ({detail}) under a run-time condition: their rank depends on "
            "run-time values, which no rewrite can give one shape; pin the input sizes "
            "(graphfix fix --static-shapes NAME:1x576, or export with static shapes) so the condition "
            "becomes a constant, or freeze the input the condition reads (graphfix fix --freeze NAME=VALUE)")


# -- facts ----------------------------------------------------------------------------------------------

class ShapeFacts:
    """Dims (int, symbol or None) and element types by tensor name, from ONNX shape inference over the
    whole model, subgraphs included, merged with graphsurgeon's own annotations."""

    def __init__(self, dims: Dict[str, Optional[List[Dim]]], types: Dict[str, int]):
        self._dims = dims
        self.types = types

    @classmethod
    def of(cls, graph: gs.Graph) -> "ShapeFacts":
        try:
            model = gs.export_onnx(graph, do_type_check=False)
            model = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
        except Exception:   # a graph inference rejects: the annotations alone
            return cls({}, {})
        return cls.from_model(model)

    @classmethod
    def from_model(cls, model: onnx.ModelProto) -> "ShapeFacts":
        dims: Dict[str, Optional[List[Dim]]] = {}
        types: Dict[str, int] = {}
        for g in graph_protos(model.graph):
            for vi in list(g.input) + list(g.output) + list(g.value_info):
                if vi.type.WhichOneof("value") != "tensor_type":
                    continue
                t = vi.type.tensor_type
                types.setdefault(vi.name, t.elem_type)
                if t.HasField("shape"):
                    dims.setdefault(vi.name, [d.dim_value if d.HasField("dim_value") else
                                              (d.dim_param or None) for d in t.shape.dim])
            for init in g.initializer:
                dims.setdefault(init.name, list(init.dims))
                types.setdefault(init.name, init.data_type)
        return cls(dims, types)

    def dims(self, tensor: gs.Tensor) -> Optional[List[Dim]]:
        if isinstance(tensor, gs.Constant):
            return list(np.asarray(tensor.values).shape)
        found = self._dims.get(tensor.name)
        if found is not None:
            return found
        shape = getattr(tensor, "shape", None)
        if shape is None:
            return None
        return [int(d) if isinstance(d, (int, np.integer)) and d >= 0 else (d if isinstance(d, str) else None)
                for d in shape]

    def elem_type(self, tensor: gs.Tensor) -> int:
        if tensor.name in self.types:
            return self.types[tensor.name]
        dtype = getattr(tensor, "dtype", None)
        try:
            return int(onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))) if dtype is not None else 0
        except (TypeError, KeyError, ValueError):
            return 0


# -- deciding conditions -----------------------------------------------------------------------------------

def decide(node: gs.Node, facts: ShapeFacts) -> Optional[bool]:
    """The value of an If condition that constants or static shapes fix; None otherwise. Constant
    conditions are inlined too (TensorRT would import only the taken branch): until then ONNX shape
    inference cannot tell the rank of the If's outputs, which later conditions often test."""
    cond = node.inputs[0] if node.inputs else None
    if cond is None or (not isinstance(cond, gs.Constant) and not cond.inputs):
        return None
    value = static_value(cond, facts)
    if value is None or value.size != 1 or any(v is None for v in value.flat):
        return None
    return bool(value.reshape(-1)[0])


def static_value(tensor: gs.Tensor, facts: ShapeFacts, depth: int = 0) -> Optional[np.ndarray]:
    """The value of a small integer/bool tensor as far as constants and static dims give it: an object
    array whose unknown entries are None (a partly static Shape), or None when even its length is
    unknown."""
    if depth > 32:
        return None
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values).astype(object)
    if not tensor.inputs:
        return None                       # a graph (or branch) input: run-time
    node = tensor.inputs[0]
    ins = [static_value(t, facts, depth + 1) if not t.is_empty() else None for t in node.inputs[1:]]
    if node.op == "Constant":
        value = node.attrs.get("value")
        if isinstance(value, gs.Constant):
            return np.asarray(value.values).astype(object)
        for key in ("value_int", "value_ints"):
            if key in node.attrs:
                return np.asarray(node.attrs[key], dtype=np.int64).astype(object)
        return None
    if node.op == "Shape":
        dims = facts.dims(node.inputs[0])
        if dims is None:
            return None
        picked = list(dims)[slice(int(node.attrs.get("start", 0)),
                                  None if node.attrs.get("end") is None else int(node.attrs["end"]))]
        return np.array([d if isinstance(d, int) else None for d in picked] or np.zeros(0), dtype=object)
    first = static_value(node.inputs[0], facts, depth + 1) if node.inputs else None
    if first is None:
        return None
    if node.op == "Size":   # the element count: known even where the entries are not (a rank test)
        return np.array(first.size, dtype=object)
    if node.op in ("Identity", "Cast"):
        if node.op == "Cast" and int(node.attrs.get("to", 0)) == onnx.TensorProto.BOOL:
            return None if any(v is None for v in first.flat) else _obj(first.astype(bool))
        return first
    if node.op in ("Squeeze", "Unsqueeze", "Reshape", "Flatten"):   # scalars <-> 1-element vectors
        return first.reshape(()) if node.op == "Squeeze" and first.size == 1 else first.reshape(-1)
    if node.op == "Gather" and ins and ins[0] is not None and int(node.attrs.get("axis", 0)) == 0 \
            and first.ndim == 1 and not any(v is None for v in ins[0].flat):
        idx = ins[0].astype(np.int64)
        if np.any(idx < -first.size) or np.any(idx >= first.size):
            return None
        return np.asarray(first[np.where(idx < 0, idx + first.size, idx)], dtype=object)
    if node.op == "Concat" and all(v is not None for v in ins):
        return np.concatenate([first.reshape(-1)] + [v.reshape(-1) for v in ins])
    if node.op == "Not":
        return None if _known(first) is None else _obj(np.logical_not(first.astype(bool)))
    if node.op in _COMPARE and len(ins) == 1 and ins[0] is not None:
        a, b = _known(first), _known(ins[0])
        if a is None or b is None:
            return None
        return _obj(_COMPARE[node.op](a.astype(np.int64), b.astype(np.int64)))
    return None


def _obj(value) -> np.ndarray:
    return np.asarray(value, dtype=object)


def _known(value: Optional[np.ndarray]) -> Optional[np.ndarray]:
    return None if value is None or any(v is None for v in value.flat) else value


# -- branch shapes -------------------------------------------------------------------------------------------

def mismatch(node: gs.Node, facts: ShapeFacts) -> Optional[Tuple[str, list]]:
    """('pad', [[output, then dims, else dims], ...]) when only static dims differ;
    ('rank' | 'data', [...]) when no rewrite can unify them; None when the outputs agree (or are
    unknown, or the condition is an initializer TensorRT resolves itself)."""
    cond = node.inputs[0] if node.inputs else None
    if cond is None or isinstance(cond, gs.Constant) or (cond.inputs and cond.inputs[0].op == "Constant"):
        return None
    then_b, else_b = node.attrs.get("then_branch"), node.attrs.get("else_branch")
    if not isinstance(then_b, gs.Graph) or not isinstance(else_b, gs.Graph):
        return None
    rows, worst = [], None
    for out, t, e in zip(node.outputs, then_b.outputs, else_b.outputs):
        kind = compare_dims(facts.dims(t), facts.dims(e))
        if kind is None:
            continue
        rows.append([out.name, _show(facts.dims(t)), _show(facts.dims(e))])
        worst = kind if worst is None or _SEVERITY[kind] > _SEVERITY[worst] else worst
    if worst == "pad" and reads_float_data(cond, facts):
        worst = "data"      # the output's size would be a shape computed from float values
    return None if worst is None else (worst, rows)


_SEVERITY = {"pad": 0, "data": 1, "rank": 2}


def compare_dims(a: Optional[Sequence[Dim]], b: Optional[Sequence[Dim]]) -> Optional[str]:
    """None (same, or not known to differ), 'pad' (same rank, static dims that differ), 'rank'
    (ranks differ)."""
    if a is None or b is None:
        return None
    if len(a) != len(b):
        return "rank"
    kind = None
    for x, y in zip(a, b):
        if isinstance(x, int) and isinstance(y, int) and x != y:
            kind = "pad"
        # else equal, or not known to differ: a symbolic dim against anything is -1 to TensorRT's
        # parser, and no measurement shows -1 against a static size refused
    return kind


def reads_float_data(cond: gs.Tensor, facts: "ShapeFacts") -> bool:
    """Whether an If condition is computed from floating-point values (not only integer inputs, shapes
    and constants): TensorRT cannot turn it into a shape."""
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    todo, seen = [cond], set()
    while todo:
        t = todo.pop()
        if id(t) in seen or isinstance(t, gs.Constant):
            continue
        seen.add(id(t))
        if facts.elem_type(t) in floats:
            return True
        if t.inputs and t.inputs[0].op not in ("Shape", "Size"):
            todo.extend(t.inputs[0].inputs)
    return False


def _show(dims: Optional[Sequence[Dim]]) -> str:
    return "?" if dims is None else "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"


# -- shape arithmetic inside branches -------------------------------------------------------------------------

FOLDABLE_IN_BRANCH = frozenset({
    "Constant", "Shape", "Size", "ConstantOfShape", "Concat", "Reshape", "Slice", "Transpose", "Cast", "Gather", "Unsqueeze",
    "Squeeze", "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Range", "Equal", "Not", "Greater", "Less", "Min", "Max",
    "ReduceProd", "ReduceSum", "Identity", "Tile", "Expand", "Where", "Floor", "Ceil", "Sqrt"})
MAX_FOLD_ELEMENTS = 4096   # shape vectors, pads, axes: never weights


def fold_branch_shape_arithmetic(graph: gs.Graph, facts: ShapeFacts, opset: int) -> int:
    """Small integer values inside If/Loop branches that depend only on constants and static dims
    (pads of an STFT's reflect Pad, Reshape targets, axes) become constants, so that shape inference
    sees through them. fold-constants does this for the main graph; branches are left to here."""
    folded = 0
    todo = [b for n in graph.nodes for b in _branches(n)]
    while todo:
        body = todo.pop(0)
        for node in list(body.nodes):
            todo.extend(_branches(node))
            value = _branch_value(node, facts, opset)
            if value is None:
                continue
            out = node.outputs[0]
            node.inputs.clear()
            node.outputs.clear()
            out.to_constant(value)
            body.nodes.remove(node)
            folded += 1
    return folded


def _branch_value(node: gs.Node, facts: ShapeFacts, opset: int) -> Optional[np.ndarray]:
    if node.op not in FOLDABLE_IN_BRANCH or len(node.outputs) != 1 or \
            (getattr(node, "domain", None) or "") not in ("", "ai.onnx") or not node.outputs[0].outputs:
        return None
    if node.op == "Constant":
        value = node.attrs.get("value")
        value = np.asarray(value.values) if isinstance(value, gs.Constant) else None
        if value is None and ("value_int" in node.attrs or "value_ints" in node.attrs):
            value = np.asarray(node.attrs.get("value_int", node.attrs.get("value_ints")), dtype=np.int64)
        return value if value is not None and _small_integer(value) else None
    if node.op in ("Shape", "Size"):
        value = static_value(node.outputs[0], facts)
        return None if _known(value) is None else np.asarray(value.tolist(), dtype=np.int64)
    feeds = {}
    for t in node.inputs:
        if t.is_empty():
            continue
        if not isinstance(t, gs.Constant) or np.asarray(t.values).size > MAX_FOLD_ELEMENTS:
            return None
        feeds[t.name] = np.asarray(t.values)
    if not feeds:
        return None
    try:
        from onnx.reference import ReferenceEvaluator
        from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
        proto = OnnxExporter.export_node(node)
        inputs = [onnx.helper.make_tensor_value_info(k, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                  for k, v in feeds.items()]
        g = onnx.helper.make_graph([proto], "value", inputs, [onnx.helper.make_empty_tensor_value_info(proto.output[0])])
        model = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", opset)])
        value = np.asarray(ReferenceEvaluator(model).run(None, feeds)[0])
    except Exception:   # an op or type the reference evaluator lacks: the value stays computed
        return None
    return value if _small_integer(value) else None


def _small_integer(value: np.ndarray) -> bool:
    return value.size <= MAX_FOLD_ELEMENTS and (np.issubdtype(value.dtype, np.integer) or value.dtype == bool)


# -- rewrites -----------------------------------------------------------------------------------------------

def inline_branch(graph: gs.Graph, node: gs.Node, value: bool, names: NameMaker) -> int:
    """Put the taken branch's nodes where the If was; its outputs are written to the If's outputs."""
    body: gs.Graph = node.attrs["then_branch" if value else "else_branch"]
    position = graph.nodes.index(node)
    outs = list(node.outputs)
    produced = {id(t) for n in body.nodes for t in n.outputs}
    rename: Dict[int, gs.Tensor] = {}
    extra: List[gs.Node] = []
    for branch_out, if_out in zip(body.outputs, outs):
        if id(branch_out) in produced and id(branch_out) not in rename:
            rename[id(branch_out)] = if_out
        else:   # an outer value, a constant, or one value returned twice
            extra.append((branch_out, if_out))
    node.inputs.clear()
    node.outputs.clear()
    moved = list(body.nodes)
    for n in moved:
        for i, t in enumerate(n.outputs):
            if id(t) in rename:
                n.outputs[i] = rename[id(t)]
    _replace_reads(moved, rename)
    taken = {n.name for n in graph.nodes if n is not node and n.name}
    for n in moved:                  # node names stay unique in the graph they move into
        if n.name in taken:
            n.name = names(n.name)
        taken.add(n.name)
    identities = [gs.Node("Identity", names("Identity"), inputs=[rename.get(id(src), src)], outputs=[dst])
                  for src, dst in extra]
    body.nodes = []
    graph.nodes[position:position + 1] = moved + identities
    return len(moved)


def _replace_reads(nodes: Sequence[gs.Node], rename: Dict[int, gs.Tensor]) -> None:
    """Inputs (nested subgraphs' outer reads and outputs too) that name a renamed tensor."""
    todo = list(nodes)
    while todo:
        n = todo.pop()
        for i, t in enumerate(n.inputs):
            if id(t) in rename:
                n.inputs[i] = rename[id(t)]
        for sub in (v for v in n.attrs.values() if isinstance(v, gs.Graph)):
            sub.outputs = [rename.get(id(t), t) for t in sub.outputs]
            todo.extend(sub.nodes)


def pad_outputs(graph: gs.Graph, node: gs.Node, facts: ShapeFacts, names: NameMaker) -> None:
    """Each differing output: the smaller branch pads to the larger static dims; after the If,
    Slice(padded, 0, Where(cond, then dims, else dims)) on the differing axes gives the If's original
    output. The true sizes are constants chosen by the condition outside the If: a shape tensor
    returned through the conditional broke TensorRT-RTX's shape analysis (measured: "shape tensor
    must have non-negative rank")."""
    then_b, else_b = node.attrs["then_branch"], node.attrs["else_branch"]
    cond = node.inputs[0]
    after: List[gs.Node] = []
    for k in range(len(node.outputs)):
        t_dims, e_dims = facts.dims(then_b.outputs[k]), facts.dims(else_b.outputs[k])
        if compare_dims(t_dims, e_dims) != "pad":
            continue
        axes = [i for i, (x, y) in enumerate(zip(t_dims, e_dims))
                if isinstance(x, int) and isinstance(y, int) and x != y]
        target = [max(t_dims[i], e_dims[i]) if i in axes else None for i in range(len(t_dims))]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(facts.elem_type(then_b.outputs[k]) or
                                                     facts.elem_type(node.outputs[k]) or onnx.TensorProto.FLOAT)
        for body, dims in ((then_b, t_dims), (else_b, e_dims)):
            pads = [0] * len(dims) + [0 if want is None else want - have for want, have in zip(target, dims)]
            if any(pads):   # the larger branch keeps its output as it is
                padded = gs.Variable(names("padded"), dtype=dtype, shape=[w if w is not None else h
                                                                          for w, h in zip(target, dims)])
                body.nodes.append(gs.Node("Pad", names("Pad"), inputs=[
                    body.outputs[k], gs.Constant(names("pads"), np.array(pads, np.int64)),
                    gs.Constant(names("zero"), np.zeros((), dtype))], outputs=[padded], attrs={"mode": "constant"}))
                body.outputs[k] = padded
        original = node.outputs[k]
        padded_out = gs.Variable(names("padded"), dtype=dtype,
                                 shape=[w if w is not None else d for w, d in zip(target, t_dims)])
        node.outputs[k] = padded_out
        ends = gs.Variable(names("ends"), dtype=np.int64, shape=[len(axes)])
        after.append(gs.Node("Where", names("Where"), inputs=[
            cond, gs.Constant(names("then_dims"), np.array([t_dims[i] for i in axes], np.int64)),
            gs.Constant(names("else_dims"), np.array([e_dims[i] for i in axes], np.int64))], outputs=[ends]))
        after.append(gs.Node("Slice", names("Slice"), inputs=[
            padded_out, gs.Constant(names("starts"), np.zeros(len(axes), np.int64)), ends,
            gs.Constant(names("axes"), np.array(axes, np.int64))], outputs=[original]))
    position = graph.nodes.index(node)
    graph.nodes[position + 1:position + 1] = after


# -- walking ------------------------------------------------------------------------------------------------

def _ifs(graph: gs.Graph) -> Iterator[Tuple[gs.Graph, gs.Node]]:
    """(owning graph, If node) for every If of the main graph and of If branches, outer ones first.
    Loop/Scan bodies are left alone: shapes inferred there for loop-carried values may change from
    one iteration to the next."""
    todo = [graph]
    while todo:
        g = todo.pop(0)
        for node in list(g.nodes):
            if _is_if(node):
                yield g, node
            todo.extend(_branches(node))


def _is_if(node: gs.Node) -> bool:
    return node.op == "If" and (getattr(node, "domain", None) or "") in ("", "ai.onnx")


def _branches(node: gs.Node) -> List[gs.Graph]:
    return [node.attrs[k] for k in ("then_branch", "else_branch")
            if _is_if(node) and isinstance(node.attrs.get(k), gs.Graph)]


def _still_in(graph: gs.Graph, node: gs.Node) -> bool:
    return any(n is node for n in graph.nodes)


def _opset(graph: gs.Graph) -> int:
    return int(graph.opset or 0)


def if_shape_problems(model: onnx.ModelProto, target=None) -> Dict[str, Tuple[bool, str, str]]:
    """For `graphfix check`: each If that TensorRT cannot import as it is (its branches return different
    shapes under a computed condition), keyed by its first output: (whether unify-if removes the
    problem for `target`, a one-line detail, the kind: 'rank', 'data' or 'pad'). Decided by running
    the pass on a copy, so check and fix agree."""
    from graphfix.graph_utils import to_graph
    from graphfix.pass_api import PassContext
    before = _problems(to_graph(model))
    if not before:
        return {}
    copy = to_graph(model)
    try:
        UnifyIf(PassContext(target=target) if target is not None else None).run(copy)
        after = _problems(copy)
    except Exception:   # the pass itself fails on this model: nothing it would fix
        after = before
    out: Dict[str, Tuple[bool, str, str]] = {}
    for key, (kind, rows) in before.items():
        shapes = "; ".join(f"'{name}': then {t} vs else {e}" for name, t, e in rows)
        if key in after:
            out[key] = (False, f"{shapes}; " + explain(after[key][0], after[key][1]).split(": ", 1)[-1], kind)
        else:
            out[key] = (True, shapes, kind)
    return out


def _problems(graph: gs.Graph) -> Dict[str, Tuple[str, list]]:
    facts = ShapeFacts.of(graph)
    return {node.outputs[0].name: found for _, node in _ifs(graph) if node.outputs
            for found in [mismatch(node, facts)] if found is not None}
