"""Evaluating constant subgraphs in ONNX Runtime for fold-constants: batched, with failure isolation.

The nodes to evaluate are cut into independent regions (connected through the values they compute;
constant inputs are fed, so regions sharing a weight stay independent). Regions are packed into
batches of about BATCH_NODES nodes, one ONNX Runtime session per batch: one session over a whole
large model is slow to create (superlinear in ONNX Runtime 1.19 to 1.22), many tiny ones are slow
too. A batch that fails is retried region by region, and a region that fails node by node, so
one node ONNX Runtime cannot run costs only itself and the nodes that depend on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import onnx
from onnx import helper

BATCH_NODES = 1000


@dataclass
class EvalNode:
    """One node to evaluate: its position (the caller's key), its proto, its input/output names."""
    pos: int
    proto: onnx.NodeProto
    inputs: Tuple[str, ...]
    outputs: Tuple[str, ...]


@dataclass
class EvalResult:
    values: Dict[str, np.ndarray]
    failed: Dict[int, str]        # pos -> error, for nodes ONNX Runtime could not evaluate
    blocked: Dict[int, int]       # pos -> pos of the failed node it depends on


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit] + ("..." if len(text) > limit else "")


class OrtEvaluator:
    """Runs constant subgraphs in ONNX Runtime (CPU, graph optimizations off: we want the values
    the model computes, not those of ONNX Runtime's own rewrites)."""

    def __init__(self, opset_imports: Sequence[onnx.OperatorSetIdProto], ir_version: int,
                 batch_nodes: Optional[int] = None):
        self.opset_imports = list(opset_imports)
        self.ir_version = ir_version
        self.batch_nodes = batch_nodes or BATCH_NODES
        self._unusable: Optional[str] = None
        self._probed = False

    def unusable(self) -> Optional[str]:
        """Why ONNX Runtime cannot run anything for this model (import error, unsupported opset)."""
        if not self._probed:
            self._probed = True
            probe = helper.make_node("Identity", ["x"], ["y"])
            try:
                self._run([probe], {"x": np.zeros((1,), np.float32)}, ["y"])
            except Exception as exc:  # ImportError, or ONNX Runtime refusing the opset / IR version
                self._unusable = one_line(exc)
        return self._unusable

    def evaluate(self, nodes: Sequence[EvalNode], wanted: Set[str], sources: Mapping[str, np.ndarray]
                 ) -> EvalResult:
        """Values of `wanted`, computed by `nodes` (topological order) from `sources`."""
        result = EvalResult({}, {}, {})
        if not nodes:
            return result
        reason = self.unusable()
        if reason is not None:
            for node in nodes:
                result.failed[node.pos] = f"ONNX Runtime cannot run this model: {reason}"
            return result
        for batch in _batches(_regions(nodes), self.batch_nodes):
            outs = _wanted_outputs(batch, wanted)
            try:
                result.values.update(self._run_nodes(batch, outs, sources))
                continue
            except Exception:
                pass
            for region in _regions(batch) if len(batch) > 1 else [batch]:
                try:
                    result.values.update(self._run_nodes(region, _wanted_outputs(region, wanted), sources))
                except Exception:
                    self._node_by_node(region, sources, result)
        return result

    def _node_by_node(self, region: Sequence[EvalNode], sources: Mapping[str, np.ndarray],
                      result: EvalResult) -> None:
        local: Dict[str, np.ndarray] = {}
        cause: Dict[str, int] = {}            # value name -> failed node it could not be computed for
        for node in region:
            missing = [name for name in node.inputs if name and name not in sources and name not in local]
            if missing:
                root = cause.get(missing[0], -1)
                result.blocked[node.pos] = root
                cause.update({o: root for o in node.outputs if o})
                continue
            feeds = {name: local[name] if name in local else sources[name] for name in node.inputs if name}
            outs = [o for o in node.outputs if o]
            try:
                local.update(self._run([node.proto], feeds, outs))
            except Exception as exc:
                result.failed[node.pos] = one_line(exc)
                cause.update({o: node.pos for o in outs})
        result.values.update(local)

    def _run_nodes(self, nodes: Sequence[EvalNode], outputs: List[str], sources: Mapping[str, np.ndarray]
                   ) -> Dict[str, np.ndarray]:
        """Small model initializers go in as they are (no numpy round trip, no feed checks); other
        values are fed."""
        produced = {o for n in nodes for o in n.outputs}
        protos = getattr(sources, "initializer_proto", lambda name: None)
        feeds: Dict[str, np.ndarray] = {}
        inits: Dict[str, onnx.TensorProto] = {}
        for node in nodes:
            for name in node.inputs:
                if name and name not in produced and name not in feeds and name not in inits:
                    proto = protos(name)
                    if proto is not None:
                        inits[name] = proto
                    else:
                        feeds[name] = sources[name]
        return self._run([n.proto for n in nodes], feeds, outputs, list(inits.values()))

    def _run(self, protos: Sequence[onnx.NodeProto], feeds: Dict[str, np.ndarray], outputs: List[str],
             initializers: Sequence[onnx.TensorProto] = ()) -> Dict[str, np.ndarray]:
        import onnxruntime as ort

        graph = helper.make_graph([], "gf.fold-constants", [_value_info(k, v) for k, v in feeds.items()],
                                  [helper.make_value_info(o, onnx.TypeProto()) for o in outputs])
        graph.node.extend(protos)
        graph.initializer.extend(initializers)
        model = helper.make_model(graph, opset_imports=self.opset_imports)
        model.ir_version = self.ir_version
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = 4   # a failed evaluation leaves the value unfolded; ORT need not print it
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        from graphfix.checks.ort import ort_session   # weights left in the input's files, too
        sess = ort_session(model, opts)
        values = sess.run(outputs, feeds)
        out: Dict[str, np.ndarray] = {}
        for name, value in zip(outputs, values):
            if not isinstance(value, np.ndarray):
                raise TypeError(f"'{name}' is a {type(value).__name__}, not a tensor")
            out[name] = value
        return out


def _value_info(name: str, value: np.ndarray) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)


def _wanted_outputs(nodes: Sequence[EvalNode], wanted: Set[str]) -> List[str]:
    return [o for n in nodes for o in n.outputs if o and o in wanted]


def _regions(nodes: Sequence[EvalNode]) -> List[List[EvalNode]]:
    """Weakly connected components through the values the nodes compute, in topological order."""
    parent = list(range(len(nodes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    producer = {o: i for i, n in enumerate(nodes) for o in n.outputs if o}
    for i, node in enumerate(nodes):
        for name in node.inputs:
            j = producer.get(name)
            if j is not None:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: Dict[int, List[EvalNode]] = {}
    for i, node in enumerate(nodes):
        groups.setdefault(find(i), []).append(node)
    return [groups[k] for k in sorted(groups)]


def _batches(regions: List[List[EvalNode]], size: int) -> List[List[EvalNode]]:
    """Regions packed, in order, into batches of about `size` nodes (nodes keep topological order)."""
    batches: List[List[EvalNode]] = []
    current: List[EvalNode] = []
    for region in regions:
        current.extend(region)
        if len(current) >= size:
            batches.append(sorted(current, key=lambda n: n.pos))
            current = []
    if current:
        batches.append(sorted(current, key=lambda n: n.pos))
    return batches
