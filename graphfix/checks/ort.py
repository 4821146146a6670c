"""ONNX Runtime equivalence: run two models on the same seeded inputs, compare per output.

Polygraphy's runners and comparator do the work; this module chooses inputs and tolerances and
turns the comparator's result into JSON-ready figures. A model with ops whose ONNX Runtime CPU
kernels are inexact on some CPUs (integer GEMMs) is run by an exact reference instead, on every CPU
(see exact_reference).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from ..errors import CheckError
from .exact_reference import (INEXACT_NOTE, ExactSession, needs_exact_reference, ort_integer_kernels_exact,
                              run_exact)
from .inputs import graph_inputs

# (atol, rtol) per ONNX element type; integer and bool outputs must match exactly.
TOLERANCES = {
    onnx.TensorProto.FLOAT: (1e-4, 1e-3),
    onnx.TensorProto.DOUBLE: (1e-8, 1e-6),
    onnx.TensorProto.FLOAT16: (1e-2, 1e-2),
    onnx.TensorProto.BFLOAT16: (5e-2, 5e-2),
}
EXACT = (0.0, 0.0)
EXACT_EVALUATOR = "onnx-reference"   # onnx.reference.ReferenceEvaluator with exact_ops


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
class ModelRun:
    """One model's outputs on a list of feeds as a check computed them, for a later comparison on
    exactly those feeds to reuse instead of running the model again (one run per model state)."""
    results: list                    # Polygraphy IterationResults, one per feed
    evaluator: str                   # EXACT_EVALUATOR or "onnxruntime"
    unusable: Optional[str] = None   # why the exact reference could not run it (ONNX Runtime did)


@dataclass
class EquivalenceResult:
    passed: bool
    outputs: List[OutputStats] = field(default_factory=list)
    error: Optional[str] = None      # the check could not run (e.g. ORT refused a model)
    # True when nothing could be compared because ORT cannot run the *reference* model (an opset
    # newer than the installed ORT knows): the rewrite is neither confirmed nor refuted
    unchecked: bool = False
    # what computed each side ("reference"/"candidate" -> EXACT_EVALUATOR or "onnxruntime")
    evaluators: Dict[str, str] = field(default_factory=dict)
    note: Optional[str] = None       # how the check ran where it is not plain (BF16 emulated, CPU-dependent ORT)
    # "reference"/"candidate" -> its ModelRun, for the sides that ran as they are (not the candidate
    # with casts at its I/O or BF16 emulated); not part of the JSON
    runs: Dict[str, ModelRun] = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> dict:
        doc = {"passed": self.passed, "error": self.error, "outputs": [o.to_json() for o in self.outputs]}
        if self.unchecked:
            doc["unchecked"] = True
        if EXACT_EVALUATOR in self.evaluators.values() or self.note:
            doc["evaluators"] = dict(self.evaluators)
        if self.note:
            doc["note"] = self.note
        return doc

    def worst(self) -> str:
        if self.error:
            return self.error + (f" ({self.note})" if self.note else "")
        bad = [o for o in self.outputs if not o.passed] or self.outputs
        if not bad:
            return "no outputs"
        o = max(bad, key=lambda s: s.max_abs)
        return f"{o.name}: max abs {o.max_abs:.3g}, max rel {o.max_rel:.3g}" + (f" ({self.note})" if self.note else "")


def _quiet_polygraphy():
    from polygraphy.logger import G_LOGGER
    G_LOGGER.module_severity = G_LOGGER.CRITICAL  # mismatches are reported by graphfix itself


def output_tolerances(model: onnx.ModelProto) -> Dict[str, tuple]:
    return {o.name: TOLERANCES.get(o.type.tensor_type.elem_type, EXACT) for o in model.graph.output}


def run_ort(model: onnx.ModelProto, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Run a model once in ONNX Runtime (CPU, all optimizations off: we test the graph, not ORT)."""
    sess = _session(model)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def compare_models(reference: onnx.ModelProto, candidate: onnx.ModelProto, *, seed: int = 1,
                   iterations: int = 1, shapes: Optional[Dict[str, Sequence[int]]] = None,
                   tolerance: Optional[Tuple[float, float]] = None, inputs=None,
                   feeds: Optional[List[Dict[str, np.ndarray]]] = None,
                   known: Optional[Dict[str, ModelRun]] = None) -> EquivalenceResult:
    """Both models on the same seeded inputs in ONNX Runtime; per-output error figures.

    ``tolerance``: (atol, rtol) for floating outputs instead of the per-dtype defaults.
    ``shapes`` (per input or per dim symbol) and ``inputs`` (given values) shape the inputs, which
    are chosen so that the reference runs (checks.input_search); ``feeds`` gives them ready-made.
    When the reference cannot run on any of them, the result is unchecked, never a failure.
    ``known``: "reference"/"candidate" -> that model's ModelRun on exactly these ``feeds`` (an earlier
    result's ``runs``): that side is not run again. Only used together with ``feeds``."""
    _quiet_polygraphy()
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.comparator import Comparator

    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
        raise CheckError(f"onnxruntime is not importable: {exc}") from None

    ort.set_default_logger_severity(3)  # ORT's own warnings (unused initializers) are noise here
    exact: Dict[str, ExactSession] = {}
    unusable: Dict[str, str] = {}     # runner name -> why the exact reference could not run it

    def runner(model, name):
        if needs_exact_reference(model) and name not in unusable:
            try:
                exact[name] = ExactSession(model)
                return OnnxrtRunner(exact[name], name=name)
            except Exception as exc:
                unusable[name] = _one_line(exc)
        exact.pop(name, None)
        # our own session (optimizations off) rather than SessionFromOnnx, which takes
        # graph_optimization_level only in Polygraphy releases after 0.49.0; made when the runner
        # activates, so that one session at a time is alive (the comparator runs one after the other)
        return OnnxrtRunner(lambda: sessions.pop(name, None) or _session(model), name=name)

    def run_both():
        from polygraphy.comparator import RunResults
        models = [(reference, "reference"), (candidate, "candidate")]
        to_run = [runner(m, name) for m, name in models if name not in known]
        fresh = dict(Comparator.run(to_run, data_loader=feeds).items()) if to_run else {}
        results = RunResults()
        for _, name in models:
            results.append((name, _owned(known[name].results) if name in known else fresh[name]))
        return results

    known = dict(known or {}) if feeds is not None else {}
    sides = [m for m, name in ((reference, "reference"), (candidate, "candidate")) if name not in known]
    if any(too_big_for_ort(m) for m in sides):   # before any copy (a side that ran is under it)
        return EquivalenceResult(False, error=TOO_BIG, unchecked=True)
    reference, as_is = runnable_copy(reference), runnable_copy(candidate)
    candidate = with_reference_float_io(reference, as_is)
    note = None
    from .emulate import emulate_bf16, has_bf16
    if "candidate" not in known and has_bf16(candidate) and not ort_can_load(candidate):   # no BF16 CPU kernels
        candidate, note = emulate_bf16(candidate), "BF16 emulated: FP32 arithmetic, BF16 storage"
    if candidate is not as_is:    # outputs of the candidate as it is do not stand for this one
        known.pop("candidate", None)
    sessions = {}     # the reference's session, made once to learn whether ORT loads it at all
    if "reference" not in known:
        try:
            sessions["reference"] = _session(reference)
        except Exception as exc:
            return EquivalenceResult(False, error=REFERENCE_NOT_RUNNABLE + _one_line(exc), unchecked=True)
    not_tensors = [v.name for v in graph_inputs(reference) + list(reference.graph.output)
                   if v.type.WhichOneof("value") != "tensor_type"]
    if not_tensors:   # optional/sequence values: the seeded inputs and the comparator are for tensors
        return EquivalenceResult(False, error=NON_TENSOR_IO + ", ".join(not_tensors), unchecked=True)
    tolerances = output_tolerances(reference)
    if tolerance is not None:
        tolerances = {k: (v if v == EXACT else tuple(tolerance)) for k, v in tolerances.items()}
    if feeds is None:
        from .input_search import choose_inputs
        choice = choose_inputs(reference, shapes=shapes, values=inputs, seed=seed, iterations=iterations)
        if not choice.runnable:
            return EquivalenceResult(False, error="unchecked: " + choice.explain(), unchecked=True)
        feeds = choice.feeds
    unusable.update({name: run.unusable for name, run in known.items() if run.unusable})
    try:
        while True:
            try:
                results = run_both()
                break
            except Exception:
                failed = {name: _one_line(sess.failure) for name, sess in exact.items() if sess.failure}
                if not failed:
                    raise
                unusable.update(failed)  # the exact reference failed at run time: ORT runs that side
    except Exception as exc:
        return _result(False, exact, unusable, error=f"ONNX Runtime could not run the models: {_one_line(exc)}",
                       note=note, known=known)
    ran = dict(results.items())
    runs = {name: known.get(name) or ModelRun(_owned(ran[name]), EXACT_EVALUATOR if name in exact else "onnxruntime",
                                              unusable.get(name))
            for name in ("reference", "candidate") if name != "candidate" or candidate is as_is}
    try:
        stats = accuracy_stats(results, tolerances)
    except Exception as exc:
        return _result(False, exact, unusable, error=f"comparison failed: {_one_line(exc)}", note=note, known=known,
                       runs=runs)
    missing = [o.name for o in reference.graph.output if o.name not in stats]
    if missing:
        return _result(False, exact, unusable, list(stats.values()), error=f"outputs not compared: {missing}",
                       note=note, known=known, runs=runs)
    outs = [stats[o.name] for o in reference.graph.output]
    return _result(all(o.passed for o in outs), exact, unusable, outs, note=note, known=known, runs=runs)


