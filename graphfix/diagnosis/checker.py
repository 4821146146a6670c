"""The checker: evaluates a version profile on a model's facts and names each finding's fix.

The facts come from the profile (graphfix/profiles) and the model (facts.py); which pass fixes a
finding comes from the table of remedies (graphfix.remedies), never from this module.
"""
from __future__ import annotations

import functools
from typing import List, Optional, Set, Tuple

import numpy as np
import onnx

from .. import remedies
from ..onnx_values import DEFAULT_DOMAINS
from ..profiles import Profile
from .facts import ModelFacts, NodeRef
from .predicates import PREDICATES, Ctx, when_holds
from .result import Finding

# Plugins that TensorRT's own plugin library registers and the parser's fallback importer finds by
# op name (custom domain nodes carrying these names are imported as plugins).
KNOWN_TRT_PLUGINS = frozenset({
    "EfficientNMS_TRT", "BatchedNMS_TRT", "BatchedNMSDynamic_TRT", "ROIAlign_TRT", "PyramidROIAlign_TRT",
    "MultilevelCropAndResize_TRT", "DisentangledAttention_TRT", "InstanceNormalization_TRT",
    "GroupNormalizationPlugin", "LayerNorm", "ScatterND", "ScatterElements", "Gelu", "CustomEmbLayerNormPluginDynamic",
    "CustomSkipLayerNormPluginDynamic", "CustomFCPluginDynamic", "CustomQKVToContextPluginDynamic",
    "GridAnchor_TRT", "NMS_TRT", "Normalize_TRT", "Region_TRT", "Reorg_TRT", "ResizeNearest_TRT",
    "ProposalLayer_TRT", "EfficientNMS_ONNX_TRT", "ModulatedDeformConv2d", "CoordConvAC", "BatchTilePlugin_TRT",
    "CropAndResize", "DecodeBbox3DPlugin", "FlattenConcat_TRT", "GenerateDetection_TRT", "MultiscaleDeformableAttnPlugin_TRT",
    "NMSDynamic_TRT", "PillarScatterPlugin", "Proposal", "ProposalDynamic", "Split", "VoxelGeneratorPlugin",
})


