"""Standard ONNX ops that a TensorRT version lacks or computes wrong -> ops it computes right.

Which target needs a rewrite is data, not code: a rule of family ``ops`` applies where the
target's profile (graphfix/profiles) has no importer for its op, or where one of the profile's
checks named in ``fixes_checks`` flags the node (ScatterElements' ``attr_in`` on reduction,
Einsum's ``einsum_features``, UINT8 Mod's ``io-only-dtype``). The pass evaluates those checks with
`graphfix check`'s own checker on the graph it rewrites, so the fix column of `check` and the
rewrite agree node by node. The ``decompose-ops`` pass applies these rules.

Helpers here emit Reduce*/Unsqueeze/Squeeze in the form the graph's opset defines (axes as an
input from opset 13/18); target-opset lowers them later where the target needs an older form.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Optional, Sequence, Set, Tuple

import numpy as np
import onnx_graphsurgeon as gs

from .patterns import dtype_of
from .rule import DECOMPOSE, Rule

OPS_FAMILY = "ops"
MAX_ONE_HOT_ELEMENTS = 1 << 24   # one-hot intermediates above this many elements are refused

# node display name -> profile checks that flagged it, for the graph the pass is rewriting
_FLAGGED: Dict[str, Set[str]] = {}


def node_display(graph: gs.Graph, node: gs.Node) -> str:
    """The name `graphfix check` reports a top-level node under (its name, else <Op#index>)."""
    if node.name:
        return node.name
    index = next(i for i, n in enumerate(graph.nodes) if n is node)
    return f"<{node.op}#{index}>"


@contextlib.contextmanager
def profile_findings(graph: gs.Graph, target):
    """Within the block, rules know which nodes the target's profile flags (and with which check)."""
    from ..diagnosis import flagged_checks
    from ..profiles import load_profile
    _FLAGGED.clear()
    try:
        _FLAGGED.update(flagged_checks(gs.export_onnx(graph, do_type_check=False), load_profile(target)))
        yield
    finally:
        _FLAGGED.clear()


class OpsDecompose(Rule):
    """A decomposition of a standard op, applied where the target's profile says it is needed."""
    kind = DECOMPOSE
    family = OPS_FAMILY
    anchor_domain = ""
    fixes_checks: Tuple[str, ...] = ()   # profile rule checks whose findings this rewrite removes

    def needs(self, target) -> bool:
        from ..profiles import load_profile
        profile = load_profile(target)
        for op in self.anchor_ops:
            if not profile.imports(op):
                return True
            rules = (profile.op(op) or {}).get("rules", [])
            if any(r.get("check") in self.fixes_checks for r in rules):
                return True
        return False

    def refuses(self, site) -> bool:
        """The pass rewrites main-graph nodes only, and leaves those its rules' match refuses."""
        ref = site.ref
        if ref is None:
            return False
        if ref.graph_path:
            return True
        refused = site.facts.derived(("ops-refusals", str(site.profile.version)),
                                     lambda: refusals(site.facts.model, site.profile.version))
        return ref.display in refused

    def match(self, graph, node, ctx):
        checks = _FLAGGED.get(node_display(graph, node), set())
        if not any(self.fixes(node.op, c) or (c == "unsupported-op" and node.op in self.anchor_ops)
                   for c in checks):
            return None
        return self.match_node(graph, node, ctx)

    def match_node(self, graph, node, ctx):
        raise NotImplementedError


# -- opset-aware building blocks -------------------------------------------------------------------
def dtype_or_float(tensor) -> np.dtype:
    return dtype_of(tensor) or np.dtype(np.float32)


def axes_const(build, axes: Sequence[int]):
    return build.const(np.asarray(list(axes), np.int64), "axes")


def reduce(build, graph, op: str, x, axes: Sequence[int], keepdims: int = 1, dtype=None):
    """Reduce* over `axes`: axes as an input from opset 13 (ReduceSum) / 18 (the others)."""
    since = 13 if op == "ReduceSum" else 18
    if int(graph.opset) >= since:
        return build.op(op, x, axes_const(build, axes), attrs={"keepdims": keepdims}, dtype=dtype)
    return build.op(op, x, attrs={"axes": list(axes), "keepdims": keepdims}, dtype=dtype)


def unsqueeze(build, graph, x, axes: Sequence[int], dtype=None):
    if int(graph.opset) >= 13:
        return build.op("Unsqueeze", x, axes_const(build, axes), dtype=dtype)
    return build.op("Unsqueeze", x, attrs={"axes": list(axes)}, dtype=dtype)


def squeeze(build, graph, x, axes: Sequence[int], dtype=None, out=None):
    if int(graph.opset) >= 13:
        inputs, attrs = [x, axes_const(build, axes)], {}
    else:
        inputs, attrs = [x], {"axes": list(axes)}
    return build.node("Squeeze", inputs, outputs=[out] if out is not None else None, attrs=attrs,
                      dtype=dtype)[0]


def identity_into(build, x, out):
    build.node("Identity", [x], outputs=[out])


def prod(values) -> int:
    p = 1
    for v in values:
        p *= int(v)
    return p


def static_shape(tensor) -> Optional[list]:
    from .patterns import static_dims
    dims = static_dims(tensor)
    if dims is None or any(d is None for d in dims):
        return None
    return dims


def refusals(model, target) -> Dict[str, str]:
    """node display name -> why its ``ops`` rule would leave it alone, for the top-level nodes those
    rules anchor at (`graphfix check` then names no fix for them). Runs each rule's own match."""
    from ..graph_utils import to_graph
    from ..pass_api import PassContext
    from .patterns import inferred_shapes
    from .registry import registered_rules
    from .rule import Match, NearMiss
    rules = [r for r in registered_rules(kind=DECOMPOSE, family=OPS_FAMILY) if r.needs(target)]
    ops = {op for r in rules for op in r.anchor_ops}
    if not any(n.op_type in ops and n.domain in ("", "ai.onnx") for n in model.graph.node):
        return {}
    graph = to_graph(model)
    ctx = PassContext(target=target, model=model)
    out: Dict[str, str] = {}
    with inferred_shapes(graph):
        for node in list(graph.nodes):
            for rule in rules:
                if node.op not in rule.anchor_ops or (node.domain or "") not in ("", "ai.onnx"):
                    continue
                found = rule.match_node(graph, node, ctx)
                if isinstance(found, NearMiss):
                    out[node_display(graph, node)] = found.reason
                elif not isinstance(found, Match):
                    out[node_display(graph, node)] = "not a form this rewrite handles"
    return out


# The ops decompose-ops emits. Where a rewrite made some of them constant (constant scatter indices,
# position ids, masks, or a whole constant scatter), the pass computes them itself (fold-constants ran
# before it and would fold them on a second run). onnx.reference computes them as ONNX Runtime does,
# float reductions and MatMul up to summation order.
FOLD_OPS = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Less", "Greater", "Equal", "And", "Or", "Not", "Where",
            "Gather", "Reshape", "Unsqueeze", "Squeeze", "Concat", "Transpose", "Slice", "Cast", "Expand", "Pad",
            "ReduceSum", "ReduceProd", "ReduceMax", "ReduceMin", "MatMul", "Softmax")