def _result(passed: bool, exact: dict, unusable: Dict[str, str], outputs=(), error=None,
            note: Optional[str] = None, known=None, runs=None) -> EquivalenceResult:
    """The result, saying which side the exact reference computed and, where ONNX Runtime ran a
    model it may get wrong on this CPU, why (after ``note``, how the check ran otherwise).
    ``known``: the sides whose outputs an earlier check computed; ``runs``: the sides to keep."""
    evaluators = {name: (known or {})[name].evaluator if name in (known or {}) else
                  EXACT_EVALUATOR if name in exact else "onnxruntime" for name in ("reference", "candidate")}
    if unusable and not ort_integer_kernels_exact():
        inexact = INEXACT_NOTE + "; ".join(f"{name}: {why}" for name, why in sorted(unusable.items()))
        note = f"{note}; {inexact}" if note else inexact
    return EquivalenceResult(passed, list(outputs), error=error, evaluators=evaluators, note=note,
                             runs=dict(runs or {}))


def run_reference(model: onnx.ModelProto, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """A model's outputs as the equivalence check computes them: by the exact reference where ONNX
    Runtime's kernels are inexact on some CPUs and the reference can run the model, else by ORT."""
    if needs_exact_reference(model):
        try:
            return run_exact(model, feeds)
        except Exception:
            pass        # like compare_models: ONNX Runtime runs what the exact reference cannot
    return run_ort(model, feeds)


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
           "serialized models (only a model given by its path, with its weights in external data, "
           "keeps them in their files for ONNX Runtime to read)")
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


