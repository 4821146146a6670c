"""ONNX's own definitions of an op as a function of other ops, inlined at a model's opset.

Many standard ops are defined by the ONNX spec as a graph of simpler ops (NegativeLogLikelihoodLoss,
SoftmaxCrossEntropyLoss, LayerNormalization, AffineGrid, Gelu, ...): the op schema carries that
body, fixed or built for one node's attributes and input types ("context-dependent"). The node
tests' ``*_expanded`` models are these bodies. This module asks onnx for a node's body, wraps it as a
model-local function, and lets ``onnx.inliner`` inline it with its opset converted to the model's,
repeating for function ops inside a body (SoftmaxCrossEntropyLoss calls NegativeLogLikelihoodLoss).
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, List, Optional, Sequence

import onnx
import onnx.inliner
from onnx import helper

from .onnx_values import DEFAULT_DOMAINS

LOCAL_DOMAIN = "gf.functions"    # the bodies' domain while they are model-local functions
MAX_DEPTH = 4                    # function ops inside bodies inside bodies...


class NoFunctionBody(ValueError):
    """onnx defines no body for the node, or could not build or inline it."""


def _schema(op_type: str, opset: int) -> Optional[onnx.defs.OpSchema]:
    try:
        return onnx.defs.get_schema(op_type, opset, "")
    except onnx.defs.SchemaError:
        return None


def has_function_body(op_type: str, opset: int) -> bool:
    schema = _schema(op_type, opset)
    return schema is not None and (schema.has_function or schema.has_context_dependent_function)


@functools.lru_cache(maxsize=1)
def function_ops() -> tuple:
    """Every standard op that some opset defines as a function (the rows of the table of remedies)."""
    return tuple(sorted({s.name for s in onnx.defs.get_all_schemas_with_history()
                         if s.domain in DEFAULT_DOMAINS and (s.has_function or s.has_context_dependent_function)}))


def value_types(model: onnx.ModelProto) -> Dict[str, onnx.TypeProto]:
    """value name -> its type: graph inputs, outputs and initializers, and what shape
    inference (with data propagation: ranks behind computed Reshape targets) finds in between."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    types = {vi.name: vi.type for vi in list(inferred.graph.input) + list(inferred.graph.value_info)
             + list(inferred.graph.output)}
    types.update((t.name, helper.make_tensor_type_proto(t.data_type, list(t.dims))) for t in model.graph.initializer)
    return types


def function_body(node: onnx.NodeProto, input_types: Sequence[Optional[onnx.TypeProto]], opset: int
                  ) -> onnx.FunctionProto:
    """The body onnx defines for `node` at `opset` (the newest body version not above it)."""
    schema = _schema(node.op_type, opset)
    if schema is None:
        raise NoFunctionBody(f"no schema for {node.op_type} at opset {opset}")
    if schema.has_context_dependent_function:
        versions = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
        if not versions:
            raise NoFunctionBody(f"{node.op_type} has no function body for opset {opset}")
        if any(t is None for t, name in zip(input_types, node.input) if name):
            raise NoFunctionBody(f"{node.op_type}: the type of an input is unknown")
        body = schema.get_context_dependent_function_with_opset_version(
            max(versions), node.SerializeToString(),
            [(t or onnx.TypeProto()).SerializeToString() for t in input_types])
        if not body:
            raise NoFunctionBody(f"onnx builds no {node.op_type} body for these attributes and types")
        proto = onnx.FunctionProto()
        proto.ParseFromString(body)
        return proto
    if schema.has_function:
        versions = [v for v in schema.function_opset_versions if v <= opset]
        if not versions:
            raise NoFunctionBody(f"{node.op_type} has no function body for opset {opset}")
        body = schema.get_function_with_opset_version(max(versions))
        if isinstance(body, bytes):
            proto = onnx.FunctionProto()
            proto.ParseFromString(body)
            return proto
        return body
    raise NoFunctionBody(f"onnx defines {node.op_type} without a function body")


def expanded_model(node: onnx.NodeProto, value_types: Dict[str, onnx.TypeProto], opset: int,
                   also_expand: Callable[[onnx.NodeProto], bool]) -> onnx.ModelProto:
    """A model of `node` alone (inputs and outputs named as the node's) with its body inlined at
    `opset`; nodes of the body for which `also_expand` holds are inlined in turn."""
    missing = [name for name in list(node.input) + list(node.output) if name and name not in value_types]
    if missing:
        raise NoFunctionBody(f"{node.op_type}: unknown type of {', '.join(missing)}")
    graph = helper.make_graph([node], "expand",
                              [helper.make_value_info(n, value_types[n]) for n in dict.fromkeys(node.input) if n],
                              [helper.make_value_info(n, value_types[n]) for n in node.output if n])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    wanted: Callable[[onnx.NodeProto], bool] = lambda n: True   # the one node   # noqa: E731
    for _ in range(MAX_DEPTH):
        inlined = _inline_round(model, opset, wanted)
        if inlined is None:
            break
        model = inlined
        wanted = lambda n: n.domain in DEFAULT_DOMAINS and also_expand(n)   # noqa: E731
    if any(n.domain == LOCAL_DOMAIN for n in model.graph.node) or any(also_expand(n) for n in model.graph.node):
        raise NoFunctionBody(f"{node.op_type}: function ops nested deeper than {MAX_DEPTH}")
    return model


def _inline_round(model: onnx.ModelProto, opset: int, wanted: Callable[[onnx.NodeProto], bool]
                  ) -> Optional[onnx.ModelProto]:
    """Each wanted node becomes a call of its own local function, then onnx inlines them all
    (converting their opset). None when no node is wanted."""
    nodes = [n for n in model.graph.node if wanted(n)]
    if not nodes:
        return None
    types = value_types(model)
    functions: List[onnx.FunctionProto] = []
    for i, n in enumerate(nodes):
        _fill_default_attributes(n, opset)
        body = function_body(n, [types.get(name) if name else None for name in n.input], opset)
        body.domain, body.name = LOCAL_DOMAIN, f"{n.op_type}_{i}"
        n.domain, n.op_type = LOCAL_DOMAIN, body.name
        functions.append(body)
    model.functions.extend(functions)
    if all(o.domain != LOCAL_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(LOCAL_DOMAIN, 1))
    try:
        inlined = onnx.inliner.inline_local_functions(model, convert_version=True)
    except Exception as exc:   # the version converter or inliner refused: report, leave the node
        raise NoFunctionBody(f"onnx could not inline the body: {str(exc).splitlines()[0][:200]}") from exc
    del inlined.opset_import[:]
    inlined.opset_import.append(helper.make_opsetid("", opset))
    return inlined


def _fill_default_attributes(node: onnx.NodeProto, opset: int) -> None:
    """Write the schema's defaults for attributes the node omits: a body refers to them by name
    (ref_attr_name), and the inliner drops a reference the call does not set (HannWindow's Cast)."""
    schema = _schema(node.op_type, opset)
    present = {a.name for a in node.attribute}
    for name, attr in (schema.attributes.items() if schema is not None else ()):
        default = attr.default_value
        if name not in present and default is not None and default.type != onnx.AttributeProto.UNDEFINED:
            filled = node.attribute.add()
            filled.CopyFrom(default)
            filled.name = name
