"""Integer and dynamically quantized ops -> float ops with dequantized weights.

TensorRT imports none of ConvInteger, MatMulInteger, DynamicQuantizeLinear, and ONNX Runtime's
DynamicQuantizeMatMul / DynamicQuantizeLSTM (com.microsoft): its INT8 path wants Q/DQ pairs with
static scales. What ``onnxruntime.quantization.quantize_dynamic`` writes becomes float again:

    x -> DynamicQuantizeLinear -> MatMulInteger(xq, Wq, x_zp, W_zp) -> Cast(float) -> Mul(x_scale * W_scale)
      ==>  x -> MatMul(x, (Wq - W_zp) * W_scale)                                 (same for ConvInteger/Conv)
    DynamicQuantizeMatMul(A, Bq, b_scale, b_zp, bias)  ==>  MatMul(A, dequantized B) (+ bias)
    DynamicQuantizeLSTM(X, Wq, Rq, ..., scales, zps)   ==>  LSTM(X, dequantized W^T, R^T, ...)

Mode ``PassContext.options["dequantize"]``:
- "exact" (default): the dynamic activation quantization is kept as float ops (ReduceMin/ReduceMax,
  Div, Round, Clip: x -> (q - zp) * scale) in front of the float MatMul/Conv, so the result matches
  ONNX Runtime on the quantized model to float rounding (the model keeps its meaning).
- "float": activations stay float. The result differs from the quantized model by the activation
  quantization error (ONNX Runtime re-quantizes activations on every call) and is closer to the
  float model the quantized one came from; the graph is smaller (no per-call range reduction).
DynamicQuantizeLSTM quantizes its hidden state inside the loop, which no float LSTM reproduces: it
is always rewritten in float mode. Inexact rewrites declare ``quantization_tolerance()`` for their
ONNX Runtime check.

An integer op whose input is not dynamically quantized (e.g. a uint8 graph input) becomes
Cast -> float MatMul/Conv -> Cast(int32) when every integer sum fits float32's 24-bit mantissa,
which makes it exact.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx

from .build import remove_nodes
from .patterns import const, is_graph_output, only_consumer, optional_input, producer, used
from .registry import register_rule
from .rule import DECOMPOSE, Match, NearMiss, Rule

MS = "com.microsoft"
FLOAT_MODE, EXACT_MODE = "float", "exact"
EXACT_INT_LIMIT = 2 ** 24      # float32 represents every integer below this exactly
_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def mode(ctx) -> str:
    m = ctx.options.get("dequantize", EXACT_MODE)
    return m if m in (FLOAT_MODE, EXACT_MODE) else EXACT_MODE


def _per_axis(v: np.ndarray, n: int, what: str) -> np.ndarray:
    """Scalar or [n] -> [n] (float64)."""
    flat = np.asarray(v, dtype=np.float64).reshape(-1)
    if flat.size == 1:
        return np.full((n,), flat[0])
    if flat.size == n:
        return flat
    raise ValueError(f"{what} has {flat.size} values, expected 1 or {n}")


def dequantize_columns(q: np.ndarray, zp, scale, axis: int) -> np.ndarray:
    """(q - zp) * scale with zp/scale per-tensor or per-slice along `axis`; float32."""
    n = q.shape[axis]
    shape = [1] * q.ndim
    shape[axis] = n
    z = _per_axis(zp if zp is not None else 0, n, "zero point").reshape(shape)
    s = _per_axis(scale, n, "scale").reshape(shape)
    return ((q.astype(np.float64) - z) * s).astype(np.float32)


def fake_quant(build, x):
    """ONNX DynamicQuantizeLinear's round trip in float ops: (saturate(round(x/s) + zp) - zp) * s."""
    key = f"fq:{x.name}"
    if key in build.memo:
        return build.memo[key]
    f32 = np.float32
    c = lambda v, h: build.const(np.array(v, f32), h)  # noqa: E731
    lo = build.op("Min", build.op("ReduceMin", x, attrs={"keepdims": 0}, dtype=f32), c(0.0, "zero"), dtype=f32)
    hi = build.op("Max", build.op("ReduceMax", x, attrs={"keepdims": 0}, dtype=f32), c(0.0, "zero"), dtype=f32)
    scale = build.op("Div", build.op("Sub", hi, lo, dtype=f32), c(255.0, "qrange"), dtype=f32)
    # an all-zero x has scale 0: divide by the smallest normal instead (q = zp, result 0)
    safe = build.op("Max", scale, c(np.finfo(f32).tiny, "tiny"), dtype=f32)
    zp = build.op("Clip", build.op("Round", build.op("Div", build.op("Neg", lo, dtype=f32), safe, dtype=f32),
                                   dtype=f32), c(0.0, "qmin"), c(255.0, "qmax"), dtype=f32)
    q = build.op("Clip", build.op("Add", build.op("Round", build.op("Div", x, safe, dtype=f32), dtype=f32), zp,
                                  dtype=f32), c(0.0, "qmin"), c(255.0, "qmax"), dtype=f32)
    y = build.op("Mul", build.op("Sub", q, zp, dtype=f32), scale, dtype=f32, shape=x.shape)
    build.memo[key] = y
    return y