class Checker:
    def __init__(self, model: onnx.ModelProto, profile: Profile, fp16: bool = False):
        self.fp16 = fp16                 # an FP16 engine is wanted
        self.facts = ModelFacts(model)
        self.profile = profile
        self.ctx = Ctx(self.facts, profile)
        self.findings: List[Finding] = []
        self._seen: Set[Tuple] = set()
        self._doc = profile.sources[0] if profile.sources else ""   # the line's operators.md

    def add(self, node: Optional[str], op: Optional[str], severity: str, reason: str,
            fix: Optional[str], source: str, rule_name: str, flag: Optional[str] = None) -> None:
        key = (node, op, severity, reason)
        if key in self._seen:
            return
        self._seen.add(key)
        self.findings.append(Finding(node, op, severity, reason, fix, self.profile.cite(source), rule_name, flag))

    # --- remedies (graphfix.remedies)
    def site(self, ref: Optional[NodeRef] = None, params: Optional[dict] = None,
             tensor: Optional[str] = None) -> remedies.Site:
        return remedies.Site(self.facts, self.profile, ref, dict(params or {}), tensor)

    def fix_for(self, kind: str, ref: Optional[NodeRef] = None, params: Optional[dict] = None,
                tensor: Optional[str] = None) -> Optional[str]:
        """The pass the table of remedies names for a finding of `kind` here, if any."""
        op = ref.node.op_type if ref is not None else None
        return remedies.fix_for_finding(kind, self.site(ref, params, tensor), op, self.profile.version)

    def fix_and_flag(self, kind: str, ref: Optional[NodeRef] = None, params: Optional[dict] = None,
                     tensor: Optional[str] = None) -> Tuple[Optional[str], Optional[str]]:
        """(pass, flag) the table's row names for a finding of `kind` here (a conditional row's flag
        holds only where the row applies, so it travels with the finding)."""
        op = ref.node.op_type if ref is not None else None
        row = remedies.remedy_for_finding(kind, self.site(ref, params, tensor), op, self.profile.version)
        return (row.pass_name, row.flag) if row is not None else (None, None)

    def fix_for_missing_op(self, node: onnx.NodeProto, ref: Optional[NodeRef] = None) -> Optional[str]:
        """The pass that rewrites an op the parser cannot import (a rewrite rule's, else a fallback's)."""
        return remedies.fix_for_missing_op(node.op_type, node.domain, self.site(ref), self.profile.version)

    def run(self) -> List[Finding]:
        self._model_level()
        if self.fp16:
            self._fp16_request()
        self._tensor_dtypes()
        for ref in self.facts.nodes:
            self._node(ref)
        self._layernorm_patterns()
        return self.findings

    # --- model level
    def _model_level(self) -> None:
        p, f = self.profile, self.facts
        v = p.version
        if f.inference_error:
            self.add(None, None, "warning", f"ONNX shape inference failed ({f.inference_error}); dtype and "
                     "shape checks are incomplete", self.fix_for("shape-inference"), "", "shape-inference")
        if f.opset > p.max_opset:
            self.add(None, None, "warning", f"model opset {f.opset} is above {p.max_opset}, the highest opset "
                     f"TensorRT {v} documents; nodes whose meaning changed are listed separately",
                     self.fix_for("max-opset"), p.sources[0] if p.sources else "", "max-opset")
        if 0 < f.opset < 7:
            self.add(None, None, "warning", f"model opset {f.opset} is below 7, which TensorRT does not "
                     "guarantee to import", self.fix_for("min-opset"), self._doc, "min-opset")
        if not p.int64_native:
            self._int64_narrowing()
        doubles = sorted(n for n in set(f.graph_inputs) | set(f.graph_outputs) if f.dtype(n) == "DOUBLE")
        if doubles and "DOUBLE" in p.narrowed_dtypes:
            self.add(None, None, "warning", f"DOUBLE inputs/outputs ({', '.join(doubles)}) are computed in FP32 "
                     "and bound as FLOAT", self.fix_for("double-narrowed"), self._doc, "double-narrowed")

    def _fp16_request(self) -> None:
        """Strongly typed TensorRT (11.x, TensorRT-RTX) has no FP16 builder flag: the ONNX's types are
        the engine's, so an FP32-only model builds an FP32 engine."""
        if not self.profile.extra.get("strongly_typed"):
            return
        f = self.facts
        low = ("FLOAT16", "BFLOAT16")
        names = set(f.initializers) | {o for r in f.nodes for o in r.node.output if o} | set(f.graph_inputs)
        if any(f.dtype(n) in low for n in names):
            return
        self.add(None, None, "warning", f"an FP16 engine was asked for, but TensorRT {self.profile.version} builds "
                 "strongly typed networks (no FP16 builder flag) and this model has no FP16/BF16 tensors: it "
                 "would build in FP32; convert it with graphfix fix --precision fp16",
                 self.fix_for("fp16-strongly-typed"), "trt-11-notes", "fp16-strongly-typed")

    def _int64_narrowing(self) -> None:
        f = self.facts
        int64_weights = sorted(n for n in f.weights if f.dtype(n) == "INT64" and f.used(n))
        if int64_weights:
            self.add(None, None, "warning", f"{len(int64_weights)} INT64 initializer(s)/constant(s) are narrowed "
                     f"to INT32 by the TensorRT {self.profile.version} parser", self.fix_for("int64-weights"),
                     "importer-8.6", "int64-weights")
        for name in int64_weights:
            value = f.value(name)
            if value is None or value.size == 0:
                continue
            out_of_range = (value > np.iinfo(np.int32).max) | (value < np.iinfo(np.int32).min)
            if not np.any(out_of_range):
                continue
            consumers = f.consumers.get(name, [])
            # Slice starts/ends clamp INT64 sentinels to INT32 limits harmlessly
            if consumers and all(c.node.op_type == "Slice" and name in c.node.input[1:3] for c in consumers):
                continue
            self.add(None, None, "wrong-result", f"INT64 constant '{name}' has values outside the INT32 range; "
                     "the parser clamps them", self.fix_for("int64-out-of-range", tensor=name),
                     "importer-8.6", "int64-out-of-range")
        io64 = sorted(n for n in list(f.graph_inputs) + list(f.graph_outputs)
                      if f.dtype(n) == "INT64" and n not in f.initializers)
        if io64:
            self.add(None, None, "warning", f"INT64 inputs/outputs ({', '.join(io64)}) are bound as INT32 "
                     f"by TensorRT {self.profile.version}", self.fix_for("int64-io"), "importer-8.6", "int64-io")

    # --- tensor dtypes
    def _tensor_dtypes(self) -> None:
        p, f = self.profile, self.facts
        names = list(f.graph_inputs) + [o for r in f.nodes for o in r.node.output if o]
        names += sorted(n for n in f.initializers if f.used(n) and n not in f.graph_inputs)
        for name in dict.fromkeys(names):
            kind = f.kind(name)
            producer = f.producers.get(name)
            where = (producer.display, producer.node.op_type) if producer else (None, None)
            fix_for = functools.partial(self.fix_for, ref=producer, tensor=name)
            label = f"graph input '{name}'" if name in f.graph_inputs else f"tensor '{name}'"
            if kind is not None and kind != "tensor_type":
                if f.used(name):
                    self.add(*where, "error", f"{label} is a {kind.replace('_type', '')}: TensorRT handles "
                             "tensors only", fix_for("non-tensor-type"), p.sources[0] if p.sources else "",
                             "non-tensor-type")
                continue
            dt = f.dtype(name)
            if dt is None or not f.used(name):
                continue
            eff = p.effective_dtype(dt)
            if eff in p.native_dtypes:
                continue
            if eff in p.io_only_dtypes:
                if self._io_only_ok(name):
                    continue
                fix, flag = self._dtype_fix(name, "io-only-dtype", producer)
                self.add(*where, "error", f"{label} is {dt}: TensorRT {p.version} supports {dt} only for network "
                         "inputs/outputs that go straight through a Cast", fix, self._doc, "io-only-dtype", flag=flag)
                continue
            if eff in p.quantized_only_dtypes:
                if self._quantized_ok(name):
                    continue
                fix, flag = self._dtype_fix(name, "quantized-only-dtype", producer)
                self.add(*where, "error", f"{label} is {dt}: TensorRT {p.version} supports {dt} only as the "
                         "output of QuantizeLinear / input of DequantizeLinear", fix, self._doc,
                         "quantized-only-dtype", flag=flag)
                continue
            fix, flag = self.fix_and_flag("unsupported-dtype", ref=producer, params={"dtype": dt}, tensor=name)
            self.add(*where, "error", f"{label} is {dt}, a type TensorRT {p.version} does not have",
                     fix, self._doc, "unsupported-dtype", flag=flag)

    def _dtype_fix(self, name: str, kind: str, producer) -> Tuple[Optional[str], Optional[str]]:
        """(pass, flag) for a tensor of a type the target holds only at the edges: the rewrite rules
        that replace its ops first (quantize_dynamic chains), else the table's row."""
        rewritten = self._rewritten_with(name)
        if rewritten is not None:
            return rewritten, None
        return self.fix_and_flag(kind, ref=producer, tensor=name)

    def _rewritten_with(self, name: str) -> Optional[str]:
        """The pass whose rewrite rules replace the op producing `name`, or every op reading it: the
        tensor's type problem goes with them (quantize_dynamic's UINT8 chains and decompose-quantized)."""
        f = self.facts
        producer = f.producers.get(name)
        refs = [producer] if producer is not None else list(f.consumers.get(name, []))
        found = [remedies.passes_for_missing_op(r.node.op_type, r.node.domain, self.profile.version, fallbacks=False)
                 for r in refs]
        if not found or not all(found):
            return None
        if any(self.fix_for_missing_op(r.node, r) is None for r in refs):   # a rule's match refuses the node
            return None
        first = found[0][0]
        return first if all(first in passes for passes in found) else None

    def _io_only_ok(self, name: str) -> bool:
        f = self.facts
        if name in f.graph_inputs:   # "io_only_consumers": ops measured to take such inputs (8.6: Equal)
            consumers = set(self.profile.extra.get("io_only_consumers", ["Cast"]))
            return all(c.node.op_type in consumers for c in f.consumers.get(name, []))
        producer = f.producers.get(name)
        if name in f.graph_outputs and producer is not None and producer.node.op_type == "Cast":
            return not f.consumers.get(name)
        if name in f.weights:  # UINT8 constants feeding Q/DQ are imported (10.10 changelog)
            return all(c.node.op_type in ("DequantizeLinear", "QuantizeLinear") for c in f.consumers.get(name, []))
        return False

    def _quantized_ok(self, name: str) -> bool:
        f = self.facts
        producer = f.producers.get(name)
        consumers = f.consumers.get(name, [])
        if producer is not None and producer.node.op_type == "QuantizeLinear":
            return True
        if name in f.weights:  # quantized weights and zero points are read by Q/DQ nodes
            return bool(consumers) and all(c.node.op_type in ("QuantizeLinear", "DequantizeLinear")
                                           for c in consumers)
        return bool(consumers) and all(c.node.op_type == "DequantizeLinear" and c.node.input[0] == name
                                       for c in consumers)

    # --- nodes
    def _node(self, ref: NodeRef) -> None:
        p, node = self.profile, ref.node
        op = node.op_type
        if node.domain not in DEFAULT_DOMAINS:
            self._custom_domain(ref)
            return
        if not p.imports(op):
            entry = p.op(op) or {}
            if (node.domain, op) in self.facts.local_functions:
                self._local_function(ref)
                return
            since = entry.get("available_since")
            why = (f"TensorRT imports {op} from {since}" if since else
                   f"the TensorRT {p.version} ONNX parser has no importer for {op}")
            self.add(ref.display, op, "error", why, self.fix_for_missing_op(node, ref),
                     entry.get("source") or (p.sources[0] if p.sources else ""), "unsupported-op")
            return
        entry = p.op(op)
        self._input_types(ref, entry)
        for r in entry.get("rules", []):
            if not when_holds(self.ctx, ref, r.get("when")):
                continue
            fn = PREDICATES.get(r["check"])
            if fn is None:
                raise KeyError(f"profile {p.line}: unknown rule check '{r['check']}' for {op}")
            detail = fn(self.ctx, ref, r)
            if detail is None:
                continue
            reason = r["reason"] + (f" ({detail})" if detail else "")
            self.add(ref.display, op, r["severity"], reason, self.fix_for(r["check"], ref, r), r.get("source", ""),
                     r["check"])
        if p.myelin_bool_unsafe_ops and op in p.myelin_bool_unsafe_ops:
            bools = [i for i in node.input[:1] if i and self.facts.dtype(i) == "BOOL"]
            if bools:
                self.add(ref.display, op, "warning", f"bool data through {op}: Myelin-fused regions may reject "
                         "bool I/O at build time", self.fix_for("myelin-bool", ref), self._doc, "myelin-bool")

    def _input_types(self, ref: NodeRef, entry: dict) -> None:
        types = entry.get("types")
        if not types:
            return
        p, f, node = self.profile, self.facts, ref.node
        which = entry.get("typed_inputs", [0])
        if which == "all":
            names = [i for i in node.input if i]
        elif which == "outputs":
            names = [o for o in node.output[:1] if o]
        else:
            names = [node.input[i] for i in which if i < len(node.input) and node.input[i]]
        for name in names:
            dt = f.dtype(name)
            if dt is None:
                continue
            eff = p.effective_dtype(dt)
            if eff not in p.native_dtypes:
                continue  # reported once per tensor by _tensor_dtypes
            if eff in types:
                continue
            fix = self.fix_for("dtype", ref, {"dtype": eff})
            shown = dt if eff == dt else f"{dt} (as {eff})"
            accepted = ", ".join(types)
            self.add(ref.display, node.op_type, "error", f"{node.op_type} does not take {shown} input "
                     f"'{name}' on TensorRT {p.version} (documented types: {accepted})", fix,
                     entry.get("source", ""), "dtype")

    def _custom_domain(self, ref: NodeRef) -> None:
        node = ref.node
        if (node.domain, node.op_type) in self.facts.local_functions:
            self._local_function(ref)
            return
        if node.op_type in KNOWN_TRT_PLUGINS:
            self.add(ref.display, node.op_type, "warning", f"imported as the TensorRT plugin {node.op_type}; "
                     "ONNX Runtime cannot run it", self.fix_for("plugin-node", ref), self._doc, "plugin-node")
            return
        self.add(ref.display, node.op_type, "error", f"custom-domain op {node.domain}::{node.op_type}: the parser "
                 f"looks for a TensorRT plugin named {node.op_type} and none is known", self.fix_for_missing_op(node),
                 self._doc, "custom-op")

    def _local_function(self, ref: NodeRef) -> None:
        if self.profile.local_functions:
            return
        self.add(ref.display, ref.node.op_type, "error", f"calls the model-local function "
                 f"{ref.node.domain}::{ref.node.op_type}; the TensorRT {self.profile.version} parser does not import "
                 "local functions (inline them, e.g. with onnx.inliner)", self.fix_for("local-function", ref),
                 "changelog", "local-function")

    # --- patterns
    def _layernorm_patterns(self) -> None:
        """ReduceMean -> Sub -> Pow/Mul -> ReduceMean -> Add -> Sqrt -> Div: FP16 overflow risk."""
        f = self.facts
        for ref in f.nodes:
            node = ref.node
            if node.op_type != "Div" or len(node.input) != 2:
                continue
            sub, sqrt = f.producers.get(node.input[0]), f.producers.get(node.input[1])
            if not (sub and sqrt and sub.node.op_type == "Sub" and sqrt.node.op_type == "Sqrt"):
                continue
            add = f.producers.get(sqrt.node.input[0])
            if not (add and add.node.op_type == "Add"):
                continue
            var = next((f.producers.get(i) for i in add.node.input
                        if f.producers.get(i) and f.producers[i].node.op_type == "ReduceMean"), None)
            if var is None:
                continue
            sq = f.producers.get(var.node.input[0])
            if not (sq and sq.node.op_type in ("Pow", "Mul") and sub.node.output[0] in sq.node.input):
                continue
            mean = f.producers.get(sub.node.input[1])
            if not (mean and mean.node.op_type == "ReduceMean"):
                continue
            self.add(mean.display, "ReduceMean", "warning", "decomposed LayerNormalization (ReduceMean, Sub, Pow, "
                     "ReduceMean, Add, Sqrt, Div): in FP16 the variance can overflow; a fused "
                     "LayerNormalization runs in FP32 internally", self.fix_for("layernorm-pattern", mean), "ln-fp16",
                     "layernorm-pattern")

