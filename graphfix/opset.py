"""Move a graph's default-domain opset up or down, converting every node whose form changed.

The opset is one number for the whole model, so a change is all or nothing: every node is planned
first (a rule either proposes its new form or says why it cannot be converted), and the graph is
touched only when every node can be converted. A rule's proposal is checked against the ONNX schema
of the target version (inputs, attributes, types), so a mistake is caught here and not by the user.

``raise_opset(graph, 17)`` is the public helper fuse-layernorm uses; the target-opset pass lowers
with its own rules through ``OpsetChange``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .graph_utils import NameMaker, known_dims, shape_of
from .onnx_values import DEFAULT_DOMAINS, constant_attr_value


# Versions at which an op kept its signature but changed its meaning: the generic check cannot see
# these, so crossing one needs a rule that knows (or the node is refused).
SEMANTIC_CHANGES = {
    ("Softmax", 13), ("LogSoftmax", 13), ("Hardmax", 13),      # axis: flatten-to-2D -> one axis
    ("RoiAlign", 16),                                          # default coordinate mode changed
    ("ScatterND", 18), ("ScatterElements", 18),                # reduction max/min added
    ("Pad", 19),                                               # mode 'wrap' added
    ("Resize", 19),                                            # 'half_pixel_symmetric' added
    ("GridSample", 20),                                        # modes renamed, N-D
    ("GroupNormalization", 21),                                # scale/bias per group -> per channel
    ("AveragePool", 22), ("MaxPool", 22), ("LpPool", 22),      # ceil_mode: last-window rule (below)
}

# Formal parameters a new op version renamed without changing their meaning (ONNX Changelog:
# BatchNormalization-14 renamed the inference statistics, Split-2 its variadic output): the name is
# documentation, not semantics. (op, "input"/"output", index, old name, new name). Every other name
# change moved a role (Resize-11's roi, Tile-6's repeats, Scan-9) and still refuses the raise.
RENAMED_ONLY = {
    ("BatchNormalization", "input", 3, "mean", "input_mean"),
    ("BatchNormalization", "input", 4, "var", "input_var"),
    ("Split", "output", 0, "outputs...", "outputs"),
}

# Opset 22's pooling drops, with ceil_mode=1, a last window that would start in the right padding
# (PyTorch's rule: onnx/defs/nn/defs.cc convPoolShapeInference); AveragePool-19, MaxPool-12 and
# LpPool-18 keep it (old.cc convPoolShapeInference_opset19), so the output can be one larger.
POOL_LAST_WINDOW = 22


class Unconvertible(Exception):
    """A node has no equivalent form at the requested opset; the message says why."""


# ----------------------------------------------------------------------------------------------
# Schemas
# ----------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def schema_at(op: str, version: int) -> Optional[onnx.defs.OpSchema]:
    """The default-domain schema of `op` in force at opset `version`, or None if there is none."""
    try:
        return onnx.defs.get_schema(op, version, "")
    except onnx.defs.SchemaError:
        return None


@functools.lru_cache(maxsize=None)
def op_versions(op: str) -> Tuple[int, ...]:
    return tuple(sorted({s.since_version for s in onnx.defs.get_all_schemas_with_history()
                         if s.name == op and s.domain in DEFAULT_DOMAINS}))


def crossed_versions(op: str, a: int, b: int) -> List[int]:
    """Versions of `op` introduced in (min(a, b), max(a, b)]."""
    lo, hi = min(a, b), max(a, b)
    return [v for v in op_versions(op) if lo < v <= hi]


def _default_of(sch: onnx.defs.OpSchema, name: str):
    attr = sch.attributes.get(name)
    if attr is None:
        return None
    proto = attr.default_value
    if proto is None or proto.type == onnx.AttributeProto.UNDEFINED:
        return None
    value = onnx.helper.get_attribute_value(proto)
    if isinstance(value, bytes):
        value = value.decode()
    return value


def same_value(a, b) -> bool:
    if isinstance(a, bytes):
        a = a.decode()
    if isinstance(b, bytes):
        b = b.decode()
    if isinstance(a, float) or isinstance(b, float):
        try:
            return bool(np.float32(a) == np.float32(b))
        except (TypeError, ValueError):
            return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b


def type_name(elem_type: int) -> str:
    """ONNX schema spelling of an element type: FLOAT16 -> 'float16'."""
    return onnx.TensorProto.DataType.Name(elem_type).lower()


# ----------------------------------------------------------------------------------------------
# Graph access
# ----------------------------------------------------------------------------------------------

def graph_opset(graph: gs.Graph) -> int:
    """The default-domain opset the graph will be exported with."""
    for entry in graph.import_domains or []:
        if entry.domain in DEFAULT_DOMAINS:
            return int(entry.version)
    return int(graph.opset)


def set_graph_opset(graph: gs.Graph, version: int) -> None:
    graph.opset = int(version)
    if graph.import_domains is not None:  # new entries: the old ones may belong to the input model
        # an entry already at the version is kept as it is (its bytes too: a pass that changes nothing
        # must leave the graph byte-identical)
        graph.import_domains = [onnx.helper.make_opsetid(e.domain, int(version))
                                if e.domain in DEFAULT_DOMAINS and e.version != int(version)
                                else e for e in graph.import_domains]


def walk(graph: gs.Graph) -> Iterator[Tuple[gs.Graph, gs.Node]]:
    """(owning graph, node) for every node, subgraph bodies (If/Loop/Scan) included, in order."""
    for node in list(graph.nodes):
        yield graph, node
        for value in node.attrs.values():
            subs = [value] if isinstance(value, gs.Graph) else \
                [v for v in value if isinstance(v, gs.Graph)] if isinstance(value, list) else []
            for sub in subs:
                yield from walk(sub)


def is_default_domain(node: gs.Node) -> bool:
    return (node.domain or "") in DEFAULT_DOMAINS


def present(tensor) -> bool:
    """An optional input that is actually given (graphsurgeon marks omitted ones with an empty name)."""
    return tensor is not None and bool(tensor.name)


def input_at(node: gs.Node, i: int):
    return node.inputs[i] if i < len(node.inputs) and present(node.inputs[i]) else None


def const_value(tensor) -> Optional[np.ndarray]:
    """Value of an initializer or of a Constant node's output (any of its value attributes)."""
    if tensor is None:
        return None
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) != 1 or tensor.inputs[0].op != "Constant":
        return None
    return constant_attr_value(tensor.inputs[0].attrs)


