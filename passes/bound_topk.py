"""bound-topk: a TopK whose K is counted at run time from NonMaxSuppression/NonZero results gets a
build-time K.

Detection heads keep the best C detections with TopK(scores, K = Min(#selected, C)), where
#selected is the data-dependent length of what NonMaxSuppression (or NonZero) picked. On TensorRT
8.6 such a head was reported to build and then fail when the execution context is created
("Invalid Context"): K is a shape tensor computed from a data-dependent shape. (On the rig, the
nms_topk_head fixture with a static box count built and ran; the failure is not reproduced for
every head, so `check` reports the pattern as a warning.)

Rewrite, exact: pad the scores along the TopK axis with C copies of the lowest value (the highest
for largest = 0), take TopK with the constant K = C, sorted, and slice the first Min(#selected, C)
values and indices, which are the original K. A padded entry never comes before a real one: it is
the extreme value of the type and has a larger index (ONNX TopK puts equal values in index order).
Covered: K = Min(length of the TopK input along its axis, C) with a constant C <= 3840, and the
input's other dims static. Anything else keeps its run-time K, with a warning that only the
EfficientNMS_TRT plugin (`--nms-plugin`) removes the data-dependent head.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Set, Tuple

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphfix.graph_utils import NameMaker, constant_value
from graphfix.passes.unify_if import ShapeFacts, removes_finding
from graphfix.remedies import fixes_finding
from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.registry import register_pass
from graphfix.target import TrtRange

DATA_DEPENDENT_OPS = frozenset({"NonMaxSuppression", "NonZero", "Compress", "Unique"})
SHAPE_OPS = frozenset({"Shape", "Size"})
WRAPPERS = frozenset({"Reshape", "Unsqueeze", "Squeeze", "Cast", "Identity", "Flatten"})
TOPK_K_LIMIT = 3840       # TensorRT's ITopKLayer limit (profile rule int_input_max)
INVALID_CONTEXT = "Invalid Context"


@register_pass
class BoundTopK(Pass):
    info = PassInfo(
        name="bound-topk",
        summary="TopK with K counted at run time from NMS/NonZero results -> constant K, padded input, Slice",
        fixes=f"'{INVALID_CONTEXT}' when creating the execution context of an NMS head whose TopK K is "
              "computed from the number of selected boxes",
        trt=TrtRange(below="9.0"),
        after=("fold-constants",),
        before=("int64-to-int32", "plugins"),
        remedies=(fixes_finding("topk_k_counted", trt=TrtRange(below="9.0"),
                                applies=lambda site: removes_finding(site, "topk_problems"),
                                why="a constant K over a padded input, sliced back to the count"),),
    )

    def run(self, graph: gs.Graph) -> PassResult:
        result = PassResult()
        names = NameMaker(graph, "bound-topk")
        dependent = data_dependent_tensors(graph)
        topks = [n for n in graph.nodes if n.op == "TopK" and k_is_counted(n, dependent)]
        facts = ShapeFacts.of(graph) if topks else None
        for node in topks:
            plan = bound_plan(node, facts)
            if isinstance(plan, str):
                result.warn(f"TopK '{node.name}': K is counted at run time from NMS/NonZero results and stays "
                            f"so ({plan}); only --nms-plugin (EfficientNMS_TRT) replaces such a head")
                continue
            bound, x_dims = plan
            rewrite(graph, node, bound, x_dims, facts, names)
            result.change("bound-topk", node.name or node.outputs[0].name, {"k_bound": bound})
            result.count("topk_bounded")
        return result


# -- facts ------------------------------------------------------------------------------------------

def data_dependent_tensors(graph: gs.Graph) -> Set[int]:
    """id() of tensors whose shape depends on data (lookup only): NMS/NonZero outputs and what is
    computed from them, except Shape/Size values (those are the run-time counts)."""
    dependent: Set[int] = set()
    for node in graph.nodes:   # topological order (the pipeline keeps it)
        if node.op in DATA_DEPENDENT_OPS or (node.op not in SHAPE_OPS and
                                             any(id(t) in dependent for t in node.inputs)):
            dependent.update(id(t) for t in node.outputs)
    return dependent


def k_is_counted(node: gs.Node, dependent: Set[int]) -> bool:
    """Whether the TopK's K is computed from Shape/Size of a data-dependent tensor."""
    if len(node.inputs) < 2 or isinstance(node.inputs[1], gs.Constant) or constant_value(node.inputs[1]) is not None:
        return False
    todo, seen = [node.inputs[1]], set()
    while todo:
        t = todo.pop()
        if id(t) in seen or not t.inputs:
            continue
        seen.add(id(t))
        producer = t.inputs[0]
        if producer.op in SHAPE_OPS and producer.inputs and id(producer.inputs[0]) in dependent:
            return True
        todo.extend(producer.inputs)
    return False


