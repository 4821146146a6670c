"""Build replacements in a gs.Graph: plugin nodes the way TensorRT's ONNX parser imports them, small
ONNX subgraphs for decompositions, and plugin calls emitted as ONNX local functions.

TensorRT imports an op it has no importer for through its plugin fallback: op_type = creator name,
attributes ``plugin_version`` / ``plugin_namespace`` (strings) select the creator, and every other
attribute named like a creator field becomes that field, typed by the attribute type:
INT/INTS -> kINT32 (the parser reads them as int32), FLOAT/FLOATS -> kFLOAT32, STRING -> kCHAR,
TENSOR -> the tensor's type (FLOAT kFLOAT32, FLOAT16 kFLOAT16, INT8, INT16, INT32; INT64/BOOL/UINT8
are refused). Inputs and outputs are wired in order (onnx-tensorrt, FallbackPluginImporter).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..graph_utils import NameMaker, shape_of
from ..target import TrtVersion
from .patterns import inferred_dims

if TYPE_CHECKING:  # pragma: no cover
    from ..pass_api import PassContext
    from .rule import Match, Rule

PLUGIN_DOMAIN = "trt.plugins"   # domain of emitted plugin nodes/functions (registered in opset_import)
FUNCTION_MIN_TRT = TrtVersion(10, 7)   # "prioritizes plugins over local functions" (10.7 changelog)
INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1
_TENSOR_FIELD_DTYPES = (np.float32, np.float16, np.float64, np.int8, np.int16, np.int32)


class FieldError(ValueError):
    """A plugin field value the parser cannot turn into a plugin field."""


def plugin_attr(name: str, value: Any) -> Any:
    """Python value -> gs attribute value with the parser's type mapping in mind."""
    if isinstance(value, (bool, np.bool_)):
        return int(bool(value))                       # INT -> kINT32 0/1 (plugins take bools as int32)
    if isinstance(value, (int, np.integer)):
        value = int(value)
        if not INT32_MIN <= value <= INT32_MAX:
            raise FieldError(f"field '{name}' = {value} does not fit int32 (the parser reads INT as int32)")
        return value
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, gs.Constant):
        value = value.values
    if isinstance(value, np.ndarray):
        if value.dtype.type not in _TENSOR_FIELD_DTYPES:
            raise FieldError(f"field '{name}' has dtype {value.dtype}; the parser takes float32/16/64, "
                             "int8/16/32 tensors only")
        return gs.Constant(f"{name}", np.ascontiguousarray(value))
    if isinstance(value, (list, tuple)):
        items = list(value)
        if items and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
            return [plugin_attr(name, v) for v in items]
        if items and all(isinstance(v, (float, np.floating, int, np.integer)) for v in items):
            return [float(v) for v in items]
        if items and all(isinstance(v, str) for v in items):
            return items
        raise FieldError(f"field '{name}': lists must hold only ints, only floats or only strings")
    raise FieldError(f"field '{name}': unsupported value type {type(value).__name__}")


def plugin_attrs(spec, fields: Dict[str, Any]) -> Dict[str, Any]:
    attrs = {k: plugin_attr(k, v) for k, v in sorted(fields.items())}
    attrs["plugin_version"] = spec.version
    attrs["plugin_namespace"] = spec.namespace   # present even when empty: TensorRT >= 10.x then
    return attrs                                 # prefers the plugin over a same-named local function


def remove_nodes(graph: gs.Graph, nodes: Sequence[gs.Node]) -> None:
    """Disconnect and drop nodes (their output tensors become free to get a new producer)."""
    doomed = list(nodes)
    for node in doomed:
        node.inputs.clear()
        node.outputs.clear()
    # identity, not ==: gs.Node compares by content
    graph.nodes = [n for n in graph.nodes if not any(n is d for d in doomed)]


def prune_dead(graph: gs.Graph, tensors) -> None:
    """Remove the producers of `tensors` (and theirs, transitively) whose outputs nothing reads."""
    outputs = graph.outputs
    stack = list(tensors)
    while stack:
        t = stack.pop()
        p = t.inputs[0] if getattr(t, "inputs", None) else None
        if p is None:
            continue
        if any(o.outputs or any(o is g for g in outputs) for o in p.outputs):
            continue
        read = list(p.inputs)
        remove_nodes(graph, [p])
        stack.extend(read)


