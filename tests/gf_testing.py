"""Helpers shared by the tests: run a pass on a model, check ONNX Runtime equivalence."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx

from graphfix.checks.inputs import concrete_shapes, value_ranges
from graphfix.checks.ort import compare_models
from graphfix.graph_utils import to_graph, to_model
from graphfix.pass_api import PassContext, PassResult
from graphfix.registry import get_pass
from graphfix.target import TrtVersion


def apply_pass(name: str, model: onnx.ModelProto, trt: str = "8.6", **context) -> Tuple[onnx.ModelProto, PassResult]:
    """Run one registered pass on a copy of `model`; returns the new model and the pass result."""
    ctx = PassContext(target=TrtVersion.parse(trt), model=model, **context)
    graph = to_graph(model)
    result = get_pass(name)(ctx).run(graph)
    return to_model(graph, model), result


def assert_equivalent(before: onnx.ModelProto, after: onnx.ModelProto, **kw) -> None:
    """ONNX Runtime gives the same outputs (per-dtype tolerances) on seeded inputs."""
    res = compare_models(before, after, **kw)
    assert res.passed, res.worst()


def assert_idempotent(name: str, model: onnx.ModelProto, trt: str = "8.6", **context) -> None:
    """A second run of the pass on its own output changes nothing."""
    once, _ = apply_pass(name, model, trt, **context)
    twice, result = apply_pass(name, once, trt, **context)
    assert not result.modified, [c.to_json() for c in result.changes]
    assert once.SerializeToString() == twice.SerializeToString()


def ops(model: onnx.ModelProto) -> list:
    return [n.op_type for n in model.graph.node]


def random_feeds(model: onnx.ModelProto, seed: int = 0, shapes: Optional[Dict] = None) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    dims = concrete_shapes(model, shapes)
    ranges = value_ranges(model)
    feeds = {}
    for inp in model.graph.input:
        if inp.name not in dims:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        lo, hi = ranges[inp.name]
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.uniform(lo, hi, dims[inp.name]).astype(dtype)
        else:
            feeds[inp.name] = rng.integers(int(lo), int(hi) + 1, dims[inp.name]).astype(dtype)
    return feeds


def elem_types(model: onnx.ModelProto) -> Dict[str, int]:
    """Element type of every tensor (strict shape inference, initializers, Constant nodes)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    for node in model.graph.node:
        if node.op_type == "Constant":
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


def added_casts(model: onnx.ModelProto) -> List[Tuple[str, str, int]]:
    """(input, output, to) of every Cast a pass added (graphfix names its nodes gf.*)."""
    return [(n.input[0], n.output[0], n.attribute[0].i) for n in model.graph.node
            if n.op_type == "Cast" and n.name.startswith("gf.")]


def readers(model: onnx.ModelProto, tensor: str) -> List[str]:
    return [n.name for n in model.graph.node if tensor in n.input]


def assert_trt_raw_fails_fixed_matches(raw, tmp_path, trt: str = "8.6"):
    """On real TensorRT: the raw model fails (parse, build or compare) and `graphfix fix`'s output
    parses, builds, runs and matches ONNX Runtime on the raw model. Returns the fix report."""
    import graphfix
    from graphfix.checks.tensorrt.trt import build_and_compare
    fixed, report = graphfix.fix(raw, trt=trt)
    raw_path, fixed_path = str(tmp_path / "raw.onnx"), str(tmp_path / "fixed.onnx")
    onnx.save(raw, raw_path)
    onnx.save(fixed, fixed_path)
    before = build_and_compare(raw_path, raw_path, progress=False)
    after = build_and_compare(raw_path, fixed_path, progress=False)
    assert not before.passed, before.summary()
    assert after.passed, after.summary() + "\n" + report.summary()
    return report