@dataclass
class TensorFact:
    elem_type: Optional[int] = None
    shape: Optional[List[Optional[int]]] = None   # None: rank unknown; None entries: dynamic dims


class Facts:
    """Element types and shapes of a graph's tensors, from ONNX shape inference (subgraphs too).

    Built once from an export of the graph; a tensor the inference could not type falls back to
    what graphsurgeon knows. Rules ask here instead of trusting value_info that may be missing.
    """

    def __init__(self, graph: gs.Graph):
        self.by_name: Dict[str, TensorFact] = {}
        from .weights import weightless_graph
        try:
            with weightless_graph(graph):   # inference reads types and dims, not weight bytes
                model = gs.export_onnx(graph, do_type_check=False)
            model = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False,
                                                      data_prop=True)
        except Exception:  # an unexportable or uninferable graph: fall back to graphsurgeon's view
            return
        self._collect(model.graph)

    def _collect(self, g: onnx.GraphProto) -> None:
        for init in g.initializer:
            self.by_name[init.name] = TensorFact(init.data_type, list(init.dims))
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
            if tt is None:
                continue
            shape = None
            if tt.HasField("shape"):
                shape = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            self.by_name.setdefault(vi.name, TensorFact(tt.elem_type or None, shape))
        for node in g.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    self._collect(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        self._collect(sub)

    def elem_type(self, tensor) -> Optional[int]:
        if isinstance(tensor, gs.Constant):
            try:
                return onnx.helper.np_dtype_to_tensor_dtype(np.asarray(tensor.values).dtype)
            except (TypeError, KeyError, ValueError):
                return None
        fact = self.by_name.get(tensor.name)
        if fact is not None and fact.elem_type:
            return fact.elem_type
        dtype = getattr(tensor, "dtype", None)
        if dtype is None:
            return None
        if isinstance(dtype, int):
            return dtype
        try:
            return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        except (TypeError, KeyError, ValueError):
            return None

    def shape(self, tensor) -> Optional[List[Optional[int]]]:
        if isinstance(tensor, gs.Constant):
            return list(np.asarray(tensor.values).shape)
        fact = self.by_name.get(tensor.name)
        if fact is not None and fact.shape is not None:
            return list(fact.shape)
        shape = getattr(tensor, "shape", None)
        if shape is None:
            return None
        return [d if isinstance(d, int) and d >= 0 else None for d in shape]

    def rank(self, tensor) -> Optional[int]:
        shape = self.shape(tensor)
        return None if shape is None else len(shape)


# ----------------------------------------------------------------------------------------------
# Planning and applying a change of opset
# ----------------------------------------------------------------------------------------------

@dataclass
class Step:
    """One node's planned conversion; `apply` mutates the graph and returns what it did."""
    graph: gs.Graph
    node: gs.Node
    op: str
    apply: Callable[[], str]


@dataclass
class Problem:
    node: str
    op: str
    reason: str

    def __str__(self) -> str:
        return f"node '{self.node}' ({self.op}): {self.reason}"


# rule(node, change) -> None (nothing to do beyond the opset number) or Step; raises Unconvertible
Rule = Callable[[gs.Node, "NodeChange"], Optional[Step]]


@dataclass
class OpsetChange:
    """A planned move of `graph`'s default-domain opset from its current value to `to_version`."""
    graph: gs.Graph
    to_version: int
    rules: Dict[str, Rule]
    names: NameMaker
    facts: Optional[Facts] = None
    deprecated_only: bool = False   # same opset; rewrite only nodes whose version is deprecated
    steps: List[Step] = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)
    unchanged: int = 0

    @property
    def from_version(self) -> int:
        return graph_opset(self.graph)

    def plan(self) -> "OpsetChange":
        self.steps, self.problems, self.unchanged = [], [], 0
        if self.from_version == self.to_version and not self.deprecated_only:
            return self
        if not self.deprecated_only:
            self.problems.extend(_function_problems(self.graph, self.to_version))
        for owner, node in walk(self.graph):
            if not is_default_domain(node):
                continue
            change = NodeChange(self, owner, node)
            try:
                step = change.plan()
            except Unconvertible as exc:
                self.problems.append(Problem(node.name or "?", node.op, str(exc)))
                continue
            if step is None:
                self.unchanged += 1
            else:
                self.steps.append(step)
        return self

    @property
    def ok(self) -> bool:
        return not self.problems

    def apply(self) -> List[Tuple[Step, str]]:
        """Apply every planned step and set the opset; only call when ``ok``."""
        assert self.ok, self.problems
        done = [(step, step.apply()) for step in self.steps]
        set_graph_opset(self.graph, self.to_version)
        return done

    def fact(self) -> Facts:
        if self.facts is None:
            self.facts = Facts(self.graph)
        return self.facts