class Builder:
    """Helpers a rule's rewrite uses; names come from the pass's NameMaker (deterministic)."""

    def __init__(self, graph: gs.Graph, names: NameMaker, ctx: "PassContext"):
        self.graph = graph
        self.names = names
        self.ctx = ctx
        self._functions: Dict[Tuple[str, str], List[bytes]] = {}
        self.warnings: List[str] = []   # drained into the pass result by the engine
        self.memo: Dict[str, Any] = {}  # per-pass-run cache for rules (e.g. one fake-quant per input)

    def wants_function(self, rule: "Rule") -> bool:
        """--plugin-as-function applies to rules whose plugin computes what the subgraph computes,
        on TensorRT >= 10.7 (which prefers a registered plugin over a same-named local function)."""
        if not self.ctx.options.get("plugin_as_function"):
            return False
        why = None
        if not rule.function_ok:
            why = "its plugin does not compute what the replaced subgraph computes"
        elif self.ctx.target < FUNCTION_MIN_TRT:
            why = (f"TensorRT {self.ctx.target} does not prefer plugins over local functions "
                   f"(needs >= {FUNCTION_MIN_TRT})")
        if why:
            note = f"{rule.name}: plugin emitted as a plain node, not a local function: {why}"
            if note not in self.warnings:
                self.warnings.append(note)
            return False
        return True

    # -- tensors and nodes ----------------------------------------------------------------------
    def const(self, values, hint: str = "const", dtype=None) -> gs.Constant:
        arr = np.asarray(values, dtype=dtype) if dtype is not None or not isinstance(values, np.ndarray) \
            else values
        return gs.Constant(self.names(hint), np.ascontiguousarray(arr))

    def var(self, hint: str = "t", dtype=None, shape=None) -> gs.Variable:
        return gs.Variable(self.names(hint), dtype=dtype, shape=shape)

    def node(self, op: str, inputs: List[Any], outputs: Optional[List[Any]] = None, attrs=None,
             dtype=None, shape=None, domain: Optional[str] = None) -> List[gs.Variable]:
        """Append a node; `outputs` defaults to one fresh Variable (dtype/shape as given)."""
        if outputs is None:
            outputs = [self.var(op.lower(), dtype=dtype, shape=shape)]
        n = gs.Node(op=op, name=self.names(op), attrs=dict(attrs or {}), inputs=list(inputs),
                    outputs=list(outputs), domain=domain)
        self.graph.nodes.append(n)
        return list(outputs)

    def op(self, op: str, *inputs, attrs=None, dtype=None, shape=None) -> gs.Variable:
        """One-output node shorthand: ``y = build.op("Add", a, b)``."""
        return self.node(op, list(inputs), attrs=attrs, dtype=dtype, shape=shape)[0]

    def shape_of(self, tensor, dims=None) -> gs.Tensor:
        """``Shape(tensor)[dims]``: an initializer when those dims are static (annotation or shape
        inference), else Shape (+ Slice) nodes appended to the graph (graph_utils.shape_of)."""
        value, nodes = shape_of(tensor, self.names, dims, known=inferred_dims(tensor))
        self.graph.nodes.extend(nodes)
        return value

    # -- plugins --------------------------------------------------------------------------------
    def plugin_node(self, rule: "Rule", match: "Match") -> gs.Node:
        spec = rule.plugin
        node = gs.Node(op=spec.name, name=self.names(spec.name), domain=PLUGIN_DOMAIN,
                       attrs=plugin_attrs(spec, match.fields), inputs=list(match.inputs),
                       outputs=list(match.outputs))
        return node

    def replace_with_plugin(self, rule: "Rule", match: "Match") -> gs.Node:
        """Drop the matched nodes, add the plugin node (or a local-function call where asked)."""
        body = None
        if self.wants_function(rule):
            try:
                body = rule.function_body(match, self)
            except FieldError as exc:
                self.warnings.append(f"{rule.name}: {match.anchor} emitted as a plain plugin node, "
                                     f"not a local function: {exc}")
        remove_nodes(self.graph, match.nodes)
        node = self.plugin_node(rule, match)
        if body is not None:
            self._attach_function(rule, node, body)
        self.graph.nodes.append(node)
        return node

    def _attach_function(self, rule: "Rule", node: gs.Node, body: "FunctionBody") -> None:
        """Make `node` a call of a local function named after the plugin whose body is `body`.

        Constants of the body become Constant nodes whose value refers to a TENSOR attribute of the
        call (TensorRT ignores attributes that are not creator fields), so calls that differ only
        in weights share one function. Bodies that differ otherwise get their own domain.
        """
        attr_names = sorted(node.attrs) + [name for name, _ in body.constants]
        for name, value in body.constants:
            node.attrs[name] = gs.Constant(name, value)
        func = gs.Function(rule.plugin.name, domain=PLUGIN_DOMAIN, nodes=body.nodes, inputs=body.inputs,
                           outputs=body.outputs, attrs={a: None for a in attr_names},
                           import_domains=self._body_domains(body))
        key_bytes = _function_key(func)
        domain = self._domain_for(rule.plugin.name, key_bytes)
        node.domain = domain
        func.domain = domain
        if not any(f.name == func.name and f.domain == domain for f in self.graph.functions):
            self.graph.functions.append(func)

    def _body_domains(self, body: "FunctionBody"):
        versions = {d.domain: d.version for d in (self.graph.import_domains or [])}
        versions[""] = int(self.graph.opset)
        used = sorted({(n.domain or "") for n in body.nodes} | {""})
        return [onnx.helper.make_opsetid(d, versions.get(d, 1)) for d in used]

    def _domain_for(self, name: str, key: bytes) -> str:
        known = self._functions.setdefault((PLUGIN_DOMAIN, name), [])
        for f in self.graph.functions:     # functions from an earlier run of the pass
            if f.name == name and f.domain and f.domain.startswith(PLUGIN_DOMAIN):
                k = _function_key(f)
                if k not in known:
                    known.append(k)
        if key not in known:
            known.append(key)
        idx = known.index(key)
        return PLUGIN_DOMAIN if idx == 0 else f"{PLUGIN_DOMAIN}.{idx}"