def bound_plan(node: gs.Node, facts: ShapeFacts):
    """(C, dims of x) when K = Min(length of the TopK input x along its axis, C); else why not."""
    x = node.inputs[0]
    k = _unwrap(node.inputs[1])
    if k.inputs == [] or k.inputs[0].op != "Min" or len(k.inputs[0].inputs) != 2:
        return "K is not Min(count, constant)"
    a, b = k.inputs[0].inputs
    bound = _int_constant(b) if _int_constant(b) is not None else _int_constant(a)
    count = a if _int_constant(b) is not None else b
    if bound is None:
        return "no constant bound in Min"
    if not 1 <= bound <= TOPK_K_LIMIT:
        return f"bound {bound} is outside 1..{TOPK_K_LIMIT}"
    shape = facts.dims(x)
    if shape is None:
        return "the rank of the TopK input is unknown"
    axis = int(node.attrs.get("axis", -1)) % len(shape)
    if not _is_length(count, x, axis, len(shape)):
        return "the count in Min is not the length of the TopK input along its axis"
    if any(not isinstance(d, int) for i, d in enumerate(shape) if i != axis):
        return "the TopK input has dynamic dims besides its axis"
    return bound, shape


def _unwrap(t: gs.Tensor) -> gs.Tensor:
    while t.inputs and t.inputs[0].op in WRAPPERS and t.inputs[0].inputs:
        t = t.inputs[0].inputs[0]
    return t


def _int_constant(t: gs.Tensor) -> Optional[int]:
    value = constant_value(t)
    if value is None or np.asarray(value).size != 1 or not np.issubdtype(np.asarray(value).dtype, np.integer):
        return None
    return int(np.asarray(value).reshape(-1)[0])


def _is_length(count: gs.Tensor, x: gs.Tensor, axis: int, rank: int) -> bool:
    """Shape(x) of a 1-D x, Shape(x)[axis] (Gather/Slice of one constant index), wrapped or not."""
    t = _unwrap(count)
    if not t.inputs:
        return False
    node = t.inputs[0]
    if node.op == "Shape":
        return node.inputs[0] is x and rank == 1 and not node.attrs.get("start") and node.attrs.get("end") is None
    if node.op == "Gather" and node.inputs and _unwrap(node.inputs[0]).inputs:
        shape_node = _unwrap(node.inputs[0]).inputs[0]
        index = _int_constant(node.inputs[1]) if len(node.inputs) > 1 else None
        return shape_node.op == "Shape" and shape_node.inputs[0] is x and not shape_node.attrs.get("start") \
            and index is not None and index % rank == axis
    return False


# -- rewrite ------------------------------------------------------------------------------------------

def rewrite(graph: gs.Graph, node: gs.Node, bound: int, dims: List, facts: ShapeFacts, names: NameMaker) -> None:
    x = node.inputs[0]
    k = node.inputs[1]
    axis = int(node.attrs.get("axis", -1)) % len(dims)
    largest = int(node.attrs.get("largest", 1))
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(facts.elem_type(x)))
    fill_value = _extreme(dtype, lowest=bool(largest))
    fill_shape = [bound if i == axis else int(d) for i, d in enumerate(dims)]
    fill = gs.Constant(names("fill"), np.full(fill_shape, fill_value, dtype=dtype))
    padded = gs.Variable(names("padded"), dtype=dtype)
    new_k = gs.Constant(names("k"), np.array([bound], np.int64))
    values, indices = node.outputs[0], node.outputs[1]
    top_values = gs.Variable(names("values"), dtype=dtype)
    top_indices = gs.Variable(names("indices"), dtype=np.int64)
    position = graph.nodes.index(node)
    concat = gs.Node("Concat", names("Concat"), inputs=[x, fill], outputs=[padded], attrs={"axis": axis})
    node.inputs[0] = padded
    node.inputs[1] = new_k
    node.attrs["sorted"] = 1
    node.outputs[0] = top_values
    node.outputs[1] = top_indices
    starts = gs.Constant(names("starts"), np.array([0], np.int64))
    axes = gs.Constant(names("axes"), np.array([axis], np.int64))
    slices = [gs.Node("Slice", names("Slice"), inputs=[src, starts, k, axes], outputs=[dst])
              for src, dst in ((top_values, values), (top_indices, indices))]
    graph.nodes[position:position + 1] = [concat, node] + slices


def _extreme(dtype: np.dtype, lowest: bool):
    if np.issubdtype(dtype, np.floating):
        return -np.inf if lowest else np.inf
    info = np.iinfo(dtype)
    return info.min if lowest else info.max


# -- for check ------------------------------------------------------------------------------------------

def topk_problems(model: onnx.ModelProto) -> Dict[str, Tuple[bool, str]]:
    """For `graphfix check`: each main-graph TopK whose K is counted from NMS/NonZero results, by its
    first output: (whether bound-topk rewrites it, a one-line detail)."""
    from graphfix.graph_utils import to_graph
    graph = to_graph(model)
    dependent = data_dependent_tensors(graph)
    out: Dict[str, Tuple[bool, str]] = {}
    topks = [n for n in graph.nodes if n.op == "TopK" and n.outputs and k_is_counted(n, dependent)]
    facts = ShapeFacts.of(graph) if topks else None
    for node in topks:
        plan = bound_plan(node, facts)
        if isinstance(plan, str):
            out[node.outputs[0].name] = (False, f"{plan}; only `graphfix fix --nms-plugin` (EfficientNMS_TRT) "
                                                "replaces such a head")
        else:
            out[node.outputs[0].name] = (True, f"K = Min(count, {plan[0]}): bound-topk makes K the constant "
                                               f"{plan[0]} and slices the result")
    return out
