"""If nodes whose condition is known before run time: deciding the condition, inlining the taken branch.

One implementation for `--freeze`/`--static-shapes` (graphfix.freeze: the conditions the frozen
values decide) and the unify-if pass (the conditions static shapes decide), on graphsurgeon graphs,
at any depth (If branches, nested Ifs). A condition is decided from constants and the dims that ONNX
shape inference gives (``ShapeFacts``): `static_value` follows shape arithmetic where only some dims
are known (a Gather of the one static dim of a Shape) and computes other small values exactly with
ONNX's reference evaluator (floats too: a frozen gain compared with 0.25).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .graph_utils import NameMaker, gs_graphs, graph_protos
from .onnx_values import DEFAULT_DOMAINS, NONDETERMINISTIC_OPS, constant_attr_value

MAX_DEPTH = 32           # producers followed back from a condition
MAX_VALUE_ELEMENTS = 4096   # values computed to decide a condition: shapes, flags, small tables; never weights
Dim = Union[int, str, None]   # static size, symbol, unknown

_COMPARE = {"Equal": np.equal, "Greater": np.greater, "Less": np.less, "GreaterOrEqual": np.greater_equal,
            "LessOrEqual": np.less_equal, "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor,
            "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum, "Min": np.minimum}


# -- facts ----------------------------------------------------------------------------------------------

class ShapeFacts:
    """Dims (int, symbol or None) and element types by tensor name, from ONNX shape inference over the
    whole model, subgraphs included, merged with graphsurgeon's own annotations; the default-domain
    opset (for values computed exactly)."""

    def __init__(self, dims: Dict[str, Optional[List[Dim]]], types: Dict[str, int], opset: int = 17):
        self._dims = dims
        self.types = types
        self.opset = opset

    @classmethod
    def of(cls, graph: gs.Graph) -> "ShapeFacts":
        from .weights import weightless_graph
        try:
            with weightless_graph(graph, subgraphs=True):   # inference reads dims and types, not weights
                model = gs.export_onnx(graph, do_type_check=False)
            model = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
        except Exception:   # a graph inference rejects: the annotations alone
            return cls({}, {}, int(graph.opset or 17))
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
        opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 17)
        return cls(dims, types, int(opset))

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
    """The value of a small tensor as far as constants and static dims give it: an object array whose
    unknown entries are None (a partly static Shape), or None when even its length is unknown."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(tensor, gs.Constant):   # a weight is no configuration: not converted, not followed
        return None if _elements(tensor.shape) > MAX_VALUE_ELEMENTS else np.asarray(tensor.values).astype(object)
    if not tensor.inputs:
        return None                       # a graph (or branch) input: run-time
    node = tensor.inputs[0]
    if node.op == "Constant":
        value = constant_attr_value(node.attrs)
        return None if value is None or value.size > MAX_VALUE_ELEMENTS else value.astype(object)
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
    ins = [static_value(t, facts, depth + 1) if not t.is_empty() else None for t in node.inputs[1:]]
    if node.op == "Cast" and int(node.attrs.get("to", 0)) == onnx.TensorProto.BOOL and _integral(_known(first)):
        return _obj(first.astype(bool))
    if node.op == "Identity" or (node.op == "Cast" and _integral(first)):
        return first                      # a Cast between integer types, of a shape
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
    if node.op in _COMPARE and len(ins) == 1 and _integral(_known(first)) and _integral(_known(ins[0])):
        return _obj(_COMPARE[node.op](first.astype(np.int64), ins[0].astype(np.int64)))
    return _computed(node, tensor, [first] + ins, facts)


