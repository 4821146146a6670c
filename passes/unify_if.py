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

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphfix.graph_utils import NameMaker, toposort
from graphfix.if_inlining import Dim, ShapeFacts, branches, evaluate_node, ifs, inline_decided, static_value
from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.registry import register_pass
from graphfix.remedies import fixes_finding
from graphfix.target import TrtRange

MAX_ROUNDS = 16          # rounds of (shape inference -> decide -> inline); nested Ifs need one each
SAME_SHAPE_ERROR = "IIfConditionalOutputLayer inputs must have the same shape"
# Where outputs of one rank but different dims pass: the 11.x parser (TensorRT-RTX 1.7, measured: it
# parsed and built if_static_dims_differ as it is, and wants equal ranks only). 10.13 still refused
# [2] vs [1] (NVIDIA/TensorRT#4603).
SAME_RANK_ACCEPTED = TrtRange(since="11.0")

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
        if not any(True for _ in ifs(graph)):
            return result           # no shape inference for models without If
        names = NameMaker(graph, "unify-if")
        for _ in range(MAX_ROUNDS):
            facts = ShapeFacts.of(graph)
            folded = fold_branch_shape_arithmetic(graph, facts, _opset(graph) or 17)
            if folded:
                result.change("fold-in-branches", graph.name or "graph", {"tensors": folded})
                result.count("branch_values_folded", folded)
                facts = ShapeFacts.of(graph)
            inlined = inline_decided(graph, facts, names)
            if not inlined:
                break
            for done in inlined:
                result.change("inline-if", done.target, {
                    "branch": done.branch, "nodes": done.nodes,
                    "why": "the condition is a constant, or follows from static shapes"})
                result.count("ifs_inlined")
            if any(not done.scope for done in inlined):
                self._fold(graph, result)
        facts = ShapeFacts.of(graph)
        for g, node in list(ifs(graph)):
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
    todo = [b for n in graph.nodes for b in branches(n)]
    while todo:
        body = todo.pop(0)
        for node in list(body.nodes):
            todo.extend(branches(node))
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
        known = value is not None and not any(v is None for v in value.flat)
        return np.asarray(value.tolist(), dtype=np.int64) if known else None
    feeds = {}
    for t in node.inputs:
        if t.is_empty():
            continue
        if not isinstance(t, gs.Constant) or np.asarray(t.values).size > MAX_FOLD_ELEMENTS:
            return None
        feeds[t.name] = np.asarray(t.values)
    if not feeds:
        return None
    values = evaluate_node(node, feeds, opset)
    return values[0] if values is not None and _small_integer(values[0]) else None


def _small_integer(value: np.ndarray) -> bool:
    return value.size <= MAX_FOLD_ELEMENTS and (np.issubdtype(value.dtype, np.integer) or value.dtype == bool)


# -- rewrites -----------------------------------------------------------------------------------------------

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
    return {node.outputs[0].name: found for _, node in ifs(graph) if node.outputs
            for found in [mismatch(node, facts)] if found is not None}
