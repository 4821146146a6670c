"""Export tiny BERT-, GPT-2-, ViT-, Llama- and T5-style models with PyTorch's ONNX exporters, as graphfix sees them.

Real exporter output is what graphfix must handle: decomposed LayerNorm at opset 14, INT64 shape
arithmetic, bool masks, dynamo's opset-18 idioms. The models are built from small random-weight
transformers configs (no hub download) and exported three ways each:

    ts14     torch.onnx.export(..., opset_version=14, dynamo=False)   TorchScript exporter
    ts17     torch.onnx.export(..., opset_version=17, dynamo=False)   TorchScript exporter
    dynamo18 torch.onnx.export(..., opset_version=18, dynamo=True)    dynamo exporter (onnxscript)

with dynamic batch (and sequence, for the text models) axes. Beside the models it writes
manifest.json: per model its exporter, opset, inputs (dtype, symbolic shape, value range, sample
shape) and the max abs difference between PyTorch and ONNX Runtime on the sample inputs.

    pip install torch==2.13.0 transformers onnxscript
    python scripts/export_models.py fixtures/exported

torch is not a graphfix dependency: the outputs are committed under fixtures/exported/.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

SEED = 0
MAX_SEQ = 64          # max_position_embeddings / n_positions of the text models
VOCAB = 512
IMAGE = 32            # ViT image side; patch 8 -> 16 patches + CLS

EXPORTS = (  # (tag, opset, dynamo)
    ("ts14", 14, False),
    ("ts17", 17, False),
    ("dynamo18", 18, True),
)


@dataclass
class InputSpec:
    name: str
    dtype: str            # numpy dtype name
    shape: List[object]   # ints and symbolic names
    low: float            # values are drawn from [low, high] (ints inclusive)
    high: float
    sample: List[int]     # the concrete shape used for export and verification

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": self.shape,
                "range": [self.low, self.high], "sample_shape": self.sample}


@dataclass
class ModelSpec:
    name: str
    description: str
    build: Callable[[], "object"]   # -> torch.nn.Module returning a tuple of tensors
    inputs: List[InputSpec]
    outputs: List[str]
    exports: Tuple[Tuple[str, int, bool], ...] = EXPORTS


class _Outputs:
    """Wraps a transformers model: keyword inputs in, a plain tuple of named outputs out."""

    def __new__(cls, model, input_names, output_names):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *args):
                out = self.model(**dict(zip(input_names, args)), return_dict=True)
                return tuple(getattr(out, n) for n in output_names)

        return Wrapped().eval()


def _bert():
    from transformers import BertConfig, BertModel
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=MAX_SEQ, type_vocab_size=2,
                     attn_implementation="eager")
    return _Outputs(BertModel(cfg), ["input_ids", "attention_mask", "token_type_ids"],
                    ["last_hidden_state", "pooler_output"])


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_inner=128, n_positions=MAX_SEQ,
                     bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1, use_cache=False,
                     attn_implementation="eager")
    model = GPT2LMHeadModel(cfg)
    model.config.use_cache = False
    return _Outputs(model, ["input_ids", "attention_mask"], ["logits"])


def _vit():
    from transformers import ViTConfig, ViTModel
    cfg = ViTConfig(image_size=IMAGE, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=128, attn_implementation="eager")
    return _Outputs(ViTModel(cfg), ["pixel_values"], ["last_hidden_state", "pooler_output"])


def _llama():
    from transformers import LlamaConfig, LlamaModel
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MAX_SEQ,
                      use_cache=False, attn_implementation="eager")
    return _Outputs(LlamaModel(cfg), ["input_ids", "attention_mask"], ["last_hidden_state"])


def _t5():
    from transformers import T5Config, T5Model
    cfg = T5Config(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
                   num_heads=4, decoder_start_token_id=0, use_cache=False, attn_implementation="eager")
    return _Outputs(T5Model(cfg), ["input_ids", "attention_mask", "decoder_input_ids"], ["last_hidden_state"])


def _text_inputs(names) -> List[InputSpec]:
    ranges = {"input_ids": (0, VOCAB - 1), "attention_mask": (0, 1), "token_type_ids": (0, 1),
              "decoder_input_ids": (0, VOCAB - 1)}
    seq = {"decoder_input_ids": ("decoder_sequence", 6)}
    return [InputSpec(n, "int64", ["batch", seq.get(n, ("sequence",))[0]], *ranges[n],
                      sample=[2, seq.get(n, (None, 8))[1]]) for n in names]


MODELS = [
    ModelSpec("bert", "BertModel: 2 layers, hidden 64, 4 heads, vocab 512", _bert,
              _text_inputs(["input_ids", "attention_mask", "token_type_ids"]),
              ["last_hidden_state", "pooler_output"]),
    ModelSpec("gpt2", "GPT2LMHeadModel: 2 layers, n_embd 64, 4 heads, vocab 512, no KV cache", _gpt2,
              _text_inputs(["input_ids", "attention_mask"]), ["logits"]),
    ModelSpec("vit", "ViTModel: 2 layers, hidden 64, 4 heads, 32x32 image, patch 8", _vit,
              [InputSpec("pixel_values", "float32", ["batch", 3, IMAGE, IMAGE], -1.0, 1.0,
                         sample=[2, 3, IMAGE, IMAGE])],
              ["last_hidden_state", "pooler_output"]),
    ModelSpec("llama", "LlamaModel: 2 layers, hidden 64, 4 heads, 2 KV heads (GQA), RMSNorm, rotary, "
                       "vocab 512, no KV cache", _llama,
              _text_inputs(["input_ids", "attention_mask"]), ["last_hidden_state"], EXPORTS[1:]),
    ModelSpec("t5", "T5Model: encoder-decoder, 2+2 layers, d_model 64, 4 heads, relative position buckets, "
                    "vocab 512, no KV cache", _t5,
              _text_inputs(["input_ids", "attention_mask", "decoder_input_ids"]), ["last_hidden_state"],
              EXPORTS[1:]),   # no LayerNorm (RMSNorm): the opset-14 export is the opset-17 graph
]


def sample_inputs(spec: ModelSpec, seed: int = SEED):
    """Seeded sample tensors; the attention mask pads the tail of the second row (exercises masking)."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    tensors = []
    for inp in spec.inputs:
        if inp.dtype == "float32":
            t = torch.rand(inp.sample, generator=gen) * (inp.high - inp.low) + inp.low
        elif inp.name == "attention_mask":
            t = torch.ones(inp.sample, dtype=torch.int64)
            t[-1, inp.sample[1] // 2:] = 0
        else:
            t = torch.randint(int(inp.low), int(inp.high) + 1, inp.sample, generator=gen, dtype=torch.int64)
        tensors.append(t)
    return tuple(tensors)


def _dynamic_axes(spec: ModelSpec) -> Dict[str, Dict[int, str]]:
    return {i.name: {axis: d for axis, d in enumerate(i.shape) if isinstance(d, str)} for i in spec.inputs}


def _dynamic_shapes(spec: ModelSpec):
    import torch
    dims = {"batch": torch.export.Dim("batch", min=1, max=64),
            "sequence": torch.export.Dim("sequence", min=2, max=MAX_SEQ),
            "decoder_sequence": torch.export.Dim("decoder_sequence", min=2, max=MAX_SEQ)}
    # keyed by the wrapper's one parameter, *args: a tuple in argument order
    return {"args": tuple({axis: dims[d] for axis, d in enumerate(i.shape) if isinstance(d, str)} for i in spec.inputs)}


def export_one(spec: ModelSpec, opset: int, dynamo: bool, path: str) -> None:
    import torch
    torch.manual_seed(SEED)
    model = spec.build()
    args = sample_inputs(spec)
    names = [i.name for i in spec.inputs]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, args, path, input_names=names, output_names=spec.outputs,
                              dynamic_shapes=_dynamic_shapes(spec), opset_version=opset, dynamo=True,
                              external_data=False, verbose=False)
        else:
            torch.onnx.export(model, args, path, input_names=names, output_names=spec.outputs,
                              dynamic_axes=_dynamic_axes(spec), opset_version=opset, dynamo=False,
                              do_constant_folding=True)


