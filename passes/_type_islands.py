"""Type-variable islands: groups of tensors that ONNX op schemas force to share one element type.

A schema binds inputs and outputs to type variables (Add: A, B and C are all "T"; Slice: starts,
ends, axes and steps are "Tind"). Tensors bound to one variable of one node must have the same
type, so retyping one of them means retyping all of them: the connected groups ("islands") are the
unit a retyping pass works on. Inputs whose schema type is fixed (Reshape's shape is always
tensor(int64)) or that belong to ops without a schema (custom domains, If/Loop/Scan) are
boundaries: there the old type is kept, with a Cast or a constant copy in between.

Everything here is read from ``onnx.defs`` for the graph's opset; nothing is hand-listed.
Used by the int64-to-int32 and cast-bool passes.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Container, Dict, FrozenSet, Iterator, List, Optional, Tuple

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto

from graphfix.graph_utils import NameMaker
from graphfix.onnx_values import constant_attr_value
from graphfix.pass_api import PassResult

DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class SlotType:
    """What a schema says about one input or output position."""
    var: Optional[str]          # the type variable ("T"), None for a fixed type ("tensor(int64)")
    allowed: FrozenSet[int]     # element types the position accepts
    homogeneous: bool = True    # False for heterogeneous variadics (Loop's v_initial)


def elem_of_type_str(type_str: str) -> Optional[int]:
    """'tensor(int64)' -> TensorProto.INT64; sequences, optionals and maps -> None."""
    if not (type_str.startswith("tensor(") and type_str.endswith(")")):
        return None
    try:
        return TensorProto.DataType.Value(type_str[len("tensor("):-1].upper())
    except ValueError:
        return None


def type_name(elem: int) -> str:
    return TensorProto.DataType.Name(elem)


def np_dtype(elem: int):
    return onnx.helper.tensor_dtype_to_np_dtype(elem)


def elem_of_dtype(dtype) -> Optional[int]:
    """ONNX element type of a graphsurgeon dtype (a NumPy dtype, or an ONNX enum for bfloat16 & co)."""
    if dtype is None:
        return None
    if isinstance(dtype, (int, np.integer)) and not isinstance(dtype, bool):
        return int(dtype)
    try:
        return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    except (TypeError, KeyError, ValueError):
        return None


@functools.lru_cache(maxsize=None)
def _schema_slots(op: str, domain: str, opset: int):
    """(inputs, outputs): tuples of (SlotType, is_variadic) per formal parameter; None if no schema."""
    try:
        schema = onnx.defs.get_schema(op, opset, domain)
    except onnx.defs.SchemaError:
        return None
    constraints = {c.type_param_str: frozenset(e for e in map(elem_of_type_str, c.allowed_type_strs)
                                               if e is not None)
                   for c in schema.type_constraints}
    variadic = onnx.defs.OpSchema.FormalParameterOption.Variadic

    def convert(params):
        out = []
        for p in params:
            if p.type_str in constraints:
                slot = SlotType(p.type_str, constraints[p.type_str], bool(p.is_homogeneous))
            else:
                fixed = elem_of_type_str(p.type_str)
                slot = SlotType(None, frozenset([fixed]) if fixed is not None else frozenset())
            out.append((slot, p.option == variadic))
        return tuple(out)
    return convert(schema.inputs), convert(schema.outputs)


def _slot_at(formals, index: int) -> Optional[SlotType]:
    if index < len(formals):
        return formals[index][0]
    if formals and formals[-1][1]:  # the tail of a variadic parameter
        return formals[-1][0]
    return None


def has_subgraph(node: gs.Node) -> bool:
    for value in node.attrs.values():
        if isinstance(value, gs.Graph) or (isinstance(value, (list, tuple)) and value
                                           and isinstance(value[0], gs.Graph)):
            return True
    return False


def node_slots(node: gs.Node, opset: int) -> Optional[Tuple[List[Optional[SlotType]], List[Optional[SlotType]]]]:
    """Slot types of a node's actual inputs and outputs, or None when the node has no usable schema.

    Nodes of other domains, and nodes holding subgraphs (whose bodies would have to change too),
    count as schema-less: every position of theirs is a boundary.
    """
    if (node.domain or "") not in DEFAULT_DOMAINS or has_subgraph(node):
        return None
    formals = _schema_slots(node.op, "", int(opset))
    if formals is None:
        return None
    ins, outs = formals
    return ([_slot_at(ins, i) for i in range(len(node.inputs))],
            [_slot_at(outs, i) for i in range(len(node.outputs))])


def constant_node_value(node: gs.Node) -> Optional[np.ndarray]:
    """Value of a Constant node (``value``, ``value_int(s)``, ``value_float(s)``), else None."""
    return constant_attr_value(node.attrs)


def _attr_output_type(node: gs.Node) -> Optional[int]:
    """Element type an op's attributes give its output (Cast's ``to``, ConstantOfShape's value)."""
    if node.op == "Constant":
        value = constant_node_value(node)
        return None if value is None else elem_of_dtype(value.dtype)
    if node.op == "ConstantOfShape":
        value = node.attrs.get("value")
        return elem_of_dtype(value.dtype) if isinstance(value, gs.Constant) else TensorProto.FLOAT
    for key in ("to", "dtype"):
        if isinstance(node.attrs.get(key), (int, np.integer)):
            return int(node.attrs[key])
    return None