def fold_own_constants(graph: gs.Graph, prefix: str, limit_bytes: int) -> int:
    """Replace the nodes named ``prefix``* whose inputs are all constants by their values (evaluated
    with onnx.reference), repeatedly; graph outputs stay node-produced. Returns how many folded."""
    import onnx
    from onnx.reference import ReferenceEvaluator
    outputs = {t.name for t in graph.outputs}
    folded = 0
    progress = True
    while progress:
        progress = False
        for node in list(graph.nodes):
            if not node.name.startswith(prefix) or node.op not in FOLD_OPS or len(node.outputs) != 1:
                continue
            if any(t.name in outputs for t in node.outputs):
                continue
            if not node.inputs or not all(isinstance(t, gs.Constant) or t.name == "" for t in node.inputs):
                continue
            names = [t.name or "" for t in node.inputs]
            single = onnx.helper.make_node(node.op, names, ["y"], **_attrs(node))
            feeds = {t.name: t.values for t in node.inputs if isinstance(t, gs.Constant)}
            model = onnx.helper.make_model(onnx.helper.make_graph(
                [single], "fold", [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(
                    feeds[n].dtype), feeds[n].shape) for n in dict.fromkeys(feeds)],
                [onnx.helper.make_empty_tensor_value_info("y")]),
                opset_imports=[onnx.helper.make_opsetid("", int(graph.opset))])
            value = np.asarray(ReferenceEvaluator(model).run(None, feeds)[0])
            if value.nbytes > limit_bytes:
                continue
            out = node.outputs[0]
            const = gs.Constant(out.name, np.ascontiguousarray(value))
            for consumer in list(out.outputs):
                for i, t in enumerate(list(consumer.inputs)):
                    if t is out:
                        consumer.inputs[i] = const
            node.inputs.clear()
            node.outputs.clear()
            graph.nodes = [n for n in graph.nodes if n is not node]
            folded += 1
            progress = True
    return folded


def _attrs(node: gs.Node) -> dict:
    return {k: v for k, v in node.attrs.items()}
