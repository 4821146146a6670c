"""Fuse decomposed LayerNorm chains into one LayerNormalization node (opset >= 17).

Exporters write LayerNorm as ReduceMean -> Sub -> Pow(2) -> ReduceMean -> Add(eps) -> Sqrt -> Div
[-> Mul(gamma) -> Add(beta)]; TensorRT then runs it as separate layers ("Running layernorm after
self-attention in FP16 may cause overflow") and FP16 engines lose accuracy. TensorRT >= 8.6 imports
LayerNormalization as one INormalizationLayer that computes in FP32 (stash_type=1).

Accepted: Pow(d, 2) or Mul(d, d); Div or Reciprocal + Mul; gamma/beta optional (Scale = ones when
absent); ReduceMean axes as attribute or input; eps from an initializer or a Constant node; any run
of trailing axes. The LayerNormalization takes the chain's own input and type, so a float32 chain
between Cast(float16 -> float32) and Cast(float32 -> float16) becomes a float32 LayerNormalization
between the same casts: the computation type is kept, the casts stay. A gamma/beta applied after a
cast back to float16 stays a separate Mul/Add (absorbing it would change where rounding happens).

Chains that almost match are reported with the reason (near misses); RMSNorm chains (no mean
subtraction) are reported and left alone: LayerNormalization would subtract the mean.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphfix.graph_utils import NameMaker
from graphfix.opset import Facts, const_value, graph_opset, is_default_domain, raise_opset, walk
from graphfix.pass_api import Pass, PassInfo, PassResult
from graphfix.profiles import load_profile
from graphfix.registry import register_pass
from graphfix.remedies import fixes_finding

LAYERNORM_OPSET = 17
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
               onnx.TensorProto.DOUBLE)


class NearMiss(Exception):
    """A chain that looks like a LayerNorm but cannot be fused; the message says why."""


@dataclass
class Chain:
    owner: gs.Graph
    anchor: gs.Node                 # the first ReduceMean: names the chain in reports
    x: gs.Tensor                    # the chain's input
    axes: List[int]                 # normalized axes, as negative indices [-k .. -1]
    eps: float
    output: gs.Tensor               # what the LayerNormalization will produce
    nodes: List[gs.Node] = field(default_factory=list)
    gamma: Optional[gs.Tensor] = None
    beta: Optional[gs.Tensor] = None


def _label(node: gs.Node) -> str:
    return node.name or f"<unnamed {node.op}>"


def _producer(tensor) -> Optional[gs.Node]:
    return tensor.inputs[0] if isinstance(tensor, gs.Variable) and len(tensor.inputs) == 1 else None


def _is_op(node, op: str) -> bool:
    return node is not None and node.op == op and is_default_domain(node)


def _scalar(tensor) -> Optional[float]:
    value = const_value(tensor)
    if value is None or value.size != 1:
        return None
    return float(value.ravel()[0])


def _other(node: gs.Node, tensor):
    """The input of a binary node that is not `tensor` (None unless exactly one input is)."""
    a, b = node.inputs[0], node.inputs[1]
    if a is tensor and b is not tensor:
        return b
    if b is tensor and a is not tensor:
        return a
    return None


def _reduce_axes(node: gs.Node) -> Optional[List[int]]:
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > 1 and node.inputs[1].name:
        value = const_value(node.inputs[1])
        return None if value is None else [int(a) for a in value.ravel()]
    return None


def _consumers(tensor) -> List[gs.Node]:
    """Distinct readers of a tensor (Mul(d, d) reads d twice but is one reader)."""
    out: List[gs.Node] = []
    for node in tensor.outputs:
        if not any(node is seen for seen in out):
            out.append(node)
    return out


def _sole_consumer(tensor, owner: gs.Graph, what: str) -> gs.Node:
    if any(o is tensor for o in owner.outputs):
        raise NearMiss(f"intermediate '{tensor.name}' ({what}) is a graph output")
    users = _consumers(tensor)
    if len(users) != 1:
        names = ", ".join(sorted(_label(n) for n in users)) or "nothing"
        raise NearMiss(f"intermediate '{tensor.name}' ({what}) is used elsewhere (by {names})")
    return users[0]


class Matcher:
    """Finds LayerNorm chains (and their near misses) and RMSNorm chains in one graph."""

    def __init__(self, facts: Facts):
        self.facts = facts

    # -- LayerNorm ---------------------------------------------------------------------------------
    def mean_subtraction(self, mean: gs.Node) -> Optional[gs.Node]:
        """The Sub(x, ReduceMean(x)) that makes `mean` the start of a LayerNorm, or None."""
        if not _is_op(mean, "ReduceMean") or not mean.outputs:
            return None
        x, m = mean.inputs[0], mean.outputs[0]
        for user in m.outputs:
            if _is_op(user, "Sub") and user.inputs[0] is x and user.inputs[1] is m:
                return user
        return None

    def layernorm(self, owner: gs.Graph, mean: gs.Node, sub: gs.Node) -> Chain:
        x, m, d = mean.inputs[0], mean.outputs[0], sub.outputs[0]
        axes = self.trailing_axes(mean, x)
        _sole_consumer(m, owner, "mean")
        if any(o is d for o in owner.outputs):
            raise NearMiss(f"intermediate '{d.name}' (x - mean) is a graph output")
        users = _consumers(d)
        square = next((u for u in users if self.is_square_of(u, d)), None)
        if square is None:
            raise NearMiss(f"x - mean ('{d.name}') is not squared by Pow(., 2) or Mul(d, d)")
        if _is_op(square, "Pow") and _scalar(square.inputs[1]) != 2.0:
            raise NearMiss("Pow exponent is not the constant 2")
        var = _sole_consumer(square.outputs[0], owner, "squared deviation")
        if not _is_op(var, "ReduceMean"):
            raise NearMiss(f"the squared deviation feeds {var.op} '{_label(var)}', not ReduceMean")
        if self.trailing_axes(var, x) != axes:
            raise NearMiss("the two ReduceMeans reduce different axes")
        add = _sole_consumer(var.outputs[0], owner, "variance")
        if not _is_op(add, "Add"):
            raise NearMiss(f"the variance feeds {add.op} '{_label(add)}', not Add(eps)")
        eps = _scalar(_other(add, var.outputs[0]))
        if eps is None:
            raise NearMiss("eps is not a constant")
        sqrt = _sole_consumer(add.outputs[0], owner, "variance + eps")
        if not _is_op(sqrt, "Sqrt"):
            raise NearMiss(f"variance + eps feeds {sqrt.op} '{_label(sqrt)}', not Sqrt")
        nodes = [mean, sub, square, var, add, sqrt]
        normed = self.divide(owner, d, sqrt, nodes)
        others = [n for n in users if n is not square and n is not nodes[-1]]
        if others:
            raise NearMiss(f"intermediate '{d.name}' (x - mean) is used elsewhere "
                           f"(by {', '.join(sorted(_label(n) for n in others))})")
        chain = Chain(owner, mean, x, axes, eps, normed, nodes)
        self.affine(chain)
        self.check_buildable(chain)
        return chain

    def check_buildable(self, chain: Chain) -> None:
        """What fuse() needs: a float type, and static normalized dims where a Scale is built."""
        elem = self.facts.elem_type(chain.x)
        if elem not in FLOAT_TYPES:
            raise NearMiss("the input's element type is " + (onnx.TensorProto.DataType.Name(elem) if elem
                                                            else "unknown") + ", not a float type")
        if self.normalized_dims(chain) is not None:
            return
        for slot in ("gamma", "beta"):   # without static dims only an exactly shaped parameter will do
            param = getattr(chain, slot)
            shape = _trimmed_shape(param, len(chain.axes)) if param is not None else None
            if shape is not None and (len(shape) != len(chain.axes) or 1 in shape):
                raise NearMiss(f"normalized dims are dynamic; {slot} of shape {list(np.shape(const_value(param)))} "
                               "cannot be laid out over them")
        if chain.gamma is None:
            raise NearMiss("normalized dims are dynamic; cannot build a Scale of ones for them")

    def divide(self, owner: gs.Graph, d, sqrt: gs.Node, nodes: List[gs.Node]) -> gs.Tensor:
        """(x - mean) / std as Div(d, std) or Mul(d, Reciprocal(std)); appends the nodes."""
        user = _sole_consumer(sqrt.outputs[0], owner, "std")
        if _is_op(user, "Div") and user.inputs[0] is d and user.inputs[1] is sqrt.outputs[0]:
            nodes.append(user)
            return user.outputs[0]
        if _is_op(user, "Reciprocal"):
            mul = _sole_consumer(user.outputs[0], owner, "1 / std")
            if _is_op(mul, "Mul") and _other(mul, user.outputs[0]) is d:
                nodes.extend([user, mul])
                return mul.outputs[0]
        raise NearMiss(f"std feeds {user.op} '{_label(user)}', not Div(x - mean, std) or Reciprocal + Mul")

    def affine(self, chain: Chain) -> None:
        """Absorb a following Mul(gamma) and Add(beta) when they are constants of the right shape."""
        for op, slot in (("Mul", "gamma"), ("Add", "beta")):
            out = chain.output
            if any(o is out for o in chain.owner.outputs) or len(_consumers(out)) != 1:
                return
            user = out.outputs[0]
            if not _is_op(user, op):
                if op == "Mul":
                    continue      # no gamma: a beta may still follow
                return
            param = _other(user, out)
            if param is None or const_value(param) is None:
                return            # not a parameter: the op stays outside the LayerNormalization
            self.check_param_shape(chain, param, slot)
            setattr(chain, slot, param)
            chain.nodes.append(user)
            chain.output = user.outputs[0]

    def check_param_shape(self, chain: Chain, param, slot: str) -> None:
        shape = _trimmed_shape(param, len(chain.axes))
        normalized = self.normalized_dims(chain)
        if len(shape) > len(chain.axes) or (normalized is not None and any(
                s not in (1, n) for s, n in zip(shape[::-1], normalized[::-1]))):
            raise NearMiss(f"{slot} of shape {list(np.shape(const_value(param)))} broadcasts over axes "
                           f"outside the normalized ones {chain.axes}")

    def trailing_axes(self, reduce: gs.Node, x) -> List[int]:
        axes = _reduce_axes(reduce)
        if axes is None:
            raise NearMiss(f"ReduceMean '{_label(reduce)}' axes are not constant")
        if not axes:
            raise NearMiss(f"ReduceMean '{_label(reduce)}' reduces every axis")
        if int(reduce.attrs.get("keepdims", 1)) != 1:
            raise NearMiss(f"ReduceMean '{_label(reduce)}' has keepdims=0")
        rank = self.facts.rank(x)
        if any(a >= 0 for a in axes):
            if rank is None:
                raise NearMiss("input rank unknown; cannot tell whether the axes are the last ones")
            axes = [a - rank if a >= 0 else a for a in axes]
        axes = sorted(axes)
        if axes != list(range(-len(axes), 0)):
            raise NearMiss(f"axes {_reduce_axes(reduce)} are not the trailing axes")
        return axes

    def normalized_dims(self, chain: Chain) -> Optional[List[int]]:
        shape = self.facts.shape(chain.x)
        if shape is None or len(shape) < len(chain.axes):
            return None
        dims = shape[len(shape) - len(chain.axes):]
        return None if any(d is None for d in dims) else [int(d) for d in dims]

    @staticmethod
    def is_square_of(node: gs.Node, d) -> bool:
        if _is_op(node, "Pow") and node.inputs[0] is d:
            return True
        return _is_op(node, "Mul") and node.inputs[0] is d and node.inputs[1] is d

    # -- RMSNorm -------------------------------------------------------------------------------------
    def rmsnorm(self, mean: gs.Node) -> Optional[str]:
        """Describe an RMSNorm chain starting at this ReduceMean (its input squared), or None."""
        if not _is_op(mean, "ReduceMean") or not mean.outputs:
            return None
        square = _producer(mean.inputs[0])
        if square is None or not (_is_op(square, "Pow") and _scalar(square.inputs[1]) == 2.0
                                  or _is_op(square, "Mul") and square.inputs[0] is square.inputs[1]):
            return None
        y = square.inputs[0]
        centred = _producer(y)
        if _is_op(centred, "Sub") and _is_op(_producer(centred.inputs[1]), "ReduceMean"):
            return None   # x - mean(x): a LayerNorm (fused or reported on its own)
        add = next((u for u in mean.outputs[0].outputs if _is_op(u, "Add")), None)
        sqrt = next((u for u in add.outputs[0].outputs if _is_op(u, "Sqrt")), None) if add else None
        if sqrt is None:
            return None
        head = "Pow(x, 2)" if square.op == "Pow" else "Mul(x, x)"
        for user in sqrt.outputs[0].outputs:
            if _is_op(user, "Div") and user.inputs[0] is y:
                return f"{head} -> ReduceMean -> Add -> Sqrt -> Div"
            if _is_op(user, "Reciprocal") and any(_is_op(m, "Mul") and _other(m, user.outputs[0]) is y
                                                  for m in user.outputs[0].outputs):
                return f"{head} -> ReduceMean -> Add -> Sqrt -> Reciprocal -> Mul"
        return None


def _trimmed_shape(param, k: int) -> List[int]:
    """A parameter's shape without the leading 1s that only broadcast over the batch axes."""
    shape = list(np.shape(const_value(param)))
    while shape and shape[0] == 1 and len(shape) > k:
        shape.pop(0)
    return shape