def _drop_if_unused(graph, nodes) -> None:
    for n in nodes:
        if n is not None and n.outputs and not any(used(graph, t) for t in n.outputs):
            remove_nodes(graph, [n])


class _QuantDecompose(Rule):
    kind = DECOMPOSE
    family = "quantized"


class _IntegerChain(_QuantDecompose):
    """MatMulInteger / ConvInteger, alone or in quantize_dynamic's chain."""
    float_op = ""
    weight_axis = 0          # axis of the weight that the per-channel scale/zero point runs along

    def match(self, graph, node, ctx):
        a, b = node.inputs[0], node.inputs[1]
        a_zp, b_zp = optional_input(node, 2), optional_input(node, 3)
        wq = const(b)
        if wq is None:
            return NearMiss(node.name, "the integer weight is not a constant")
        wzp = const(b_zp) if b_zp is not None else np.zeros((), wq.dtype)
        if wzp is None:
            return NearMiss(node.name, "the weight zero point is not a constant")
        if self.float_op == "MatMul" and wq.ndim != 2:
            return NearMiss(node.name, f"weight has rank {wq.ndim}; only 2-D weights are rewritten")
        dql = producer(a)
        if dql is not None and dql.op == "DynamicQuantizeLinear":
            return self._match_chain(graph, node, dql, a_zp, wq, wzp, ctx)
        return self._match_alone(graph, node, a, a_zp, wq, wzp)

    def _match_chain(self, graph, node, dql, a_zp, wq, wzp, ctx):
        if a_zp is None or a_zp is not dql.outputs[2]:
            return NearMiss(node.name, "activation zero point is not DynamicQuantizeLinear's")
        cast = only_consumer(node.outputs[0])
        if cast is None or cast.op != "Cast" or cast.attrs.get("to") != onnx.TensorProto.FLOAT:
            return NearMiss(node.name, "the int32 result is not cast to float by its only consumer")
        mul = only_consumer(cast.outputs[0])
        if mul is None or mul.op != "Mul":
            return NearMiss(node.name, "the float result is not rescaled by a Mul")
        combined = [t for t in mul.inputs if t is not cast.outputs[0]]
        smul = producer(combined[0]) if len(combined) == 1 else None
        if smul is None or smul.op != "Mul" or not any(t is dql.outputs[1] for t in smul.inputs):
            return NearMiss(node.name, "the rescale is not Mul(activation scale, weight scale)")
        ws = [const(t) for t in smul.inputs if t is not dql.outputs[1]]
        if len(ws) != 1 or ws[0] is None:
            return NearMiss(node.name, "the weight scale is not a constant")
        try:
            w = self._dequantize(wq, wzp, self._channel_scale(ws[0], wq))
        except ValueError as exc:
            return NearMiss(node.name, str(exc))
        return Match(anchor=node.name, nodes=[node, cast, mul], outputs=[mul.outputs[0]],
                     inputs=[dql.inputs[0]], details={"mode": mode(ctx), "exact": mode(ctx) == EXACT_MODE,
                                                      "weight": list(wq.shape)},
                     data={"weight": w, "attrs": dict(node.attrs), "cleanup": [smul, dql]})

    def _match_alone(self, graph, node, a, a_zp, wq, wzp):
        azp = const(a_zp) if a_zp is not None else np.zeros(())
        if azp is None:
            return NearMiss(node.name, "the activation zero point is not a constant")
        if azp.size != 1:
            return NearMiss(node.name, "per-row activation zero points are not rewritten")
        w = self._dequantize(wq, wzp, np.ones(()))
        k = int(np.prod(wq.shape[1:])) if self.float_op == "Conv" else int(wq.shape[0])
        bound = k * 255.0 * float(np.abs(w).max(initial=0.0))
        if bound >= EXACT_INT_LIMIT:
            return NearMiss(node.name, f"integer sums reach {bound:.3g} >= 2^24: float32 would round them")
        return Match(anchor=node.name, nodes=[node], inputs=[a], outputs=[node.outputs[0]],
                     details={"mode": "integer", "exact": True, "weight": list(wq.shape)},
                     data={"weight": w, "attrs": dict(node.attrs), "a_zp": float(azp.reshape(()))})

    def _channel_scale(self, ws: np.ndarray, wq: np.ndarray) -> np.ndarray:
        return ws

    def _dequantize(self, wq, wzp, ws) -> np.ndarray:
        return dequantize_columns(wq, wzp, ws, self.weight_axis)

    def rewrite(self, graph, match, build):
        out = match.outputs[0]
        x = match.inputs[0]
        attrs = {k: v for k, v in match.data["attrs"].items() if k in _CONV_ATTRS}
        remove_nodes(graph, match.nodes)
        weight = build.const(match.data["weight"], "weight")
        if "a_zp" in match.data:     # integer op alone: exact integer arithmetic in float32
            xf = build.op("Cast", x, attrs={"to": onnx.TensorProto.FLOAT}, dtype=np.float32)
            if match.data["a_zp"]:
                xf = build.op("Sub", xf, build.const(np.array(match.data["a_zp"], np.float32), "a_zp"), dtype=np.float32)
            y = build.op(self.float_op, xf, weight, attrs=attrs, dtype=np.float32)
            build.node("Cast", [y], outputs=[out], attrs={"to": onnx.TensorProto.INT32})
            return {}
        if mode(build.ctx) == EXACT_MODE:
            x = fake_quant(build, x)
        build.node(self.float_op, [x, weight], outputs=[out], attrs=attrs)
        _drop_if_unused(graph, match.data["cleanup"])
        return {}


