"""Mod on UINT8 -> Cast to INT32, the same Mod, Cast back (exact).

What the TensorRT 8.6 importer already does (onnx-tensorrt release/8.6-GA, DEFINE_BUILTIN_OP_IMPORTER
(Mod)): FLOAT/FLOAT16 with fmod = 1 as x - y * trunc(x / y) (floor or ceil by the quotient's sign);
INT32 with fmod = 0 as x - y * FLOOR_DIV(x, y), with fmod = 1 as x - y * DIV(x, y). So float Mod
needs no rewrite (float with fmod = 0 is invalid ONNX: ONNX Runtime refuses it too), INT64 is
narrowed by int64-to-int32 and DOUBLE emulated by emulate-types. What it refuses are the narrow
integer types ("The fmod attribute is set to 0. Inputs cannot be of floating point types. The
current input type is INT8", "Found invalid input type of UINT8"). Mod commutes with sign/zero
extension (both the floor and the truncated remainder of widened values are the widened remainder,
and |remainder| < |divisor| fits the narrow type), so computing it on INT32 is exact, through the
INT32 Mod the importer has. UINT8 is the one narrow type this helps on its own: TensorRT takes it as a
network input/output that goes straight through a Cast. INT8 is a quantized-only type on 8.6
(an INT8 graph input stays an error), INT16/UINT16 do not exist there (emulate-types' job, where Mod
is a boundary today), UINT32 does not fit INT32. A zero divisor is undefined for integers.
"""
from __future__ import annotations

import numpy as np

from .build import remove_nodes
from .ops_base import OpsDecompose
from .patterns import dtype_of
from .registry import register_rule
from .rule import Match, NearMiss

VIA_INT32 = {np.dtype(np.uint8): (2, "UINT8")}   # dtype -> (ONNX type, profile name)


@register_rule
class ModViaInt32(OpsDecompose):
    name = "mod-uint8"
    summary = "Mod on UINT8 -> Cast to INT32, Mod, Cast back (exact; TensorRT imports integer Mod on INT32)"
    anchor_ops = ("Mod",)
    fixes_checks = ("io-only-dtype",)

    def needs(self, target) -> bool:
        """Where the profile's Mod lacks one of the narrow types this rule computes on INT32."""
        from ..profiles import load_profile
        entry = load_profile(target).op("Mod") or {}
        types = set(entry.get("types") or ())
        return bool(entry) and any(name not in types for _, name in VIA_INT32.values())

    def match_node(self, graph, node, ctx):
        dtype = dtype_of(node.inputs[0])
        if dtype is None:
            return NearMiss(node.name, "input type unknown")
        if dtype not in VIA_INT32:
            return NearMiss(node.name, f"Mod on {dtype}: only UINT8 is computed through INT32 here")
        return Match(anchor=node.name, nodes=[node], inputs=list(node.inputs[:2]), outputs=[node.outputs[0]],
                     details={"dtype": str(dtype)}, data={"dtype": dtype, "fmod": int(node.attrs.get("fmod", 0))})

    def rewrite(self, graph, match, build):
        d = match.data
        remove_nodes(graph, match.nodes)
        a, b = [build.op("Cast", x, attrs={"to": 6}, dtype=np.int32) for x in match.inputs]
        r = build.op("Mod", a, b, attrs={"fmod": d["fmod"]}, dtype=np.int32)
        build.node("Cast", [r], outputs=[match.outputs[0]], attrs={"to": VIA_INT32[d["dtype"]][0]})
        return {}