def _computed(node: gs.Node, tensor: gs.Tensor, values: List[Optional[np.ndarray]],
              facts: ShapeFacts) -> Optional[np.ndarray]:
    """`tensor` computed exactly from the known values of all its producer's inputs, in their types."""
    if node.op in NONDETERMINISTIC_OPS or (getattr(node, "domain", None) or "") not in DEFAULT_DOMAINS \
            or any(isinstance(v, gs.Graph) for v in node.attrs.values()):
        return None
    feeds = {}
    for t, value in zip(node.inputs, values):
        if t.is_empty():
            continue
        if _known(value) is None or value.size > MAX_VALUE_ELEMENTS:
            return None
        typed = _typed(t, value, facts)
        if typed is None:
            return None
        feeds[t.name] = typed
    outs = evaluate_node(node, feeds, facts.opset)
    index = next((k for k, t in enumerate(node.outputs) if t is tensor), None)
    if outs is None or index is None or index >= len(outs) or np.asarray(outs[index]).size > MAX_VALUE_ELEMENTS:
        return None
    return np.asarray(outs[index]).astype(object)


def _typed(tensor: gs.Tensor, value: np.ndarray, facts: ShapeFacts) -> Optional[np.ndarray]:
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    elem = facts.elem_type(tensor)
    if not elem:
        return None
    try:
        return np.asarray(value.tolist(), dtype=onnx.helper.tensor_dtype_to_np_dtype(elem)).reshape(value.shape)
    except (TypeError, ValueError, KeyError):
        return None


def evaluate_node(node: gs.Node, feeds: Dict[str, np.ndarray], opset: int) -> Optional[List[np.ndarray]]:
    """One node's outputs from the given input values, by ONNX's reference evaluator; None when it
    lacks the op or type."""
    try:
        from onnx.reference import ReferenceEvaluator
        from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
        proto = OnnxExporter.export_node(node)
        inputs = [onnx.helper.make_tensor_value_info(k, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                  for k, v in feeds.items()]
        outputs = [onnx.helper.make_empty_tensor_value_info(o) for o in proto.output if o]
        g = onnx.helper.make_graph([proto], "value", inputs, outputs)
        model = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", opset)])
        return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, feeds)]
    except Exception:   # an op or type the reference evaluator lacks: the value stays computed
        return None


def _elements(shape) -> int:
    return int(np.prod(shape)) if shape is not None else 0


def _obj(value) -> np.ndarray:
    return np.asarray(value, dtype=object)


def _known(value: Optional[np.ndarray]) -> Optional[np.ndarray]:
    return None if value is None or any(v is None for v in value.flat) else value


def _integral(value: Optional[np.ndarray]) -> bool:
    """Known entries that are all integers or bools (shape arithmetic): int64 computes them exactly."""
    return value is not None and all(v is None or isinstance(v, (int, np.integer, np.bool_)) for v in value.flat)


# -- inlining -----------------------------------------------------------------------------------------------

@dataclass
class Inlined:
    """One If replaced by its taken branch."""
    target: str         # the If's name, else its first output
    condition: str      # the condition tensor's name
    branch: str         # "then_branch" or "else_branch"
    nodes: int          # nodes moved out of the branch
    scope: str          # where the If was: "" for the main graph, else "outer If/then_branch/..."


def inline_decided(graph: gs.Graph, facts: ShapeFacts, names: NameMaker) -> List[Inlined]:
    """One round: every If (main graph and If branches, outer ones first) whose condition `decide`
    fixes is replaced by its taken branch. An If inside a branch inlined in this round waits for the
    next round (new facts)."""
    decided = [(g, n, scope, v) for g, n, scope in _walk(graph) for v in [decide(n, facts)] if v is not None]
    done: List[Inlined] = []
    dropped = set()   # the untaken branches, with all their subgraphs
    for g, node, scope, value in decided:
        if id(g) in dropped or not any(n is node for n in g.nodes) or len(branches(node)) != 2:
            continue     # dropped, or moved just now (next round), or an If without its two branches
        target, condition = _label(node), node.inputs[0].name
        untaken = node.attrs["else_branch" if value else "then_branch"]
        dropped.update(id(b) for b in gs_graphs(untaken))
        count = inline_branch(g, node, value, names, root=graph)
        done.append(Inlined(target, condition, "then_branch" if value else "else_branch", count, scope))
    return done