class Splice:
    """The node list edits of many fusions, applied in one walk per graph: each chain's nodes go,
    its LayerNormalization takes the place of the chain's last node, and a Constant node whose
    output lost its last reader goes (opset.drop_orphan_constant's rule). Edited one fusion at a
    time, each walked the node list: O(nodes x chains), minutes on 100k nodes."""

    def __init__(self):
        self.owners = {}    # id(graph) -> [graph, {id(node): position}, {id(removed)}, {id(last node): new}]
        self.orphans = []   # (graph, tensor): a chain's old inputs, tested once all fusions are done

    def replace(self, owner: gs.Graph, nodes: List[gs.Node], new: gs.Node, old_inputs) -> None:
        entry = self.owners.get(id(owner))
        if entry is None:   # positions once per graph, built in C
            entry = self.owners[id(owner)] = [owner, dict(zip(map(id, owner.nodes), range(len(owner.nodes)))),
                                              set(), {}]
        _, position, removed, place = entry
        listed = [id(n) for n in nodes if id(n) in position]
        removed.update(listed)
        place[max(listed, key=position.__getitem__)] = new
        self.orphans.extend((owner, t) for t in old_inputs)

    def apply(self) -> None:
        dropped = set()
        for owner, tensor in self.orphans:
            producer = _orphan_constant(owner, tensor, self.owners[id(owner)][1])
            if producer is not None:
                producer.outputs.clear()
                dropped.add(id(producer))
        for owner, _, removed, place in self.owners.values():
            nodes = []
            for node in owner.nodes:
                if id(node) in removed:
                    if id(node) in place:
                        nodes.append(place[id(node)])
                elif id(node) not in dropped:
                    nodes.append(node)
            owner.nodes[:] = nodes
        self.owners, self.orphans = {}, []