def infer_elem_types(graph: gs.Graph) -> Dict[str, int]:
    """Element type of every tensor whose type is declared or follows from the schemas.

    Declared types (graph I/O, value_info, constants) come first; then each node's outputs get the
    type its schema fixes, the type of an input bound to the same type variable, or the type its
    attributes name. A node is looked at again only when one of its inputs got a type (a worklist,
    linear in the graph's size), so node order does not matter.
    """
    types: Dict[str, int] = {}
    for name, tensor in graph.tensors().items():
        elem = elem_of_dtype(tensor.dtype)
        if elem is not None and elem != TensorProto.UNDEFINED:
            types[name] = elem
    opset = int(graph.opset)
    nodes = list(graph.nodes)
    readers: Dict[str, List[int]] = {}
    for i, node in enumerate(nodes):
        for inp in node.inputs:
            if not inp.is_empty():
                readers.setdefault(inp.name, []).append(i)
    slots_of: Dict[int, object] = {}
    todo = list(range(len(nodes) - 1, -1, -1))      # popped in graph order first
    while todo:
        i = todo.pop()
        node = nodes[i]
        if i not in slots_of:
            slots_of[i] = node_slots(node, opset)
        for j, out in enumerate(node.outputs):
            if out.is_empty() or out.name in types:
                continue
            elem = _output_type(node, j, slots_of[i], types)
            if elem is not None:
                types[out.name] = elem
                todo.extend(readers.get(out.name, ()))
    return types


def _output_type(node, j, slots, types) -> Optional[int]:
    if node.op in ("Constant", "ConstantOfShape", "Cast"):
        return _attr_output_type(node)
    if slots is None:
        return None
    slot = slots[1][j]
    if slot is None:
        return None
    if slot.var is None or len(slot.allowed) == 1:
        return next(iter(slot.allowed)) if len(slot.allowed) == 1 else None
    for i, inp in enumerate(node.inputs):
        if not inp.is_empty() and slots[0][i] is not None and slots[0][i].var == slot.var \
                and inp.name in types:
            return types[inp.name]
    return _attr_output_type(node)


@dataclass
class Use:
    """One place a tensor is read."""
    node: gs.Node
    slot: int
    bound: bool          # the position shares a type variable with the tensor's island
    nested: bool = False  # a node inside an If/Loop/Scan body reading from the outer scope


@dataclass
class Island:
    tensors: List[str]                     # sorted tensor names
    bound: bool                            # joined through at least one type variable

    @property
    def anchor(self) -> str:
        return self.tensors[0]


class _UnionFind:
    def __init__(self):
        self.parent: Dict[object, object] = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb, key=repr)] = min(ra, rb, key=repr)


BindPredicate = Callable[[int, gs.Node, SlotType], bool]   # (node index, node, slot type)