@register_rule
class MatMulIntegerToFloat(_IntegerChain):
    name = "matmul-integer"
    summary = "MatMulInteger (with its DynamicQuantizeLinear/Cast/Mul chain) -> float MatMul"
    anchor_ops = ("MatMulInteger",)
    float_op = "MatMul"
    weight_axis = 1          # per-column


@register_rule
class ConvIntegerToFloat(_IntegerChain):
    name = "conv-integer"
    summary = "ConvInteger (with its DynamicQuantizeLinear/Cast/Mul chain) -> float Conv"
    anchor_ops = ("ConvInteger",)
    float_op = "Conv"
    weight_axis = 0          # per output channel

    def _channel_scale(self, ws, wq):
        """Scalar, or a per-channel scale shaped to broadcast along the output's channel axis."""
        if ws.size == 1:
            return ws
        m = wq.shape[0]
        if ws.size == m and (ws.shape in ((m, 1, 1), (1, m, 1, 1)) or (ws.ndim >= 1 and ws.shape[-3:] == (m, 1, 1))):
            return ws.reshape(-1)
        raise ValueError(f"weight scale of shape {list(ws.shape)} does not run along the output channels")


@register_rule
class DynamicQuantizeMatMulToFloat(_QuantDecompose):
    name = "dynamic-quantize-matmul"
    summary = "com.microsoft DynamicQuantizeMatMul -> float MatMul (+ bias)"
    anchor_ops = ("DynamicQuantizeMatMul",)
    anchor_domain = MS

    def match(self, graph, node, ctx):
        a, b, scale = node.inputs[:3]
        wq, ws = const(b), const(scale)
        b_zp = optional_input(node, 3)
        wzp = const(b_zp) if b_zp is not None else np.zeros(())
        if wq is None or ws is None or wzp is None:
            return NearMiss(node.name, "B, b_scale and b_zero_point must be constants")
        if wq.ndim != 2:
            return NearMiss(node.name, f"B has rank {wq.ndim}; only 2-D weights are rewritten")
        try:
            w = dequantize_columns(wq, wzp, ws, 1)
        except ValueError as exc:
            return NearMiss(node.name, str(exc))
        return Match(anchor=node.name, nodes=[node], inputs=[a], outputs=[node.outputs[0]],
                     details={"mode": mode(ctx), "exact": mode(ctx) == EXACT_MODE, "weight": list(wq.shape)},
                     data={"weight": w, "bias": optional_input(node, 4)})

    def rewrite(self, graph, match, build):
        out, x, bias = match.outputs[0], match.inputs[0], match.data["bias"]
        remove_nodes(graph, match.nodes)
        if mode(build.ctx) == EXACT_MODE:
            x = fake_quant(build, x)
        weight = build.const(match.data["weight"], "weight")
        if bias is None:
            build.node("MatMul", [x, weight], outputs=[out])
        else:
            build.node("Add", [build.op("MatMul", x, weight, dtype=np.float32), bias], outputs=[out])
        return {"bias": bias is not None}