def _orphan_constant(graph: gs.Graph, tensor, position) -> Optional[gs.Node]:
    """The Constant node of `graph` whose output `tensor` lost its last reader (and is no graph
    output), or None: opset.drop_orphan_constant's test, with the graph's node positions given."""
    if not isinstance(tensor, gs.Variable) or tensor.outputs or len(tensor.inputs) != 1:
        return None
    producer = tensor.inputs[0]
    if producer.op != "Constant" or any(t is tensor for t in graph.outputs) or id(producer) not in position:
        return None
    return producer


def fuse(chain: Chain, names: NameMaker, facts: Facts, matcher: Matcher, splice: Optional[Splice] = None) -> dict:
    """Replace the chain's nodes by one LayerNormalization; returns the change details. With
    ``splice``, the node lists are edited when the caller applies it (after all fusions)."""
    owner, x = chain.owner, chain.x
    elem = facts.elem_type(x)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
    normalized = matcher.normalized_dims(chain)
    k = len(chain.axes)
    scale = _param(chain.gamma, normalized, k, dtype, names, "scale", fill=1.0)
    bias = _param(chain.beta, normalized, k, dtype, names, "bias", fill=None)
    old_inputs = [t for n in chain.nodes for t in n.inputs]
    output = chain.output
    for node in chain.nodes:
        node.inputs.clear()
        node.outputs.clear()
    ln = gs.Node("LayerNormalization", names("LayerNormalization"),
                 attrs={"axis": chain.axes[0], "epsilon": float(chain.eps)},
                 inputs=[x, scale] + ([bias] if bias is not None else []), outputs=[output])
    own = splice is None
    splice = splice or Splice()
    splice.replace(owner, chain.nodes, ln, old_inputs)
    if own:
        splice.apply()
    return {"layernorm": ln.name, "axis": chain.axes[0], "epsilon": float(chain.eps),
            "dtype": onnx.TensorProto.DataType.Name(elem), "nodes_removed": len(chain.nodes),
            "scale": "gamma" if chain.gamma is not None else "ones",
            "bias": "beta" if chain.beta is not None else "none"}