class TypeVarAnalysis:
    """Who reads and writes each tensor, and which tensors a retyping must move together.

    ``binds(node_index, node, slot_type)`` decides which type variables join tensors: a variable
    binds when the retyping may pass through it (its allowed types include both the old and the new
    type, and the pass wants the node involved). Everything else is a boundary.
    """

    def __init__(self, graph: gs.Graph, binds: BindPredicate):
        self.graph = graph
        self.nodes: List[gs.Node] = list(graph.nodes)   # as analysed; rewrites insert nodes later
        self.opset = int(graph.opset)
        self.tensors: Dict[str, gs.Tensor] = dict(graph.tensors())
        self.uses: Dict[str, List[Use]] = {}
        self.producer: Dict[str, Tuple[int, int]] = {}   # tensor -> (node index, output position)
        self._bound_out: Dict[Tuple[int, int], str] = {}  # (node index, position) -> type variable
        self._bound_in_vars: Dict[int, set] = {}          # node index -> variables bound by inputs
        self._uf = _UnionFind()
        for i, node in enumerate(self.nodes):
            self._add_node(i, node, binds)
        self.graph_inputs = {t.name for t in graph.inputs}
        self.graph_outputs = {t.name for t in graph.outputs}

    def _add_node(self, i: int, node: gs.Node, binds: BindPredicate) -> None:
        slots = node_slots(node, self.opset)
        for j, tensor in enumerate(node.inputs):
            if tensor.is_empty():
                continue
            slot = slots[0][j] if slots else None
            bound = self._binds(i, node, slot, binds)
            self.uses.setdefault(tensor.name, []).append(Use(node, j, bound))
            if bound:
                self._uf.union(("t", tensor.name), ("v", i, slot.var))
                self._bound_in_vars.setdefault(i, set()).add(slot.var)
        for j, tensor in enumerate(node.outputs):
            if tensor.is_empty():
                continue
            self.producer[tensor.name] = (i, j)
            slot = slots[1][j] if slots else None
            if self._binds(i, node, slot, binds):
                self._uf.union(("t", tensor.name), ("v", i, slot.var))
                self._bound_out[(i, j)] = slot.var
        if has_subgraph(node):
            for inner, k, tensor in _outer_reads(node, self.tensors):   # a dict: no copy per node
                self.uses.setdefault(tensor.name, []).append(Use(inner, k, False, nested=True))

    @staticmethod
    def _binds(i: int, node, slot: Optional[SlotType], binds: BindPredicate) -> bool:
        return slot is not None and slot.var is not None and slot.homogeneous and binds(i, node, slot)

    def driven(self, name: str) -> bool:
        """The tensor's producer computes it in whatever type its bound inputs have (Add, Concat)."""
        where = self.producer.get(name)
        if where is None or where not in self._bound_out:
            return False
        return self._bound_out[where] in self._bound_in_vars.get(where[0], set())

    def bound_output(self, name: str) -> bool:
        where = self.producer.get(name)
        return where is not None and where in self._bound_out

    def producer_node(self, name: str) -> Optional[gs.Node]:
        where = self.producer.get(name)
        return None if where is None else self.nodes[where[0]]

    def islands(self, names) -> List[Island]:
        """The islands holding `names`, each once, ordered by their first tensor name."""
        groups: Dict[object, List[str]] = {}
        for name in sorted(set(names)):
            groups.setdefault(self._uf.find(("t", name)), [])
        members: Dict[object, List[str]] = {root: [] for root in groups}
        bound: Dict[object, bool] = {root: False for root in groups}
        for key in list(self._uf.parent):
            root = self._uf.find(key)
            if root in members:
                if key[0] == "t":
                    members[root].append(key[1])
                else:
                    bound[root] = True
        return sorted((Island(sorted(members[root]), bound[root]) for root in groups),
                      key=lambda island: island.anchor)


def _outer_reads(node: gs.Node, outer_names: Container[str]) -> Iterator[Tuple[gs.Node, int, gs.Tensor]]:
    """(inner node, position, tensor) for every read of an outer-scope tensor inside node's bodies,
    nested bodies included (iteratively: nesting depth cannot exhaust the stack).

    (ONNX's checker refuses bodies that return an outer-scope tensor directly, so reads are all.)"""
    todo = [node]
    while todo:
        for value in todo.pop().attrs.values():
            graphs = value if isinstance(value, (list, tuple)) else [value]
            for sub in graphs:
                if not isinstance(sub, gs.Graph):
                    continue
                for inner in sub.nodes:
                    for k, tensor in enumerate(inner.inputs):
                        if not tensor.is_empty() and tensor.name in outer_names:
                            yield inner, k, tensor
                    if has_subgraph(inner):
                        todo.append(inner)


OLD, NEW = "old", "new"


@dataclass
class RetypeStats:
    tensors: int = 0                 # retyped in place (the rest got a Cast to the new type)
    casts: List[str] = field(default_factory=list)
    copies: List[str] = field(default_factory=list)
    retargeted: List[str] = field(default_factory=list)