def verify(spec: ModelSpec, path: str) -> Tuple[float, Dict[str, str]]:
    """Max abs difference PyTorch vs ONNX Runtime on the sample inputs, plus the ONNX dtypes of I/O."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    torch.manual_seed(SEED)
    model = spec.build()
    args = sample_inputs(spec)
    with torch.no_grad():
        expected = [t.numpy() for t in model(*args)]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(spec.outputs, {i.name: a.numpy() for i, a in zip(spec.inputs, args)})
    err = max(float(np.max(np.abs(e - g))) for e, g in zip(expected, got))
    proto = onnx.load(path)
    io = {v.name: onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)
          for v in list(proto.graph.input) + list(proto.graph.output)}
    return err, io


def _versions() -> Dict[str, str]:
    out = {}
    for mod in ("torch", "transformers", "onnxscript", "onnx", "onnxruntime"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    return out


def _manifest_order(entry: dict) -> Tuple[int, int]:
    """Models in MODELS order, each model's exports in EXPORTS order."""
    tag = entry["file"][len(entry["model"]) + 1:-len(".onnx")]
    return [m.name for m in MODELS].index(entry["model"]), [t for t, _, _ in EXPORTS].index(tag)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", help="directory for the .onnx files and manifest.json")
    p.add_argument("--models", default=",".join(m.name for m in MODELS), help="comma-separated subset")
    args = p.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    wanted = set(args.models.split(","))
    import onnx

    entries = []
    for spec in MODELS:
        if spec.name not in wanted:
            continue
        for tag, opset, dynamo in spec.exports:
            fname = f"{spec.name}_{tag}.onnx"
            path = os.path.join(args.out_dir, fname)
            export_one(spec, opset, dynamo, path)
            err, io = verify(spec, path)
            proto = onnx.load(path)
            import torch
            layernorms = sum(isinstance(m, torch.nn.LayerNorm) for m in spec.build().modules())
            entry = {
                "file": fname, "model": spec.name, "description": spec.description,
                "exporter": "dynamo" if dynamo else "torchscript", "opset": opset,
                "ir_version": proto.ir_version, "bytes": os.path.getsize(path), "nodes": len(proto.graph.node),
                "inputs": [dict(i.to_json(), onnx_dtype=io[i.name]) for i in spec.inputs],
                "outputs": [{"name": o, "onnx_dtype": io[o]} for o in spec.outputs],
                "layernorm_modules": layernorms,   # what fuse-layernorm should find (decomposed below opset 17)
                "torch_vs_ort_max_abs": err,
            }
            entries.append(entry)
            print(f"{fname:<22} {entry['bytes'] / 1024:7.1f} KiB  {entry['nodes']:4d} nodes  "
                  f"torch vs ORT max abs {err:.2e}", file=sys.stderr)
    manifest_path = os.path.join(args.out_dir, "manifest.json")
    if os.path.exists(manifest_path):   # models not exported this time keep their entries
        with open(manifest_path) as f:
            kept = [e for e in json.load(f)["models"] if e["model"] not in wanted]
        entries = sorted(kept + entries, key=_manifest_order)
    manifest = {"schema": "graphfix.exported/1", "seed": SEED, "versions": _versions(),
                "regenerate": "pip install torch==2.13.0 transformers onnxscript && "
                              "python scripts/export_models.py fixtures/exported",
                "models": entries}
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    total = sum(e["bytes"] for e in entries)
    print(f"{len(entries)} models, {total / 1024 / 1024:.2f} MiB in {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