def _function_problems(graph: gs.Graph, to_version: int) -> List[Problem]:
    """Model-local functions carry their own opset imports; they are not converted."""
    out = []
    for func in graph.functions or []:
        for entry in func.import_domains or []:
            if entry.domain in DEFAULT_DOMAINS and entry.version != to_version:
                out.append(Problem(func.name, "function", f"model-local function imports opset "
                                   f"{entry.version}; functions are not converted"))
    return out


class NodeChange:
    """What a rule needs to convert one node: schemas on both sides, facts, and builders."""

    def __init__(self, change: OpsetChange, owner: gs.Graph, node: gs.Node):
        self.change = change
        self.owner = owner
        self.node = node
        self.op = node.op
        self.to_version = change.to_version
        self.source = schema_at(node.op, change.from_version)
        self.target = schema_at(node.op, change.to_version)

    # -- planning ------------------------------------------------------------------------------
    def plan(self) -> Optional[Step]:
        if self.source is None:
            raise Unconvertible(f"{self.op} is not an operator of opset {self.change.from_version}")
        if self.change.deprecated_only:
            if not self.source.deprecated:
                return None
            if self.op not in self.change.rules:
                raise Unconvertible(f"{self.op}-{self.source.since_version} is deprecated and no rule rewrites it")
            self.target = None   # the rule must replace the node by current, non-deprecated ops
            return self.change.rules[self.op](self.node, self)
        if self.target is not None and self.target.since_version == self.source.since_version:
            return None          # same operator version on both sides: nothing changes
        rule = self.change.rules.get(self.op, generic_rule)
        return rule(self.node, self)

    @property
    def facts(self) -> Facts:
        return self.change.fact()

    def crosses(self, version: int) -> bool:
        """Whether the change passes the op's version `version` (either direction)."""
        src = self.source.since_version if self.source is not None else 0
        tgt = self.target.since_version if self.target is not None else 0
        return min(src, tgt) < version <= max(src, tgt)

    def require_target(self) -> onnx.defs.OpSchema:
        if self.target is None:
            first = op_versions(self.op)[0] if op_versions(self.op) else "?"
            raise Unconvertible(f"{self.op} does not exist before opset {first}")
        if self.target.deprecated:
            raise Unconvertible(f"{self.op} is deprecated at opset {self.to_version}")
        return self.target

    def reform(self, inputs: Sequence, attrs: Dict, how: str, handled: Sequence[int] = ()) -> Optional[Step]:
        """Plan giving the node `inputs` and `attrs`, checked against the target schema.

        None when they are the node's own (only the opset number changes). ``handled``: op versions
        whose change of meaning the calling rule has taken care of.
        """
        target = self.require_target()
        for version in crossed_versions(self.op, self.source.since_version, target.since_version):
            if (self.op, version) in SEMANTIC_CHANGES and version not in handled:
                raise Unconvertible(f"{self.op} changed meaning at opset {version}; no rule converts it")
        inputs, attrs = list(inputs), dict(attrs)
        dropped = []
        for name in sorted(attrs):
            if name in target.attributes:
                continue
            default = _default_of(self.source, name) if self.source is not None else None
            if default is not None and same_value(attrs[name], default):
                dropped.append(name)
                continue
            raise Unconvertible(f"attribute {name}={_short(attrs[name])} has no equivalent in "
                                f"{self.op}-{target.since_version}")
        for name in dropped:
            del attrs[name]
        for name, attr in sorted(target.attributes.items()):
            if attr.required and name not in attrs:
                raise Unconvertible(f"{self.op}-{target.since_version} requires attribute {name}")
        problem = self._signature_problem(target, inputs, list(self.node.outputs))
        if problem:
            raise Unconvertible(problem)
        if dropped:
            how = ", ".join(x for x in (how, "dropped default " + "/".join(dropped)) if x)
        node, new_inputs, new_attrs = self.node, inputs, attrs
        same_inputs = len(node.inputs) == len(inputs) and all(a is b for a, b in zip(node.inputs, inputs))
        same_attrs = set(node.attrs) == set(attrs) and all(node.attrs[k] is attrs[k] for k in attrs)
        if same_inputs and same_attrs:
            return None

        def apply() -> str:
            old_inputs = list(node.inputs)
            node.inputs.clear()
            node.inputs.extend(new_inputs)
            node.attrs.clear()
            node.attrs.update(new_attrs)
            for t in old_inputs:
                drop_orphan_constant(self.owner, t)
            return how
        return Step(self.owner, node, self.op, apply)

    def _signature_problem(self, target, inputs, outputs) -> Optional[str]:
        used = len(inputs)
        while used and not present(inputs[used - 1]):
            used -= 1
        if used > target.max_input:
            return f"{used} inputs, {self.op}-{target.since_version} takes at most {target.max_input}"
        if used < target.min_input:
            return f"{used} inputs, {self.op}-{target.since_version} needs {target.min_input}"
        if len(outputs) > target.max_output:
            return f"{len(outputs)} outputs, {self.op}-{target.since_version} has at most {target.max_output}"
        if self.source is not None:
            for kind, now, then in (("input", self.source.inputs, target.inputs),
                                    ("output", self.source.outputs, target.outputs)):
                count = used if kind == "input" else len(outputs)
                for i in range(min(count, len(now), len(then))):
                    renamed = (self.op, kind, i, now[i].name, then[i].name) in RENAMED_ONLY
                    if now[i].name != then[i].name and not renamed and not self._reformed(kind, i, inputs):
                        return (f"{kind} {i} is '{now[i].name}' in {self.op}-{self.source.since_version} "
                                f"but '{then[i].name}' in {self.op}-{target.since_version}")
        return type_problem(self.op, target, inputs[:used], outputs, self.facts)

    def _reformed(self, kind: str, i: int, inputs) -> bool:
        """A rule that rewired input i on purpose (e.g. attribute moved to an input) is trusted."""
        return kind == "input" and (i >= len(self.node.inputs) or self.node.inputs[i] is not inputs[i])

    # -- builders for rules that replace a node by several ------------------------------------
    def name(self, hint: str = "") -> str:
        return self.change.names(hint)

    def const(self, values, dtype=None, hint: str = "c") -> gs.Constant:
        return gs.Constant(self.name(hint), np.asarray(values, dtype=dtype))

    def var(self, hint: str = "t", dtype=None) -> gs.Variable:
        return gs.Variable(self.name(hint), dtype=dtype)

    def make(self, op: str, inputs: Sequence, outputs: Sequence, attrs: Optional[Dict] = None,
             hint: str = "", name: Optional[str] = None) -> gs.Node:
        return gs.Node(op=op, name=name or self.name(hint or op), attrs=dict(attrs or {}),
                       inputs=list(inputs), outputs=list(outputs))

    def dims(self, x) -> Optional[List[Optional[int]]]:
        """x's dims as fold-constants sees them: annotation and shape inference merged per dim."""
        return known_dims(x, self.facts.shape(x))

    def shape_of(self, x, dims=None) -> Tuple[gs.Tensor, List[gs.Node]]:
        """``Shape(x)[dims]`` and the nodes computing it: an initializer and no nodes when those
        dims are static (graph_utils.shape_of, with the facts' inferred shape)."""
        return shape_of(x, self.name, dims, known=self.facts.shape(x))

    def reduce(self, op: str, x, axes: Sequence[int], out, keepdims: int = 1) -> gs.Node:
        """A Reduce* node in the form of the target opset (axes attribute before 18, input after)."""
        axes_as_input = self.to_version >= (13 if op == "ReduceSum" else 18)
        if axes_as_input:
            return self.make(op, [x, self.const(list(axes), np.int64, "axes")], [out],
                             {"keepdims": keepdims})
        return self.make(op, [x], [out], {"axes": list(axes), "keepdims": keepdims})

    def replace(self, build: Callable[[List], List[gs.Node]], how: str) -> Step:
        """Plan replacing the node by the nodes `build(outputs)` returns, in the node's place.

        `build` gets the node's output tensors, which the new nodes must produce, so readers and
        graph outputs keep their tensors.
        """
        owner, node = self.owner, self.node

        def apply() -> str:
            index = next(i for i, n in enumerate(owner.nodes) if n is node)
            old_inputs, outputs = list(node.inputs), list(node.outputs)
            node.inputs.clear()
            node.outputs.clear()
            owner.nodes[index:index + 1] = build(outputs)
            for t in old_inputs:
                drop_orphan_constant(owner, t)
            return how
        return Step(owner, node, self.op, apply)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def type_problem(op: str, sch: onnx.defs.OpSchema, inputs: Sequence, outputs: Sequence,
                 facts: Facts) -> Optional[str]:
    """Why the tensors' element types do not fit `sch`'s type constraints, or None."""
    allowed = {tc.type_param_str: set(tc.allowed_type_strs) for tc in sch.type_constraints}
    for kind, formals, tensors in (("input", sch.inputs, inputs), ("output", sch.outputs, outputs)):
        for i, tensor in enumerate(tensors):
            if not present(tensor):
                continue
            if i < len(formals):
                formal = formals[i]
            elif formals and formals[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
                formal = formals[-1]
            else:
                continue
            elem = facts.elem_type(tensor)
            if not elem:
                continue
            spelled = f"tensor({type_name(elem)})"
            if spelled not in allowed.get(formal.type_str, {formal.type_str}):
                return (f"{kind} '{tensor.name}' is {type_name(elem)}, which "
                        f"{op}-{sch.since_version} does not accept")
    return None


def generic_rule(node: gs.Node, change: NodeChange) -> Optional[Step]:
    """Keep the node's inputs and attributes; drop attributes left at their default."""
    return change.reform(node.inputs, node.attrs, "")


def drop_orphan_constant(graph: gs.Graph, tensor) -> None:
    """Remove a Constant node whose output lost its last reader (e.g. a Reduce axes input)."""
    if not isinstance(tensor, gs.Variable) or tensor.outputs or len(tensor.inputs) != 1:
        return
    producer = tensor.inputs[0]
    if producer.op != "Constant" or any(t is tensor for t in graph.outputs):
        return
    index = next((i for i, n in enumerate(graph.nodes) if n is producer), None)
    if index is None:
        return
    producer.outputs.clear()
    del graph.nodes[index]


def pool_ceil_problem(change: "NodeChange", attrs: Dict) -> Optional[str]:
    """Why a pooling node crossing opset 22 with ceil_mode=1 would change its output size, or None.

    ``attrs``: the node's attributes in the target form. Both sizes come from ONNX's own shape
    inference of the node at each version, on the input's static shape; a dynamic spatial dim
    makes the size unknowable, which is a refusal too.
    """
    node, target = change.node, change.require_target()
    if not int(node.attrs.get("ceil_mode", 0)):
        return None
    rule = f"opset {POOL_LAST_WINDOW} drops a last window that starts in the right padding"
    x = node.inputs[0]
    shape = change.facts.shape(x)
    if shape is None or len(shape) < 3 or any(d is None for d in shape[2:]):
        return f"ceil_mode=1 on an input with dynamic spatial dims: the output size may change ({rule})"
    shape = [1, 1] + list(shape[2:])   # batch and channels do not affect the window count
    elem = change.facts.elem_type(x) or onnx.TensorProto.FLOAT
    versions = (change.source.since_version, target.since_version)
    sizes = [_inferred_output_shape(node.op, v, a, elem, shape) for v, a in zip(versions, (node.attrs, attrs))]
    if any(size is None for size in sizes):
        return f"ceil_mode=1: ONNX shape inference gives no output size to compare ({rule})"
    if sizes[0][2:] != sizes[1][2:]:
        return (f"ceil_mode=1: output spatial size {sizes[0][2:]} at {node.op}-{versions[0]} but "
                f"{sizes[1][2:]} at {node.op}-{versions[1]} ({rule})")
    return None


def _inferred_output_shape(op: str, version: int, attrs: Dict, elem: int,
                           shape: Sequence[int]) -> Optional[List[Optional[int]]]:
    """Output 0's shape by ONNX shape inference of a one-node model of `op` at opset `version`."""
    node = onnx.helper.make_node(op, ["x"], ["y"], **dict(attrs))
    graph = onnx.helper.make_graph([node], "probe", [onnx.helper.make_tensor_value_info("x", elem, list(shape))],
                                   [onnx.helper.make_empty_tensor_value_info("y")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", int(version))])
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception:  # an attribute set this version refuses: no size (the caller refuses)
        return None
    t = model.graph.output[0].type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


# ----------------------------------------------------------------------------------------------
# Raising (used by fuse-layernorm): every node must stay valid and keep its meaning
# ----------------------------------------------------------------------------------------------

def _attr_to_input(attr: str, position: int, dtype=np.int64, how: str = ""):
    """Raise rule for an attribute that became an input (Split split, Squeeze axes, ...)."""
    def rule(node: gs.Node, change: NodeChange) -> Optional[Step]:
        if not change.crosses(13):
            return generic_rule(node, change)
        attrs = dict(node.attrs)
        inputs = list(node.inputs)
        if attr in attrs:
            value = attrs.pop(attr)
            while len(inputs) < position:
                inputs.append(gs.Variable.empty())
            inputs.insert(position, change.const(np.asarray(value, dtype=dtype), hint=attr))
        return change.reform(inputs, attrs, how or f"{attr} attribute -> input", handled=(13,))
    return rule


def _raise_softmax(node: gs.Node, change: NodeChange) -> Optional[Step]:
    """Before 13, Softmax(axis=a) flattened the input to 2-D at `a`; from 13 it uses one axis."""
    if not change.crosses(13):
        return generic_rule(node, change)
    axis = int(node.attrs.get("axis", 1))
    x = node.inputs[0]
    rank = change.facts.rank(x)
    if axis == -1 or (rank is not None and axis in (rank - 1, -1)):
        return change.reform([x], {"axis": -1}, "axis is the last axis: same meaning", handled=(13,))

    def build(outputs) -> List[gs.Node]:
        flat, soft = change.var("flat"), change.var("soft")
        shape, shape_nodes = change.shape_of(x)
        return [change.make("Flatten", [x], [flat], {"axis": axis}),
                change.make(node.op, [flat], [soft], {"axis": -1}),
                *shape_nodes,
                change.make("Reshape", [soft, shape], outputs)]
    return change.replace(build, f"old {node.op} axis={axis} semantics -> Flatten/{node.op}/Reshape")


def _raise_roialign(node: gs.Node, change: NodeChange) -> Optional[Step]:
    if not change.crosses(16):
        return generic_rule(node, change)
    attrs = dict(node.attrs)
    attrs.setdefault("coordinate_transformation_mode", "output_half_pixel")
    return change.reform(node.inputs, attrs, "kept pre-16 coordinates (output_half_pixel)", handled=(16,))


def _raise_dropout(node: gs.Node, change: NodeChange) -> Optional[Step]:
    """Dropout before 12 took `ratio` as an attribute; in inference it is the identity either way."""
    attrs = dict(node.attrs)
    ratio = attrs.pop("ratio", None)
    attrs.pop("is_test", None)
    inputs = list(node.inputs)
    if ratio is not None and len(inputs) == 1:
        inputs.append(change.const(np.float32(ratio), hint="ratio"))
    return change.reform(inputs, attrs, "ratio attribute -> input")


RAISE_RULES: Dict[str, Rule] = {
    "Split": _attr_to_input("split", 1),
    "Squeeze": _attr_to_input("axes", 1),
    "Unsqueeze": _attr_to_input("axes", 1),
    "ReduceSum": _attr_to_input("axes", 1),
    "Softmax": _raise_softmax,
    "LogSoftmax": _raise_softmax,
    "Hardmax": _raise_softmax,
    "RoiAlign": _raise_roialign,
    "Dropout": _raise_dropout,
}


def raise_opset(graph: gs.Graph, to_version: int = 17, names: Optional[NameMaker] = None
                ) -> Tuple[bool, List[str]]:
    """Raise the default-domain opset to `to_version` if every node stays valid with its meaning.

    Returns (ok, reasons): ok with no reasons when raised (or already there); not ok with one
    reason per refusing node, and the graph untouched.
    """
    current = graph_opset(graph)
    if current >= to_version:
        return True, []
    change = OpsetChange(graph, to_version, RAISE_RULES, names or NameMaker(graph, "opset")).plan()
    if not change.ok:
        return False, [str(p) for p in change.problems]
    change.apply()
    return True, []