class Retyper:
    """Moves islands from one element type (old) to another (new), keeping the old type at boundaries.

    Per tensor there may be two versions, old and new. The one its source produces ("native") is
    decided at the source: constants (initializers, Constant and ConstantOfShape nodes) are
    retyped in place, a node whose output type follows its bound inputs computes the new type
    anyway, a Cast may be retargeted (when ``retarget_cast``), graph inputs change only when
    ``io_new``; any other source keeps the old type and gets one Cast to the new one. Each read then
    takes the version it needs (bound reads: new; boundaries: old), and the missing version is made
    once per tensor: a constant copy for constants, else one Cast. Graph outputs keep their names.
    Call ``finish()`` after the last island: it places the new Casts in the node list.
    """

    def __init__(self, graph: gs.Graph, analysis: TypeVarAnalysis, namer: NameMaker, result: PassResult,
                 old: int, new: int, *, io_new: bool = False, retarget_cast: bool = False,
                 either_ok: Callable[[Use], bool] = lambda use: False):
        self.graph, self.analysis, self.namer, self.result = graph, analysis, namer, result
        self.old, self.new = old, new
        self.io_new, self.retarget_cast, self.either_ok = io_new, retarget_cast, either_ok
        self._originals: Dict[str, np.ndarray] = {}
        self._pending: List[Tuple[int, gs.Node]] = []   # (index of the source's producer, Cast)

    def retype(self, island: Island, convert: Callable[[str, np.ndarray], np.ndarray]) -> RetypeStats:
        stats = RetypeStats()
        tensors = [self.analysis.tensors[name] for name in island.tensors]
        natives = [self._retype_source(t, convert, stats) for t in tensors]
        stats.tensors = natives.count(NEW)
        for t, native in zip(tensors, natives):
            self._serve_reads(t, native, stats)
        return stats

    # -- sources ---------------------------------------------------------------------------------
    def _retype_source(self, t: gs.Tensor, convert, stats: RetypeStats) -> str:
        name = t.name
        if isinstance(t, gs.Constant):
            self._originals[name] = np.asarray(t.values)
            t.values = convert(name, self._originals[name])
            return NEW
        if name in self.analysis.graph_inputs:
            if self.io_new:
                t.dtype = np_dtype(self.new)
                return NEW
            return OLD
        node = self.analysis.producer_node(name)
        if node is None:
            return OLD
        if node.op == "Constant" and constant_node_value(node) is not None:
            self._originals[name] = constant_node_value(node)
            node.attrs.clear()
            node.attrs["value"] = gs.Constant(name, convert(name, self._originals[name]))
            t.dtype = np_dtype(self.new)
            return NEW
        if node.op == "ConstantOfShape" and isinstance(node.attrs.get("value"), gs.Constant):
            value = node.attrs["value"]
            node.attrs["value"] = gs.Constant(value.name, convert(name, np.asarray(value.values)))
            t.dtype = np_dtype(self.new)
            return NEW
        if self.analysis.driven(name):
            t.dtype = np_dtype(self.new)
            return NEW
        if node.op == "Cast" and self.retarget_cast and self.analysis.bound_output(name):
            node.attrs["to"] = int(self.new)
            t.dtype = np_dtype(self.new)
            stats.retargeted.append(node.name)
            self.result.change("retarget-cast", node.name, {"to": type_name(self.new)})
            return NEW
        return OLD

    # -- reads -----------------------------------------------------------------------------------
    def _serve_reads(self, t: gs.Tensor, native: str, stats: RetypeStats) -> None:
        versions: Dict[str, gs.Tensor] = {native: t}
        for use in self.analysis.uses.get(t.name, []):
            want = NEW if use.bound else (native if self.either_ok(use) else OLD)
            if want != native:
                use.node.inputs[use.slot] = self._version(t, want, versions, stats)
        if t.name in self.analysis.graph_outputs:
            want = NEW if self.io_new else OLD
            if want != native:
                other = self._version(t, want, versions, stats)
                # The graph output keeps its name: the version it needs takes it over.
                original = t.name
                t.name = self.namer(type_name(self.new if native == NEW else self.old).lower())
                other.name = original
                self.graph.outputs = [other if o is t else o for o in self.graph.outputs]

    def _version(self, t: gs.Tensor, want: str, versions: Dict[str, gs.Tensor], stats: RetypeStats) -> gs.Tensor:
        if want in versions:
            return versions[want]
        elem = self.new if want == NEW else self.old
        source = versions[OLD if want == NEW else NEW]
        if want == OLD and t.name in self._originals:
            made = gs.Constant(self.namer(type_name(elem).lower()), self._originals[t.name])
            stats.copies.append(made.name)
            self.result.change("copy-constant", made.name, {"of": t.name, "dtype": type_name(elem),
                                                            "why": "read where only this type is allowed"})
        else:
            made = self._insert_cast(source, elem)
            stats.casts.append(made.inputs[0].name)
        versions[want] = made
        return made

    def _insert_cast(self, source: gs.Tensor, elem: int) -> gs.Tensor:
        out = gs.Variable(self.namer(type_name(elem).lower()), dtype=np_dtype(elem), shape=source.shape)
        node = gs.Node("Cast", name=self.namer("cast"), attrs={"to": int(elem)}, inputs=[source], outputs=[out])
        # Placed right after the source's producer (graph inputs, constants: first) by finish().
        where = self.analysis.producer.get(source.name)
        self._pending.append((where[0] if where else -1, node))
        self.result.change("insert-cast", node.name, {"input": source.name, "to": type_name(elem)})
        return out

    def finish(self) -> None:
        """Put the inserted Casts into the node list, each right after its input's producer."""
        if not self._pending:
            return
        after: Dict[int, List[gs.Node]] = {}
        for index, node in self._pending:
            after.setdefault(index, []).append(node)
        nodes = list(after.get(-1, []))
        for index, node in enumerate(self.analysis.nodes):
            nodes.append(node)
            nodes.extend(after.get(index, []))
        self.graph.nodes = nodes
        self._pending = []
