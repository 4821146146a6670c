"""Opset-23 RotaryEmbedding and Attention -> Slice/Mul/Add/Concat and MatMul/Softmax (no importer
before TensorRT 10.14/10.15; the profiles say which). Semantics follow the ONNX reference
(onnx.reference.ops.op_rotary_embedding / op_attention).

RotaryEmbedding: 3-D input [B, S, hidden] (num_heads given) or 4-D [B, H, S, D]; the rotated part is
the first rotary_embedding_dim (default D) values of each head: halves (x1, x2), or even/odd values
when interleaved; cos/sin come from the caches (Gather by position_ids when given);
real = cos*x1 - sin*x2, imag = sin*x1 + cos*x2; the rest passes through. Needs a static head size.

Attention: Q/K/V 3-D (q_num_heads/kv_num_heads) or 4-D; scale (default 1/sqrt(head size)) applied as
sqrt(scale) to Q and to K as the reference does; softcap (c * tanh(s / c)); an additive float or
boolean mask (a mask shorter than the keys is padded with -inf, as the reference does); is_causal
(bottom-right aligned by the past length; static lengths); a KV cache (present = Concat(past, new)
on the sequence axis, wired to present_key/present_value); grouped-query K/V heads (repeated to Q's,
static head counts); rows a mask blocks entirely give 0 (the reference's rule). Refused:
nonpad_kv_seqlen, sliding windows, softmax_precision other than the input type, a used
qk_matmul_output.
"""
from __future__ import annotations

import numpy as np
import onnx

from .build import remove_nodes
from .ops_base import OpsDecompose, dtype_or_float, reduce, unsqueeze
from .patterns import optional_input, optional_output, static_dims, used
from .registry import register_rule
from .rule import Match, NearMiss


def _i64(build, values, hint="c"):
    return build.const(np.asarray(values, np.int64), hint)


def _slice(build, x, start, end, step=1, dtype=None):
    return build.op("Slice", x, _i64(build, [start], "starts"), _i64(build, [end], "ends"),
                    _i64(build, [-1], "axes"), _i64(build, [step], "steps"), dtype=dtype)


@register_rule
class RotaryEmbeddingDecompose(OpsDecompose):
    name = "rotary-embedding"
    summary = "RotaryEmbedding (opset 23) -> Slice/Mul/Sub/Add/Concat (halves or interleaved)"
    anchor_ops = ("RotaryEmbedding",)

    def match_node(self, graph, node, ctx):
        dims = static_dims(node.inputs[0])
        if dims is None or len(dims) not in (3, 4) or dims[-1] is None:
            return NearMiss(node.name, "the input needs a known rank (3 or 4) and a static last dim")
        heads = int(node.attrs.get("num_heads", 0))
        if len(dims) == 3 and heads <= 0:
            return NearMiss(node.name, "3-D input without num_heads")
        head = dims[-1] // heads if len(dims) == 3 else dims[-1]
        rot = int(node.attrs.get("rotary_embedding_dim", 0)) or head
        if rot % 2 or rot > head:
            return NearMiss(node.name, f"rotary_embedding_dim {rot} is odd or above the head size {head}")
        interleaved = bool(node.attrs.get("interleaved", 0))
        return Match(anchor=node.name, nodes=[node], inputs=list(node.inputs), outputs=[node.outputs[0]],
                     details={"interleaved": interleaved, "rotary_dim": rot},
                     data={"rank": len(dims), "heads": heads, "head": head, "rot": rot,
                           "interleaved": interleaved})

    def rewrite(self, graph, match, build):
        node = match.nodes[0]
        d = match.data
        x, cos, sin = node.inputs[0], node.inputs[1], node.inputs[2]
        pos = optional_input(node, 3)
        out = match.outputs[0]
        dtype = dtype_or_float(x)
        remove_nodes(graph, [node])
        if pos is not None:
            cos = build.op("Gather", cos, pos, attrs={"axis": 0}, dtype=dtype)
            sin = build.op("Gather", sin, pos, attrs={"axis": 0}, dtype=dtype)
        if d["rank"] == 3:     # [B, S, hidden] -> [B, S, H, D]; caches [B, S, r/2] -> [B, S, 1, r/2]
            x = build.op("Reshape", x, _i64(build, [0, 0, d["heads"], d["head"]], "shape"), dtype=dtype)
            head_axis = 2
        else:                  # [B, H, S, D]; caches -> [B, 1, S, r/2]
            head_axis = 1
        cos = unsqueeze(build, graph, cos, [head_axis], dtype=dtype)
        sin = unsqueeze(build, graph, sin, [head_axis], dtype=dtype)
        rot, half = d["rot"], d["rot"] // 2
        x_rot = _slice(build, x, 0, rot, dtype=dtype) if rot < d["head"] else x
        if d["interleaved"]:
            x1, x2 = _slice(build, x_rot, 0, rot, 2, dtype), _slice(build, x_rot, 1, rot, 2, dtype)
        else:
            x1, x2 = _slice(build, x_rot, 0, half, dtype=dtype), _slice(build, x_rot, half, rot, dtype=dtype)
        real = build.op("Sub", build.op("Mul", cos, x1, dtype=dtype), build.op("Mul", sin, x2, dtype=dtype),
                        dtype=dtype)
        imag = build.op("Add", build.op("Mul", sin, x1, dtype=dtype), build.op("Mul", cos, x2, dtype=dtype),
                        dtype=dtype)
        if d["interleaved"]:
            pairs = build.op("Concat", unsqueeze(build, graph, real, [4], dtype=dtype),
                             unsqueeze(build, graph, imag, [4], dtype=dtype), attrs={"axis": -1}, dtype=dtype)
            y = build.op("Reshape", pairs, _i64(build, [0, 0, 0, rot], "shape"), dtype=dtype)
        else:
            y = build.op("Concat", real, imag, attrs={"axis": -1}, dtype=dtype)
        if rot < d["head"]:
            y = build.op("Concat", y, _slice(build, x, rot, d["head"], dtype=dtype), attrs={"axis": -1},
                         dtype=dtype)
        if d["rank"] == 3:
            build.node("Reshape", [y, _i64(build, [0, 0, -1], "shape")], outputs=[out])
        else:
            build.node("Identity", [y], outputs=[out])
        return {}


