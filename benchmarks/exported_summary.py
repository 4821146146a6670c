"""What graphfix does to real exporter output: the committed BERT/GPT-2/ViT exports, per pass.

For each model in fixtures/exported/manifest.json: ``graphfix.fix(path, trt=..., check="ort")``,
then ONNX Runtime on the original and the fixed model at two input shapes (the export's sample
shape and a larger one, to exercise the dynamic axes), and the headline count of each pass:
LayerNorms fused, INT64 tensors narrowed, bool casts inserted, target-opset changes.

    python benchmarks/exported_summary.py                     # table; JSON to exported_summary.json
    python benchmarks/exported_summary.py --trt 10.0 --out exported_10.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORTED_DIR = os.path.join(REPO, "fixtures", "exported")

# pass name -> (column title, count keys to read in order); no key found: the number of changes
HEADLINES = {
    "fuse-layernorm": ("LN fused", ("layernorms_fused",)),
    "int64-to-int32": ("INT64 narrowed", ("tensors_narrowed",)),
    "cast-bool": ("bool casts", ("casts_inserted",)),
    "target-opset": ("opset changes", ()),
}


def load_manifest(directory: str = EXPORTED_DIR) -> Dict[str, Any]:
    with open(os.path.join(directory, "manifest.json")) as f:
        return json.load(f)


def check_shapes(entry: Dict[str, Any]) -> List[Dict[str, List[int]]]:
    """The export's sample shapes, and every symbolic dim grown (batch 3, sequence 16)."""
    grown = {"batch": 3, "sequence": 16}
    sample = {i["name"]: list(i["sample_shape"]) for i in entry["inputs"]}
    larger = {i["name"]: [grown.get(d, s) if isinstance(d, str) else d for d, s in zip(i["shape"], i["sample_shape"])]
              for i in entry["inputs"]}
    return [sample, larger]


def headline(pass_report) -> Optional[int]:
    """The one number that says what a pass did to this model (None if it did not run)."""
    if pass_report is None or pass_report.status == "skipped":
        return None
    _, keys = HEADLINES.get(pass_report.name, ("", ()))
    for key in keys:
        if key in pass_report.counts:
            return int(pass_report.counts[key])
    if pass_report.name == "fuse-layernorm":
        return sum(1 for c in pass_report.changes if "fuse" in c.get("action", ""))
    return len(pass_report.changes)


def int64_constants(model) -> int:
    """INT64 initializers and Constant-node values: what TensorRT 8.6's parser warns about and casts."""
    import onnx
    n = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT64)
    for node in model.graph.node:
        if node.op_type == "Constant":
            n += sum(1 for a in node.attribute if a.name == "value" and a.t.data_type == onnx.TensorProto.INT64)
    return n


def op_count(model, op: str) -> int:
    return sum(1 for n in model.graph.node if n.op_type == op)


def evaluate(entry: Dict[str, Any], directory: str = EXPORTED_DIR, trt: str = "8.6"
             ) -> Tuple[Dict[str, Any], Any, Any]:
    """(JSON-ready record, fixed ModelProto, Report) for one exported model."""
    import onnx
    import graphfix
    from graphfix.checks.ort import compare_models

    path = os.path.join(directory, entry["file"])
    original = onnx.load(path)
    t0 = time.perf_counter()
    fixed, report = graphfix.fix(path, trt=trt, check="ort")
    seconds = time.perf_counter() - t0
    equivalence = []
    for shapes in check_shapes(entry):
        eq = compare_models(original, fixed, shapes=shapes)
        equivalence.append({"shapes": shapes, "passed": eq.passed, "error": eq.error,
                            "max_abs": max((o.max_abs for o in eq.outputs), default=None),
                            "outputs": [o.to_json() for o in eq.outputs]})
    by_name = {p.name: p for p in report.passes}
    rec = {
        "file": entry["file"], "model": entry["model"], "exporter": entry["exporter"], "opset": entry["opset"],
        "trt": trt, "ok": report.ok, "changed": report.changed, "seconds": round(seconds, 3),
        "passes": {name: {"status": by_name[name].status if name in by_name else "not registered",
                          "headline": headline(by_name.get(name)),
                          "counts": dict(by_name[name].counts) if name in by_name else {},
                          "warnings": len(by_name[name].warnings) if name in by_name else 0,
                          "error": by_name[name].error if name in by_name else None}
                   for name in [p.name for p in report.passes] + [n for n in HEADLINES if n not in by_name]},
        "layernorm_modules": entry.get("layernorm_modules"),
        "layernorm_nodes": {"before": op_count(original, "LayerNormalization"),
                            "after": op_count(fixed, "LayerNormalization")},
        "int64_constants": {"before": int64_constants(original), "after": int64_constants(fixed)},
        "nodes": {"before": len(original.graph.node), "after": len(fixed.graph.node)},
        "opset": {"before": report.input["opsets"].get("ai.onnx"), "after": report.output["opsets"].get("ai.onnx")},
        "equivalence": equivalence,
        "max_abs": max((e["max_abs"] or 0.0) for e in equivalence),
        "equivalent": all(e["passed"] for e in equivalence),
        "report": report.to_json(),
    }
    return rec, fixed, report


def table(records: List[Dict[str, Any]]) -> str:
    cols = [HEADLINES[n][0] for n in HEADLINES]
    head = f"{'model':<20} {'ok':<3} " + " ".join(f"{c:>14}" for c in cols) + \
           f" {'INT64 consts':>13} {'LN ops':>7} {'opset':>6} {'max ORT err':>12} {'secs':>5}"
    lines = [head, "-" * len(head)]
    for r in records:
        cells = []
        for name in HEADLINES:
            p = r["passes"].get(name, {})
            h = p.get("headline")
            cells.append(f"{(str(h) if h is not None else p.get('status', '-')):>14}")
        lines.append(f"{r['file'][:-5]:<20} {'yes' if r['ok'] and r['equivalent'] else 'NO':<3} " + " ".join(cells)
                     + f" {r['int64_constants']['before']:>5} -> {r['int64_constants']['after']:<4}"
                     + f" {r['layernorm_nodes']['before']}->{r['layernorm_nodes']['after']:<4}"
                     + f" {r['opset']['before']}->{r['opset']['after']:<2}"
                     + f" {r['max_abs']:>12.3g} {r['seconds']:>5.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default=EXPORTED_DIR, help="exported models and manifest.json")
    p.add_argument("--trt", default="8.6")
    p.add_argument("--out", default="exported_summary.json")
    args = p.parse_args(argv)
    manifest = load_manifest(args.dir)
    records = []
    for entry in manifest["models"]:
        rec, _, _ = evaluate(entry, args.dir, args.trt)
        records.append(rec)
        sys.stderr.write(f"  {entry['file']}: {'ok' if rec['ok'] else 'NOT OK'}, max abs {rec['max_abs']:.3g}\n")
    from graphfix.registry import ordered_passes
    doc = {"schema": "graphfix.exported-summary/1", "trt": args.trt, "exported": manifest.get("versions"),
           "passes": [c.info.name for c in ordered_passes()], "models": records}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1, default=str)
        f.write("\n")
    print(f"graphfix on exported models, TensorRT {args.trt} "
          f"(counts: pass headline, or its status when it did not run)")
    print(table(records))
    print(f"JSON: {args.out}")
    return 0 if all(r["ok"] and r["equivalent"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