def inline_branch(graph: gs.Graph, node: gs.Node, value: bool, names: NameMaker,
                  root: Optional[gs.Graph] = None) -> int:
    """Put the taken branch's nodes where the If was; its outputs are written to the If's outputs.
    Node names stay unique in `graph`; a value of the branch whose name another value of the model
    (`root`, all scopes) also has is renamed (ONNX names are unique across scopes)."""
    body: gs.Graph = node.attrs["then_branch" if value else "else_branch"]
    position = graph.nodes.index(node)
    outs = list(node.outputs)
    produced = {id(t) for n in body.nodes for t in n.outputs}
    rename: Dict[int, gs.Tensor] = {}
    extra: List[Tuple[gs.Tensor, gs.Tensor]] = []
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
    taken = {n.name for n in graph.nodes if n is not node}
    for n in moved:                  # node names stay unique in the graph they move into ("" counts)
        if n.name in taken:
            n.name = names(n.name or n.op)
        taken.add(n.name)
    identities = [gs.Node("Identity", names("Identity"), inputs=[rename.get(id(src), src)], outputs=[dst])
                  for src, dst in extra]
    body.nodes = []
    graph.nodes[position:position + 1] = moved + identities
    _rename_clashes(moved + identities, root or graph, names)
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


def _rename_clashes(moved: Sequence[gs.Node], root: gs.Graph, names: NameMaker) -> None:
    """The moved nodes' values that share their name with another value of the model: a branch's
    own values may repeat a name of a sibling branch (exporters reuse a branch graph for two Ifs),
    which the enclosing scope must not (graphsurgeon would export one of the two)."""
    objects: Dict[str, set] = {}
    for g in gs_graphs(root):
        for t in list(g.inputs) + list(g.outputs) + [t for n in g.nodes for t in list(n.inputs) + list(n.outputs)]:
            if not t.is_empty():
                objects.setdefault(t.name, set()).add(id(t))
    names.taken |= set(objects)
    io = {id(t) for t in list(root.inputs) + list(root.outputs)}
    values = {id(t): t for n in moved for t in list(n.inputs) + list(n.outputs)}
    for t in values.values():
        if not t.is_empty() and id(t) not in io and len(objects.get(t.name, ())) > 1:
            objects[t.name].discard(id(t))
            t.name = names(t.name)


# -- walking ------------------------------------------------------------------------------------------------

def ifs(graph: gs.Graph) -> Iterator[Tuple[gs.Graph, gs.Node]]:
    """(owning graph, If node) for every If of the main graph and of If branches, outer ones first.
    Loop/Scan bodies are left alone: shapes inferred there for loop-carried values may change from
    one iteration to the next."""
    for g, node, _ in _walk(graph):
        yield g, node


def _walk(graph: gs.Graph) -> Iterator[Tuple[gs.Graph, gs.Node, str]]:
    todo = [(graph, "")]
    while todo:
        g, scope = todo.pop(0)
        for node in list(g.nodes):
            if is_if(node):
                yield g, node, scope
                where = f"{scope}/{_label(node)}" if scope else _label(node)
                todo.extend((b, f"{where}/{k}") for k, b in _named_branches(node))


def _label(node: gs.Node) -> str:
    return node.name or (node.outputs[0].name if node.outputs else node.op)


def is_if(node: gs.Node) -> bool:
    return node.op == "If" and (getattr(node, "domain", None) or "") in DEFAULT_DOMAINS


def branches(node: gs.Node) -> List[gs.Graph]:
    return [b for _, b in _named_branches(node)]


def _named_branches(node: gs.Node) -> List[Tuple[str, gs.Graph]]:
    return [(k, node.attrs[k]) for k in ("then_branch", "else_branch")
            if is_if(node) and isinstance(node.attrs.get(k), gs.Graph)]
