"""Structural checks: the graph is well formed (input validation) and stays so (after each pass)."""
from __future__ import annotations

from typing import Dict, List, Optional, Set

import onnx

from ..errors import InputError


def subgraph_outer_refs(node: onnx.NodeProto) -> Set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope."""
    refs: Set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            local = {i.name for i in g.input} | {t.name for t in g.initializer}
            for n in g.node:
                local.update(n.output)
            for n in g.node:
                refs.update(x for x in n.input if x and x not in local)
                refs.update(r for r in subgraph_outer_refs(n) if r not in local)
    return refs


def validate_input(model: onnx.ModelProto, source: str) -> None:
    """Raise InputError for models that no pass can work on. `fix` and `check` both call this.

    Refused: an IR version or ai.onnx opset outside what ONNX defines, ONNX ops without an opset
    import for their domain, unknown element types,
    tensors whose data does not match their shape, attributes of the wrong type for the op's
    schema, function-attribute references outside a function, dangling inputs, cycles. What the
    passes can repair (unsorted nodes, deprecated ops) is not refused here; ONNX's checker judges
    the result instead (pipeline).
    """
    from .input_sanity import sanity_problem
    problem = sanity_problem(model)
    if problem:
        raise InputError(source, problem)
    graph = model.graph
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    producer: Dict[str, int] = {}
    for idx, node in enumerate(graph.node):
        for out in node.output:
            if out:
                if out in producer or out in available:
                    raise InputError(source, f"tensor '{out}' is produced twice (node "
                                             f"'{node.name or node.op_type}')")
                producer[out] = idx
    for node in graph.node:
        for name in list(node.input) + sorted(subgraph_outer_refs(node)):
            if name and name not in available and name not in producer:
                raise InputError(source, f"node '{node.name or node.op_type}' reads '{name}', "
                                         "which no node, initializer or graph input provides")
    for out in graph.output:
        if out.name not in available and out.name not in producer:
            raise InputError(source, f"graph output '{out.name}' is produced by no node")
    cycle = find_cycle(model)
    if cycle:
        raise InputError(source, "graph has a cycle through nodes " + " -> ".join(cycle))


def find_cycle(model: onnx.ModelProto) -> List[str]:
    """Node names on one cycle of the data-flow graph, or [] when it is acyclic."""
    nodes = list(model.graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    reads = [list(n.input) + sorted(subgraph_outer_refs(n)) for n in nodes]
    if all(producer.get(x, -1) < i for i, names in enumerate(reads) for x in names):
        return []   # in topological order already (the usual case): no cycle, no search
    deps = [sorted({producer[x] for x in names if x in producer}) for names in reads]
    state = [0] * len(nodes)  # 0 new, 1 on stack, 2 done
    for start in range(len(nodes)):
        if state[start]:
            continue
        stack = [(start, iter(deps[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state[nxt] == 1:
                loop = path[path.index(nxt):]
                return [nodes[i].name or f"{nodes[i].op_type}#{i}" for i in loop]
            elif state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(deps[nxt])))
                path.append(nxt)
    return []


def io_signature(model: onnx.ModelProto):
    init = {t.name for t in model.graph.initializer}

    def sig(values):
        return [(v.name, v.type.tensor_type.elem_type) for v in values]
    return sig(i for i in model.graph.input if i.name not in init), sig(model.graph.output)


def validity_problems(model: onnx.ModelProto) -> Dict[str, str]:
    """What onnx's checker and strict shape inference say is wrong with a model, by check."""
    from ..weights import weightless_model
    problems: Dict[str, str] = {}
    model = weightless_model(model)   # they read types and dims, not weight bytes
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        problems["onnx.checker"] = " ".join(str(exc).split())[:300]
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        problems["shape inference"] = " ".join(str(exc).split())[:300]
    return problems


def repeated_node_names(model: onnx.ModelProto) -> List[str]:
    """Node names used more than once (empty names aside), sorted."""
    from collections import Counter
    return sorted(name for name, n in Counter(n.name for n in model.graph.node if n.name).items() if n > 1)


def check_rewrite(before: onnx.ModelProto, after: onnx.ModelProto, *, allow_io_change: bool = False,
                  found: Optional[Dict[str, str]] = None, already: Optional[Dict[str, str]] = None) -> List[str]:
    """Problems a rewrite introduced: checker, shape inference, unique names, I/O signature.

    A check the model already failed before the rewrite (e.g. a function body that strict shape
    inference rejects) is not held against the pass; only new failures count. ``found``/``already``:
    validity_problems of `after`/`before` where known (each model state is validated once).
    """
    problems: List[str] = []
    found = validity_problems(after) if found is None else found
    if found:
        already = validity_problems(before) if already is None else already
        problems.extend(f"{check}: {msg}" for check, msg in found.items() if check not in already)
    repeated = repeated_node_names(after)
    if repeated:
        problems.append(f"duplicate node names: {repeated[:5]}")
    if not allow_io_change and io_signature(before) != io_signature(after):
        problems.append(f"graph I/O signature changed: {io_signature(before)} -> {io_signature(after)}")
    return problems
