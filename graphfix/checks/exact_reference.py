"""An exact reference for models whose ONNX Runtime CPU kernels are inexact on some CPUs.

On x86 CPUs with AVX2 but without AVX-512 VNNI, ONNX Runtime's u8 x s8 integer GEMMs add pairs of
products in 16 bits (vpmaddubsw) and saturate: MatMulInteger, ConvInteger, DynamicQuantizeMatMul
and friends then give results that depend on the CPU. Models containing those ops are evaluated
with onnx's ReferenceEvaluator (exact integer arithmetic; the com.microsoft ops from exact_ops) on
every CPU, so a check never depends on the machine that runs it.
"""
from __future__ import annotations

import functools
from typing import Dict, List

import numpy as np
import onnx

from ..graph_utils import graph_protos

# (domain, op_type) of the ops whose ONNX Runtime CPU kernels saturate on some CPUs ("" = ai.onnx)
INEXACT_ON_SOME_CPUS = frozenset({
    ("", "MatMulInteger"), ("", "ConvInteger"), ("", "QLinearMatMul"), ("", "QLinearConv"),
    ("com.microsoft", "DynamicQuantizeMatMul"), ("com.microsoft", "MatMulIntegerToFloat"),
    ("com.microsoft", "DynamicQuantizeLSTM"), ("com.microsoft", "QGemm"), ("com.microsoft", "QAttention"),
    ("com.microsoft", "QLinearConv"),
})

INEXACT_NOTE = ("ONNX Runtime's integer kernels are inexact on this CPU (no AVX-512 VNNI: u8 x s8 "
                "products saturate) and the exact reference could not run the model: ")


def _domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def inexact_ops(model: onnx.ModelProto) -> List[str]:
    """Sorted op types in the model (subgraphs and functions included) that ORT may get wrong."""
    nodes = [n for g in graph_protos(model.graph) for n in g.node]
    nodes += [n for f in model.functions for n in f.node]
    return sorted({n.op_type for n in nodes if (_domain(n.domain), n.op_type) in INEXACT_ON_SOME_CPUS})


def needs_exact_reference(model: onnx.ModelProto) -> bool:
    return bool(inexact_ops(model))


class _Arg:
    """What Polygraphy reads from an onnxruntime NodeArg."""

    def __init__(self, value: onnx.ValueInfoProto):
        tt = value.type.tensor_type
        self.name = value.name
        self.type = f"tensor({onnx.TensorProto.DataType.Name(tt.elem_type).lower()})"
        self.shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                      for d in tt.shape.dim]


class ExactSession:
    """The part of onnxruntime.InferenceSession that Polygraphy's OnnxrtRunner uses, computed by
    onnx's ReferenceEvaluator. Raises at construction when the evaluator cannot load the model;
    `failure` keeps the first error of a run, so the caller can tell it from the other runner's."""

    def __init__(self, model: onnx.ModelProto):
        from onnx.reference import ReferenceEvaluator
        from .exact_ops import NEW_OPS
        from ..mapped_data import embedded_model
        from .inputs import graph_inputs
        model = embedded_model(model)   # the evaluator reads every weight; none may stay a file stub
        self._evaluator = ReferenceEvaluator(model, new_ops=list(NEW_OPS))
        self._inputs = [_Arg(v) for v in graph_inputs(model)]
        self._outputs = [_Arg(v) for v in model.graph.output]
        self.failure: Exception = None

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return self._outputs

    def run(self, output_names, feeds: Dict[str, np.ndarray]) -> list:
        names = output_names or [o.name for o in self._outputs]
        try:
            return list(self._evaluator.run(names, dict(feeds)))
        except Exception as exc:
            self.failure = self.failure or exc
            raise


def run_exact(model: onnx.ModelProto, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    session = ExactSession(model)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


# a u8 x s8 product that saturates a 16-bit pair sum: 255*127 + 255*127 = 64770 > 32767
_PROBE_A = np.array([[255, 255]], np.uint8)
_PROBE_B = np.array([[127], [127]], np.int8)
PROBE_EXACT = 64770


@functools.lru_cache(maxsize=None)
def ort_integer_kernels_exact() -> bool:
    """Whether ONNX Runtime's MatMulInteger gives the exact result of a saturating u8 x s8 case on
    this CPU (it does with AVX-512 VNNI, not with AVX2 alone)."""
    from onnx import TensorProto, helper
    from .ort import run_ort
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "gf_probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1])],
        [onnx.numpy_helper.from_array(_PROBE_B, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    try:
        return int(run_ort(model, {"a": _PROBE_A})["y"][0, 0]) == PROBE_EXACT
    except Exception:
        return False