@register_rule
class AttentionDecompose(OpsDecompose):
    name = "attention"
    summary = "Attention (opset 23) -> MatMul/Softmax/MatMul (+ mask, causal, GQA, softcap, KV cache)"
    anchor_ops = ("Attention",)

    def match_node(self, graph, node, ctx):
        a = node.attrs
        if optional_input(node, 6) is not None:
            return NearMiss(node.name, "nonpad_kv_seqlen is given (external KV cache)")
        past_k, past_v = optional_input(node, 4), optional_input(node, 5)
        if (past_k is None) != (past_v is None):
            return NearMiss(node.name, "past_key and past_value must come together")
        if used(graph, optional_output(node, 3)):
            return NearMiss(node.name, "its output qk_matmul_output is used")
        if int(a.get("left_window_size", -1)) >= 0 or int(a.get("right_window_size", -1)) >= 0:
            return NearMiss(node.name, "a sliding window is set")
        q, k, v = node.inputs[:3]
        dtype = dtype_or_float(q)
        precision = a.get("softmax_precision")
        if precision is not None and onnx.helper.tensor_dtype_to_np_dtype(int(precision)) != dtype:
            return NearMiss(node.name, "softmax_precision differs from the input type")
        qd, kd, vd = static_dims(q), static_dims(k), static_dims(v)
        if qd is None or kd is None or vd is None or not len(qd) == len(kd) == len(vd) or len(qd) not in (3, 4):
            return NearMiss(node.name, "Q/K/V need the same known rank, 3 or 4")
        if len(qd) == 3:
            qh, kh = int(a.get("q_num_heads", 0)), int(a.get("kv_num_heads", 0))
            if qh <= 0 or kh <= 0 or qd[2] is None:
                return NearMiss(node.name, "3-D inputs need q_num_heads, kv_num_heads and a static hidden size")
            head = qd[2] // qh
        else:
            qh, kh, head = qd[1], kd[1], qd[3]
            if qh is None or kh is None or head is None:
                return NearMiss(node.name, "head counts and the head size must be static")
        k_head = kd[3] if len(kd) == 4 else (kd[2] // kh if kd[2] is not None else None)
        v_head = vd[3] if len(vd) == 4 else (vd[2] // kh if vd[2] is not None else None)
        if qh != kh and (k_head is None or v_head is None):
            return NearMiss(node.name, "grouped-query heads need static K/V head sizes")
        if qh % kh:
            return NearMiss(node.name, f"{qh} query heads are not a multiple of {kh} key/value heads")
        causal = bool(int(a.get("is_causal", 0)))
        past = 0
        if past_k is not None:
            pd = static_dims(past_k)
            past = pd[2] if pd is not None and len(pd) == 4 else None
        lens = (qd[1], kd[1]) if len(qd) == 3 else (qd[2], kd[2])
        if causal and (None in lens or past is None):
            return NearMiss(node.name, "is_causal needs static sequence lengths (past included)")
        md = static_dims(optional_input(node, 3))
        total = None if lens[1] is None or past is None else lens[1] + past
        pad = 0
        if md is not None and md and md[-1] is not None and total is not None and md[-1] < total:
            pad = total - md[-1]   # the reference pads a short mask: -inf / False for the extra keys
        return Match(anchor=node.name, nodes=[node], inputs=list(node.inputs[:6]),
                     outputs=list(node.outputs[:3]),
                     details={"causal": causal, "q_heads": qh, "kv_heads": kh},
                     data={"rank": len(qd), "qh": qh, "kh": kh, "head": head, "causal": causal, "lens": lens,
                           "past": past or 0, "mask_pad": pad, "softcap": float(a.get("softcap", 0.0)),
                           "k_head": k_head, "v_head": v_head,
                           "scale": a.get("scale")})

    def rewrite(self, graph, match, build):
        node = match.nodes[0]
        d = match.data
        q, k, v = node.inputs[:3]
        mask, past_k, past_v = optional_input(node, 3), optional_input(node, 4), optional_input(node, 5)
        out = match.outputs[0]
        presents = [optional_output(node, 1), optional_output(node, 2)]
        dtype = dtype_or_float(q)
        remove_nodes(graph, [node])
        if d["rank"] == 3:    # [B, S, H*D] -> [B, H, S, D]
            q, k, v = [build.op("Transpose", build.op("Reshape", t, _i64(build, [0, 0, h, -1], "shape"),
                                                      dtype=dtype), attrs={"perm": [0, 2, 1, 3]}, dtype=dtype)
                       for t, h in ((q, d["qh"]), (k, d["kh"]), (v, d["kh"]))]
        if past_k is not None:   # the KV cache grows by this step's keys/values: present = [past, new]
            k, v = [build.node("Concat", [p, t], outputs=[o] if used(graph, o) else None, attrs={"axis": 2},
                               dtype=dtype)[0] for p, t, o in ((past_k, k, presents[0]), (past_v, v, presents[1]))]
        else:                    # no cache: present_key/value are K/V in [B, H, S, D]
            for t, o in ((k, presents[0]), (v, presents[1])):
                if used(graph, o):
                    build.node("Identity", [t], outputs=[o])
        if d["qh"] != d["kh"]:   # each K/V head serves qh/kh consecutive query heads
            rep = d["qh"] // d["kh"]
            k, v = [self._repeat_heads(build, graph, t, rep, d["qh"], size, dtype)
                    for t, size in ((k, d["k_head"]), (v, d["v_head"]))]
        scale = d["scale"] if d["scale"] is not None else 1.0 / np.sqrt(d["head"])
        root = build.const(np.asarray(np.sqrt(scale), dtype), "sqrt_scale")
        kt = build.op("Transpose", build.op("Mul", k, root, dtype=dtype), attrs={"perm": [0, 1, 3, 2]}, dtype=dtype)
        scores = build.op("MatMul", build.op("Mul", q, root, dtype=dtype), kt, dtype=dtype)
        if d["softcap"] > 0:     # softcap * tanh(scores / softcap), before the bias (reference)
            cap = build.const(np.asarray(d["softcap"], dtype), "softcap")
            scores = build.op("Mul", build.op("Tanh", build.op("Div", scores, cap, dtype=dtype), dtype=dtype), cap,
                              dtype=dtype)
        bias = None
        if mask is not None:
            if np.dtype(mask.dtype or np.float32) == np.bool_:
                bias = build.op("Where", mask, build.const(np.zeros((), dtype), "zero"),
                                build.const(np.asarray(-np.inf, dtype), "minus_inf"), dtype=dtype)
            else:
                bias = mask
            if d["mask_pad"]:
                rank = len(static_dims(mask))
                pads = [0] * (2 * rank)
                pads[-1] = d["mask_pad"]
                bias = build.op("Pad", bias, _i64(build, pads, "pads"),
                                build.const(np.asarray(-np.inf, dtype), "minus_inf"), dtype=dtype)
        if d["causal"]:
            sq, skv = d["lens"][0], d["lens"][1] + d["past"]
            allowed = np.arange(skv)[None, :] <= np.arange(sq)[:, None] + d["past"]
            causal = build.const(np.where(allowed, 0, -np.inf).astype(dtype), "causal")
            bias = causal if bias is None else build.op("Add", bias, causal, dtype=dtype)
        if bias is not None:
            scores = build.op("Add", scores, bias, dtype=dtype)
        probs = build.op("Softmax", scores, attrs={"axis": -1}, dtype=dtype)
        if mask is not None:   # rows the mask blocks entirely: 0, not NaN
            blocked = build.op("Equal", reduce(build, graph, "ReduceMax", bias, [-1], keepdims=1, dtype=dtype),
                               build.const(np.asarray(-np.inf, dtype), "minus_inf"), dtype=np.bool_)
            probs = build.op("Where", blocked, build.const(np.zeros((), dtype), "zero"), probs, dtype=dtype)
        y = build.op("MatMul", probs, v, dtype=dtype)
        if d["rank"] == 3:
            y = build.op("Transpose", y, attrs={"perm": [0, 2, 1, 3]}, dtype=dtype)
            build.node("Reshape", [y, _i64(build, [0, 0, -1], "shape")], outputs=[out])
        else:
            build.node("Identity", [y], outputs=[out])
        return {}

    @staticmethod
    def _repeat_heads(build, graph, t, rep: int, heads: int, size: int, dtype):
        """[B, Hk, S, D] -> [B, Hk*rep, S, D], head j repeated rep times in a row (np.repeat axis 1)."""
        wide = build.op("Expand", unsqueeze(build, graph, t, [2], dtype=dtype),
                        _i64(build, [1, 1, rep, 1, 1], "reps"), dtype=dtype)
        return build.op("Reshape", wide, _i64(build, [0, heads, -1, size], "shape"), dtype=dtype)