class FunctionBody:
    """Nodes/inputs/outputs of a function body (own tensors) and the constants lifted to attributes."""

    def __init__(self, nodes, inputs, outputs, constants):
        self.nodes, self.inputs, self.outputs = nodes, inputs, outputs
        self.constants: List[Tuple[str, np.ndarray]] = constants


def default_function_body(match: "Match", inputs: Optional[Sequence[Any]] = None) -> FunctionBody:
    """Copy the matched nodes into a function body whose formal inputs are the plugin's inputs.

    Raises FieldError when the subgraph reads a non-constant tensor that is not a plugin input.
    """
    formal_in = list(inputs if inputs is not None else match.inputs)
    mapping: Dict[str, Any] = {}
    f_inputs = []
    for i, t in enumerate(formal_in):
        v = gs.Variable(f"in{i}", dtype=t.dtype, shape=t.shape)
        mapping.setdefault(t.name, v)
        f_inputs.append(v)
    constants: List[Tuple[str, np.ndarray]] = []
    nodes: List[gs.Node] = []
    produced = {t.name for n in match.nodes for t in n.outputs}
    for n in match.nodes:  # rules list matched nodes in topological order
        new_in = []
        for t in n.inputs:
            if t.name in mapping:
                new_in.append(mapping[t.name])
            elif isinstance(t, gs.Constant):
                name = f"gf_const_{len(constants)}"
                out = gs.Variable(f"c{len(constants)}", dtype=t.values.dtype, shape=list(t.values.shape))
                const_node = gs.Node("Constant", name=f"n_c{len(constants)}",
                                     attrs={"value": gs.Node.AttributeRef(name, gs.Tensor)}, outputs=[out])
                constants.append((name, t.values))
                nodes.append(const_node)
                mapping[t.name] = out
                new_in.append(out)
            elif t.name == "":
                new_in.append(gs.Variable.empty())
            elif t.name in produced:
                raise FieldError(f"function body: '{t.name}' read before it is produced")
            else:
                raise FieldError(f"function body: the subgraph reads '{t.name}', which is not a plugin input")
        new_out = []
        for t in n.outputs:
            v = gs.Variable(f"t{len(mapping)}", dtype=t.dtype, shape=t.shape)
            mapping[t.name] = v
            new_out.append(v)
        nodes.append(gs.Node(n.op, name=f"n{len(nodes)}", attrs=dict(n.attrs), inputs=new_in,
                             outputs=new_out, domain=n.domain))
    f_outputs = []
    for t in match.outputs:
        if t.name not in mapping:
            raise FieldError(f"function body: output '{t.name}' is not produced by the subgraph")
        f_outputs.append(mapping[t.name])
    return FunctionBody(nodes, f_inputs, f_outputs, constants)


def _function_key(func: gs.Function) -> bytes:
    """Bytes that identify a function body (names of the function aside)."""
    proto = gs.exporters.onnx_exporter.OnnxExporter.export_function(func)
    proto.domain = ""
    return proto.SerializeToString(deterministic=True)