@register_rule
class DynamicQuantizeLstmToFloat(_QuantDecompose):
    name = "dynamic-quantize-lstm"
    summary = "com.microsoft DynamicQuantizeLSTM -> float LSTM with dequantized, transposed W and R"
    anchor_ops = ("DynamicQuantizeLSTM",)
    anchor_domain = MS

    def match(self, graph, node, ctx):
        if len(node.inputs) < 12:
            return NearMiss(node.name, "expected 12 inputs (X, W, R, B, ..., W/R scales and zero points)")
        values = {k: const(node.inputs[i]) for k, i in (("W", 1), ("R", 2), ("ws", 8), ("wz", 9), ("rs", 10),
                                                        ("rz", 11))}
        missing = [k for k, v in values.items() if v is None]
        if missing:
            return NearMiss(node.name, f"not constants: {', '.join(missing)}")
        try:
            w = self._deq(values["W"], values["wz"], values["ws"])
            r = self._deq(values["R"], values["rz"], values["rs"])
        except ValueError as exc:
            return NearMiss(node.name, str(exc))
        return Match(anchor=node.name, nodes=[node], inputs=list(node.inputs[:8]), outputs=list(node.outputs),
                     details={"mode": FLOAT_MODE, "exact": False,
                              "note": "hidden-state quantization inside the loop is dropped"},
                     data={"W": w, "R": r, "attrs": dict(node.attrs)})

    @staticmethod
    def _deq(q: np.ndarray, zp: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """[dirs, in, 4h] int -> [dirs, 4h, in] float, scales per direction or per (direction, gate row)."""
        out = []
        for d in range(q.shape[0]):
            out.append(dequantize_columns(q[d], np.asarray(zp).reshape(q.shape[0], -1)[d],
                                          np.asarray(scale).reshape(q.shape[0], -1)[d], 1).T)
        return np.ascontiguousarray(np.stack(out))

    def rewrite(self, graph, match, build):
        node = match.nodes[0]
        inputs = list(match.inputs)
        outputs = list(match.outputs)
        remove_nodes(graph, [node])
        inputs[1] = build.const(match.data["W"], "W")
        inputs[2] = build.const(match.data["R"], "R")
        while inputs and inputs[-1].name == "":
            inputs.pop()
        build.node("LSTM", inputs, outputs=outputs, attrs=match.data["attrs"])
        return {}


@register_rule
class DynamicQuantizeLinearLeftover(_QuantDecompose):
    name = "dynamic-quantize-linear"
    summary = "DynamicQuantizeLinear outside a rewritable chain: explain (it has no float equivalent alone)"
    anchor_ops = ("DynamicQuantizeLinear",)
    handled = ("MatMulInteger", "ConvInteger")

    def match(self, graph, node, ctx) -> Optional[NearMiss]:
        readers = sorted({c.op for t in node.outputs for c in t.outputs})
        others = [op for op in readers if op not in self.handled + ("Mul",)]
        if others or any(is_graph_output(graph, t) for t in node.outputs):
            return NearMiss(node.name, f"its outputs feed {', '.join(others) or 'graph outputs'}; only "
                                       "MatMulInteger/ConvInteger chains are rewritten to float")
        return None


# Tolerance (atol, rtol) for ONNX Runtime's check of a float-mode rewrite: dropping 8-bit activation
# quantization moves each output by up to half a quantization step (range/510) per input element,
# summed over the dot product; measured on graphfix's fixtures (tests/passes/test_decompose_quantized.py)
# the worst case is well under this. It applies only to passes that recorded an inexact rewrite.
QUANT_ATOL, QUANT_RTOL = 5e-2, 5e-2


def quantization_tolerance():
    return (QUANT_ATOL, QUANT_RTOL)
