"""ONNX Runtime equivalence: run two models on the same seeded inputs, compare per output.

Polygraphy's runners and comparator do the work; this module chooses inputs and tolerances and
turns the comparator's result into JSON-ready figures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from ..errors import CheckError
from .inputs import graph_inputs, make_feeds

# (atol, rtol) per ONNX element type; integer and bool outputs must match exactly.
TOLERANCES = {
    onnx.TensorProto.FLOAT: (1e-4, 1e-3),
    onnx.TensorProto.DOUBLE: (1e-8, 1e-6),
    onnx.TensorProto.FLOAT16: (1e-2, 1e-2),
    onnx.TensorProto.BFLOAT16: (5e-2, 5e-2),
}
EXACT = (0.0, 0.0)


@dataclass
class OutputStats:
    name: str
    passed: bool
    atol: float
    rtol: float
    max_abs: float
    max_rel: float
    mean_abs: float

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("name", "passed", "atol", "rtol", "max_abs", "max_rel", "mean_abs")}


@dataclass
class EquivalenceResult:
    passed: bool
    outputs: List[OutputStats] = field(default_factory=list)
    error: Optional[str] = None      # the check could not run (e.g. ORT refused a model)
    # True when nothing could be compared because ORT cannot run the *reference* model (an opset
    # newer than the installed ORT knows): the rewrite is neither confirmed nor refuted
    unchecked: bool = False

    def to_json(self) -> dict:
        doc = {"passed": self.passed, "error": self.error, "outputs": [o.to_json() for o in self.outputs]}
        if self.unchecked:
            doc["unchecked"] = True
        return doc

    def worst(self) -> str:
        if self.error:
            return self.error
        bad = [o for o in self.outputs if not o.passed] or self.outputs
        if not bad:
            return "no outputs"
        o = max(bad, key=lambda s: s.max_abs)
        return f"{o.name}: max abs {o.max_abs:.3g}, max rel {o.max_rel:.3g}"


def _quiet_polygraphy():
    from polygraphy.logger import G_LOGGER
    G_LOGGER.module_severity = G_LOGGER.CRITICAL  # mismatches are reported by graphfix itself


def output_tolerances(model: onnx.ModelProto) -> Dict[str, tuple]:
    return {o.name: TOLERANCES.get(o.type.tensor_type.elem_type, EXACT) for o in model.graph.output}


def run_ort(model: onnx.ModelProto, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Run a model once in ONNX Runtime (CPU, all optimizations off: we test the graph, not ORT)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def compare_models(reference: onnx.ModelProto, candidate: onnx.ModelProto, *, seed: int = 1,
                   iterations: int = 1, shapes: Optional[Dict[str, Sequence[int]]] = None,
                   tolerance: Optional[Tuple[float, float]] = None) -> EquivalenceResult:
    """Both models on the same seeded inputs in ONNX Runtime; per-output error figures.

    ``tolerance``: (atol, rtol) for floating outputs instead of the per-dtype defaults."""
    _quiet_polygraphy()
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator

    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
        raise CheckError(f"onnxruntime is not importable: {exc}") from None

    ort.set_default_logger_severity(3)  # ORT's own warnings (unused initializers) are noise here

    def runner(model, name):
        sess = SessionFromOnnx(model.SerializeToString(), providers=["CPUExecutionProvider"],
                               graph_optimization_level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        return OnnxrtRunner(sess, name=name)

    from ..model_io import over_protobuf_limit
    if over_protobuf_limit(reference) or over_protobuf_limit(candidate):   # before any copy
        return EquivalenceResult(False, error=TOO_BIG, unchecked=True)
    reference, candidate = runnable_copy(reference), runnable_copy(candidate)
    if not ort_can_load(reference):
        return EquivalenceResult(False, error=REFERENCE_NOT_RUNNABLE + _load_error(reference), unchecked=True)
    not_tensors = [v.name for v in graph_inputs(reference) + list(reference.graph.output)
                   if v.type.WhichOneof("value") != "tensor_type"]
    if not_tensors:   # optional/sequence values: the seeded inputs and the comparator are for tensors
        return EquivalenceResult(False, error=NON_TENSOR_IO + ", ".join(not_tensors), unchecked=True)
    tolerances = output_tolerances(reference)
    if tolerance is not None:
        tolerances = {k: (v if v == EXACT else tuple(tolerance)) for k, v in tolerances.items()}
    loader = make_feeds(reference, seed=seed, iterations=iterations, shapes=shapes)
    try:
        results = Comparator.run([runner(reference, "reference"), runner(candidate, "candidate")],
                                 data_loader=loader)
    except Exception as exc:
        return EquivalenceResult(False, error=f"ONNX Runtime could not run the models: {_one_line(exc)}")
    try:
        stats = accuracy_stats(results, tolerances)
    except Exception as exc:
        return EquivalenceResult(False, error=f"comparison failed: {_one_line(exc)}")
    missing = [o.name for o in reference.graph.output if o.name not in stats]
    if missing:
        return EquivalenceResult(False, list(stats.values()), error=f"outputs not compared: {missing}")
    outs = [stats[o.name] for o in reference.graph.output]
    return EquivalenceResult(all(o.passed for o in outs), outs)


def accuracy_stats(results, tolerances: Dict[str, Tuple[float, float]]) -> Dict[str, "OutputStats"]:
    """Polygraphy's comparison of the two runners in `results` (RunResults), with (atol, rtol) per
    output; per output the worst figures over all iterations. Used by the ONNX Runtime check and by
    the TensorRT check alike."""
    from polygraphy import comparator as pg_comparator
    from polygraphy.comparator import Comparator

    # SimpleCompareFunc replaced CompareFunc.simple (deprecated) in newer Polygraphy releases
    simple = getattr(pg_comparator, "SimpleCompareFunc", None) or pg_comparator.CompareFunc.simple
    compare = simple(atol={k: v[0] for k, v in tolerances.items()},
                     rtol={k: v[1] for k, v in tolerances.items()},
                     check_shapes=True, infinities_compare_equal=True)
    accuracy = Comparator.compare_accuracy(results, compare_func=compare)
    if not hasattr(accuracy, "items"):  # Polygraphy >= 0.50: a list, one result per compare func
        accuracy = accuracy[0]
    stats: Dict[str, OutputStats] = {}
    for iteration in next(iter(accuracy.values())):
        for name, res in iteration.items():
            atol, rtol = tolerances.get(name, EXACT)
            passed = bool(res)
            if hasattr(res, "max_absdiff"):
                cur = OutputStats(name, passed, atol, rtol, float(res.max_absdiff or 0.0),
                                  float(res.max_reldiff or 0.0), float(res.mean_absdiff or 0.0))
            else:  # Polygraphy gives a bare False when shapes differ: no error figures exist
                cur = OutputStats(name, passed, atol, rtol, float("inf"), float("inf"), float("inf"))
            prev = stats.get(name)
            if prev is not None:
                cur = OutputStats(name, prev.passed and passed, atol, rtol, max(prev.max_abs, cur.max_abs),
                                  max(prev.max_rel, cur.max_rel), max(prev.mean_abs, cur.mean_abs))
            stats[name] = cur
    return stats


REFERENCE_NOT_RUNNABLE = "unchecked: the installed ONNX Runtime cannot run the model before the rewrite: "
TOO_BIG = ("unchecked: the model is over protobuf's 2 GiB limit, and graphfix hands ONNX Runtime "
           "serialized models")
NON_TENSOR_IO = "unchecked: graph inputs/outputs that are not tensors (optional, sequence) cannot be compared: "


def runnable_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with what ONNX Runtime refuses but which does not change what it computes made
    acceptable: repeated node names made unique, an IR version newer than ours lowered."""
    from ..graph_utils import OUTPUT_IR_VERSION
    names = [n.name for n in model.graph.node]
    unique = len(set(names)) == len(names)
    if unique and model.ir_version <= OUTPUT_IR_VERSION:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.ir_version = min(copy.ir_version, OUTPUT_IR_VERSION)
    if not unique:
        for i, node in enumerate(copy.graph.node):
            node.name = f"gf.check.{i}"
    return copy


def _session(model: onnx.ModelProto):
    """A CPU session as the comparison runs it: graph optimizations off (ORT's own fusions, such as
    its LayerNorm fusion on FP16 chains, can refuse a valid model that it runs unoptimized)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _load_error(model: onnx.ModelProto) -> str:
    from ..model_io import over_protobuf_limit
    if over_protobuf_limit(model):
        return TOO_BIG
    try:
        _session(model)
    except Exception as exc:
        return _one_line(exc)
    return "?"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:400] + ("..." if len(text) > 400 else "")


def ort_can_load(model: onnx.ModelProto) -> bool:
    """Whether ONNX Runtime accepts the model at all (plugin ops make it refuse)."""
    from ..model_io import over_protobuf_limit
    if over_protobuf_limit(model):   # serializing would fail only after encoding 2 GiB
        return False
    try:
        _session(model)
        return True
    except Exception:
        return False
