"""Exact numpy versions of ONNX Runtime's quantized com.microsoft ops, for onnx's ReferenceEvaluator.

Integer products are computed in int64 (no saturation), the rest as ONNX Runtime's CPU kernels
define it: the float operand is quantized per tensor to uint8 exactly as DynamicQuantizeLinear does
(the whole input sequence at once; the hidden state per step and per sequence, as measured against
ONNX Runtime on products that cannot saturate),
then dequantized with the product of the two scales. What these implementations do not cover
raises NotImplementedError, so that the caller can fall back to ONNX Runtime and say so.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from onnx.reference.op_run import OpRun

MS_DOMAIN = "com.microsoft"


def quantize_u8(x: np.ndarray) -> Tuple[np.ndarray, np.float32, np.int64]:
    """DynamicQuantizeLinear: (x_q - zero_point) as int64, scale, zero point (range widened to 0)."""
    x = np.asarray(x, np.float32)
    lo = np.float32(min(0.0, float(x.min()) if x.size else 0.0))
    hi = np.float32(max(0.0, float(x.max()) if x.size else 0.0))
    scale = np.float32(1.0) if hi == lo else np.float32((hi - lo) / np.float32(255))
    zero = np.rint(np.clip(np.float32(0) - lo / scale, 0, 255))
    q = np.clip(np.rint(x / scale) + zero, 0, 255)
    return q.astype(np.int64) - np.int64(zero), scale, np.int64(zero)


def _centered(w: np.ndarray, zero_point: Optional[np.ndarray]) -> np.ndarray:
    w = w.astype(np.int64)
    return w if zero_point is None else w - zero_point.astype(np.int64)


def _integer_matmul_to_float(a_int: np.ndarray, b_int: np.ndarray, scale, bias=None) -> np.ndarray:
    y = np.matmul(a_int, b_int).astype(np.float64) * np.asarray(scale, np.float64)
    if bias is not None:
        y = y + bias
    return y.astype(np.float32)


class DynamicQuantizeMatMul(OpRun):
    op_domain = MS_DOMAIN

    def _run(self, A, B, b_scale, b_zero_point=None, bias=None):
        a_int, a_scale, _ = quantize_u8(A)
        return (_integer_matmul_to_float(a_int, _centered(B, b_zero_point), a_scale * b_scale, bias),)


class MatMulIntegerToFloat(OpRun):
    op_domain = MS_DOMAIN

    def _run(self, A, B, a_scale, b_scale, a_zero_point=None, b_zero_point=None, bias=None):
        return (_integer_matmul_to_float(_centered(A, a_zero_point), _centered(B, b_zero_point),
                                         a_scale * b_scale, bias),)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class DynamicQuantizeLSTM(OpRun):
    """LSTM with default activations (sigmoid, tanh, tanh), gate order i, o, f, c; W/R transposed
    to [directions, in, 4*hidden] with per-tensor or per-column scales and zero points."""
    op_domain = MS_DOMAIN

    def _run(self, X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None,
             W_scale=None, W_zero_point=None, R_scale=None, R_zero_point=None, activation_alpha=None,
             activation_beta=None, activations=None, clip=None, direction=None, hidden_size=None,
             input_forget=None):
        direction = direction or getattr(self, "direction", None) or "forward"
        if isinstance(direction, bytes):
            direction = direction.decode()
        acts = activations if activations is not None else getattr(self, "activations", None)
        clip = clip if clip is not None else getattr(self, "clip", None)
        forget = input_forget if input_forget is not None else getattr(self, "input_forget", 0)
        if P is not None or clip is not None or forget or (acts and [
                a.decode() if isinstance(a, bytes) else a for a in acts] not in (
                ["Sigmoid", "Tanh", "Tanh"], ["Sigmoid", "Tanh", "Tanh"] * 2)):
            raise NotImplementedError("DynamicQuantizeLSTM with peepholes, clip, input_forget or "
                                      "non-default activations")
        seq, batch, _ = X.shape
        if sequence_lens is not None and np.any(np.asarray(sequence_lens) != seq):
            raise NotImplementedError("DynamicQuantizeLSTM with sequence_lens shorter than the sequence")
        dirs = W.shape[0]
        hidden = R.shape[1]
        ys, hs, cs = [], [], []
        for d in range(dirs):
            reverse = direction == "reverse" or (direction == "bidirectional" and d == 1)
            x = X[::-1] if reverse else X
            w_int = _centered(W[d], None if W_zero_point is None else W_zero_point[d])
            r_int = _centered(R[d], None if R_zero_point is None else R_zero_point[d])
            bias = np.zeros(4 * hidden, np.float32) if B is None else B[d, :4 * hidden] + B[d, 4 * hidden:]
            x_int, x_scale, _ = quantize_u8(x.reshape(seq * batch, -1))   # one GEMM for all steps
            gates_x = _integer_matmul_to_float(x_int, w_int, x_scale * W_scale[d]).reshape(seq, batch, -1)
            h = np.zeros((batch, hidden), np.float32) if initial_h is None else initial_h[d].astype(np.float32)
            c = np.zeros((batch, hidden), np.float32) if initial_c is None else initial_c[d].astype(np.float32)
            out = []
            for t in range(seq):
                # the hidden state is quantized per sequence (row), as ONNX Runtime computes them
                recurrent = []
                for row in h:
                    h_int, h_scale, _ = quantize_u8(row[None])
                    recurrent.append(_integer_matmul_to_float(h_int, r_int, h_scale * R_scale[d]))
                g = gates_x[t] + np.concatenate(recurrent) + bias
                i, o, f, z = (g[:, k * hidden:(k + 1) * hidden] for k in range(4))
                c = (_sigmoid(f) * c + _sigmoid(i) * np.tanh(z)).astype(np.float32)
                h = (_sigmoid(o) * np.tanh(c)).astype(np.float32)
                out.append(h)
            y = np.stack(out[::-1] if reverse else out)
            ys.append(y)
            hs.append(h)
            cs.append(c)
        results = (np.stack(ys, axis=1), np.stack(hs), np.stack(cs))
        return results[:len(self.onnx_node.output)]


NEW_OPS = (DynamicQuantizeMatMul, MatMulIntegerToFloat, DynamicQuantizeLSTM)