_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE)


def with_reference_float_io(reference: onnx.ModelProto, candidate: onnx.ModelProto) -> onnx.ModelProto:
    """The candidate with Casts at graph inputs/outputs whose float type differs from the reference's
    (a precision rewrite asked to change I/O types), so both take the same feeds and give outputs
    of the same type; other models are returned as they are."""
    ref_types = {v.name: v.type.tensor_type.elem_type for v in list(graph_inputs(reference)) + list(reference.graph.output)}
    differ = {v.name for v in list(graph_inputs(candidate)) + list(candidate.graph.output)
              if v.name in ref_types and v.type.tensor_type.elem_type in _FLOATS and ref_types[v.name] in _FLOATS
              and ref_types[v.name] != v.type.tensor_type.elem_type}
    if not differ:
        return candidate
    copy = onnx.ModelProto()
    copy.CopyFrom(candidate)
    differs = [v for v in list(graph_inputs(copy)) + list(copy.graph.output) if v.name in differ]
    g, first, last = copy.graph, [], []
    in_names = {v.name for v in graph_inputs(copy)}
    for v in differs:
        inner, want = f"{v.name}.gf_check", ref_types[v.name]
        if v.name in in_names:     # fed the reference type, cast to what the candidate reads
            for node in g.node:
                node.input[:] = [inner if x == v.name else x for x in node.input]
            first.append(onnx.helper.make_node("Cast", [v.name], [inner], to=v.type.tensor_type.elem_type))
        else:                      # cast to the reference's output type
            for node in g.node:
                node.output[:] = [inner if x == v.name else x for x in node.output]
                node.input[:] = [inner if x == v.name else x for x in node.input]
            last.append(onnx.helper.make_node("Cast", [inner], [v.name], to=want))
        v.type.tensor_type.elem_type = want
    nodes = first + list(g.node) + last       # still in topological order
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    return copy


