"""A BF16 model that ONNX Runtime's CPU kernels can run: BF16 emulated in FP32.

ONNX Runtime's CPU provider has almost no BF16 kernels (Add, MatMul, Gemm... are missing), so a
mixed BF16 model cannot be checked there as it is. The emulation computes every node in FP32 and
rounds each BF16 tensor to BF16 and back (Cast -> BF16 -> Cast -> FLOAT): BF16 storage, FP32
arithmetic, which is what ONNX Runtime itself does for FP16 nodes that lack an FP16 kernel. It
understates BF16 error where a device computes in BF16.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BF16, FLOAT = TensorProto.BFLOAT16, TensorProto.FLOAT


def has_bf16(model: onnx.ModelProto) -> bool:
    g = model.graph
    if any(t.data_type == BF16 for t in g.initializer):
        return True
    values = list(g.input) + list(g.output) + list(g.value_info)
    if any(v.type.tensor_type.elem_type == BF16 for v in values):
        return True
    return any(a.name == "to" and a.i == BF16 for n in g.node for a in n.attribute)


def _float_tensor(t: onnx.TensorProto) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)


def emulate_bf16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with BF16 storage emulated in FP32 (see the module docstring)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info)
             + list(inferred.graph.input) + list(inferred.graph.output)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for i, t in enumerate(g.initializer):
        if t.data_type == BF16:
            g.initializer[i].CopyFrom(_float_tensor(t))
    nodes = []
    for v in g.input:     # fed FLOAT, rounded to BF16 as a BF16 input would be
        if v.type.tensor_type.elem_type == BF16:
            v.type.tensor_type.elem_type = FLOAT
    inputs_bf16 = [v.name for v in model.graph.input if v.type.tensor_type.elem_type == BF16]
    rename = {}
    for name in inputs_bf16:
        rename[name] = f"{name}.gf_emulated"
        nodes += _round_trip(name, rename[name], f"gf.emulate.in.{name}")
    for k, node in enumerate(g.node):
        n = onnx.NodeProto()
        n.CopyFrom(node)
        n.input[:] = [rename.get(x, x) for x in n.input]
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == BF16:
                a.t.CopyFrom(_float_tensor(a.t))
        is_cast_to_bf16 = n.op_type == "Cast" and any(a.name == "to" and a.i == BF16 for a in n.attribute)
        tail = []
        for j, o in enumerate(n.output):
            if not o or types.get(o) != BF16:
                continue
            raw = f"{o}.gf_raw"
            n.output[j] = raw
            if is_cast_to_bf16:       # already rounded: back to FLOAT
                tail.append(helper.make_node("Cast", [raw], [o], name=f"gf.emulate.{k}.{j}", to=FLOAT))
            else:
                tail += _round_trip(raw, o, f"gf.emulate.{k}.{j}")
        nodes.append(n)
        nodes += tail
    del g.node[:]
    g.node.extend(nodes)
    for v in g.output:
        if v.type.tensor_type.elem_type == BF16:
            v.type.tensor_type.elem_type = FLOAT
    del g.value_info[:]
    return out


def _round_trip(src: str, dst: str, name: str):
    mid = f"{dst}.gf_bf16"
    return [helper.make_node("Cast", [src], [mid], name=name + ".to_bf16", to=BF16),
            helper.make_node("Cast", [mid], [dst], name=name + ".to_float", to=FLOAT)]