def _param(tensor, normalized, k: int, dtype, names: NameMaker, hint: str, fill):
    """Scale/bias of exactly the normalized shape: the original tensor if it already is."""
    if tensor is None:
        if fill is None:
            return None
        return gs.Constant(names(hint), np.full(normalized, fill, dtype))
    value = const_value(tensor)
    shape = _trimmed_shape(tensor, k)
    if normalized is None or list(value.shape) == list(normalized):
        return tensor if list(value.shape) == shape else gs.Constant(names(hint), value.reshape(shape).copy())
    return gs.Constant(names(hint), np.broadcast_to(value.reshape(shape), normalized).astype(dtype).copy())


@register_pass
class FuseLayerNorm(Pass):
    info = PassInfo(
        name="fuse-layernorm",
        summary="Fuse decomposed LayerNorm chains (ReduceMean/Sub/Pow/.../Div) into LayerNormalization",
        fixes="Running layernorm after self-attention in FP16 may cause overflow. Exporting the model to the "
              "latest available ONNX opset (later than opset 17) to use the INormalizationLayer ...",
        after=("target-opset", "cast-bool"),
        remedies=(fixes_finding("layernorm-pattern", why="a fused LayerNormalization runs in FP32 internally"),),
    )

    def run(self, graph: gs.Graph) -> PassResult:
        result = PassResult()
        facts = Facts(graph)
        matcher = Matcher(facts)
        chains = self._match(graph, matcher, result)
        if not chains:
            return result
        max_opset = load_profile(self.context.target).max_opset
        if max_opset < LAYERNORM_OPSET:
            result.warn(f"{len(chains)} LayerNorm chain(s) not fused: TensorRT {self.context.target} parses "
                        f"opset {max_opset} at most, LayerNormalization needs {LAYERNORM_OPSET}")
            result.count("layernorms_skipped", len(chains))
            return result
        names = NameMaker(graph, "fuse-layernorm")
        opset = graph_opset(graph)
        if opset < LAYERNORM_OPSET:
            ok, reasons = raise_opset(graph, LAYERNORM_OPSET, names)
            if not ok:
                result.warn(f"{len(chains)} LayerNorm chain(s) not fused: opset {opset} cannot be raised to "
                            f"{LAYERNORM_OPSET}: " + "; ".join(reasons[:5])
                            + (f"; and {len(reasons) - 5} more" if len(reasons) > 5 else ""))
                result.count("layernorms_skipped", len(chains))
                return result
            result.change("raise-opset", "graph", {"from": opset, "to": LAYERNORM_OPSET})
        splice = Splice()
        for chain in chains:
            result.change("fuse", _label(chain.anchor), fuse(chain, names, facts, matcher, splice))
        splice.apply()
        result.count("layernorms_fused", len(chains))
        return result

    def _match(self, graph: gs.Graph, matcher: Matcher, result: PassResult) -> List[Chain]:
        chains: List[Chain] = []
        taken = set()    # ids of the nodes of the chains found (identity, O(1) per test)
        for owner, node in walk(graph):
            sub = matcher.mean_subtraction(node)
            if sub is not None:
                try:
                    chain = matcher.layernorm(owner, node, sub)
                except NearMiss as miss:
                    result.warn(f"LayerNorm at node '{_label(node)}' not fused: {miss}")
                    result.count("near_misses")
                    continue
                if any(id(n) in taken for n in chain.nodes):
                    continue
                taken.update(id(n) for n in chain.nodes)
                chains.append(chain)
                continue
            if node.op == "ReduceMean" and not is_default_domain(node):
                continue
            pattern = matcher.rmsnorm(node)
            if pattern:
                result.warn(f"RMSNorm-style chain at node '{_label(node)}' ({pattern}, no mean subtraction): "
                            "not fused; LayerNormalization would subtract the mean")
                result.count("rmsnorm_seen")
        return chains