def _owned(results: list) -> list:
    """Copies of the runs' outputs, kept for reuse: Polygraphy 0.48's comparison changes the arrays
    it is given in place (measured: zeros became 2.2e-16), so what it compared is not kept."""
    from polygraphy.comparator.struct import IterationResult
    return [IterationResult({name: np.array(value, copy=True) for name, value in iteration.items()},
                            runner_name=iteration.runner_name) for iteration in results]


def _session(model: onnx.ModelProto):
    """A CPU session as the comparison runs it: graph optimizations off (ORT's own fusions, such as
    its LayerNorm fusion on FP16 chains, can refuse a valid model that it runs unoptimized)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 4   # a failed run is an exception graphfix reports; ORT's own line is noise
    return ort_session(model, opts)


def ort_session(model: onnx.ModelProto, opts):
    """A CPU InferenceSession of `model` with the SessionOptions `opts`. Weights that stayed in the
    input's files (graphfix/mapped_data.py) are not copied: ONNX Runtime reads them from the
    validated files, mapped read-only, and does not pre-pack them (a packed copy of every MatMul
    weight). Over 2 GiB of weights works so too: only the graph is serialized."""
    import onnxruntime as ort
    from ..mapped_data import embedded_model, ort_view
    view = ort_view(model) if ort_reads_folder() else None
    if view is None:   # (an older ONNX Runtime would look for the files in the current directory)
        return ort.InferenceSession(embedded_model(model).SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
    proto, folder = view
    opts.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
    opts.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_reads_folder() -> bool:
    """Whether ONNX Runtime resolves external data of a model given as bytes in the folder named by
    session.model_external_initializers_file_folder_path (1.21 and newer, onnxruntime PR 23557)."""
    import onnxruntime as ort
    try:
        return tuple(int(p) for p in ort.__version__.split(".")[:2]) >= (1, 21)
    except ValueError:
        return True


def too_big_for_ort(model: onnx.ModelProto) -> bool:
    """Whether what graphfix serializes for ONNX Runtime (all but the weights left in the input's
    files) is over protobuf's limit; estimated without encoding the weights."""
    from .. import weights
    from ..mapped_data import mapped_bytes
    return weights.approx_byte_size(model) - (mapped_bytes(model) if ort_reads_folder() else 0) \
        > weights.PROTOBUF_LIMIT


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:400] + ("..." if len(text) > 400 else "")


def load_error(model: onnx.ModelProto) -> Optional[str]:
    """Why ONNX Runtime refuses the model (plugin ops make it refuse), or None when it loads it."""
    if too_big_for_ort(model):   # serializing would fail only after encoding 2 GiB
        return TOO_BIG
    try:
        _session(model)
        return None
    except Exception as exc:
        return _one_line(exc)


def ort_can_load(model: onnx.ModelProto) -> bool:
    """Whether ONNX Runtime accepts the model at all."""
    return load_error(model) is None
