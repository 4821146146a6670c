"""emulate-types on the ONNX backend node tests that hold DOUBLE, INT8, UINT8, INT16 or UINT16 tensors.

For each such test: `graphfix fix --trt TRT` (ONNX Runtime check off: many originals have no ORT
kernel for these types), with and without --int32-io; whether emulate-types rewrote it; whether the
fixed model still gives the test's expected outputs (ONNX Runtime on the fixed model, inputs cast
to its input types, integers exact, floats within emulate-types' declared tolerance); and, with
--rtx, whether TensorRT-RTX parses and builds the raw and the fixed model (ahead of time, CPU).

    python benchmarks/emulate_types_node_tests.py --trt 8.6 --out results.json [--rtx] [--node-dir DIR]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

TYPES = {TensorProto.DOUBLE: "DOUBLE", TensorProto.INT8: "INT8", TensorProto.UINT8: "UINT8",
         TensorProto.INT16: "INT16", TensorProto.UINT16: "UINT16"}


RANDOM_OPS = {"Bernoulli", "RandomUniformLike", "RandomNormalLike", "RandomUniform", "RandomNormal", "Multinomial"}


def types_in(model: onnx.ModelProto) -> list:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    found = {vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.output) + list(g.value_info)}
    found |= {t.data_type for t in g.initializer}
    for node in g.node:
        for a in node.attribute:
            if a.name in ("to", "dtype"):
                found.add(a.i)
            if a.type == onnx.AttributeProto.TENSOR:
                found.add(a.t.data_type)
    return sorted(TYPES[t] for t in found if t in TYPES)


def _load_pbs(pattern: str, model: onnx.ModelProto, io) -> dict:
    out = {}
    for i, path in enumerate(sorted(glob.glob(pattern))):
        t = onnx.TensorProto()
        with open(path, "rb") as f:
            t.ParseFromString(f.read())
        out[t.name or io[i].name] = numpy_helper.to_array(t)
    return out


def matches_expected(test_dir: str, fixed: onnx.ModelProto, tol) -> str:
    """'match', 'mismatch: ...', or 'not run: ...' for the fixed model on test_data_set_0."""
    from graphfix.checks.ort import run_ort
    data = os.path.join(test_dir, "test_data_set_0")
    feeds = _load_pbs(os.path.join(data, "input_*.pb"), fixed, fixed.graph.input)
    expected = _load_pbs(os.path.join(data, "output_*.pb"), fixed, fixed.graph.output)
    types = {v.name: onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type) for v in fixed.graph.input
             if v.type.HasField("tensor_type")}
    feeds = {k: (np.asarray(v).astype(types[k]) if k in types else v) for k, v in feeds.items()}
    try:
        got = run_ort(fixed, feeds)
    except Exception as exc:
        return "not run: " + " ".join(str(exc).split())[:160]
    for name, want in expected.items():
        have = np.asarray(got.get(name))
        if have.shape != np.asarray(want).shape:
            return f"mismatch: {name} shape {have.shape} != {np.asarray(want).shape}"
        if np.issubdtype(np.asarray(want).dtype, np.floating):
            if not np.allclose(have.astype(np.float64), want, atol=tol[0], rtol=tol[1], equal_nan=True):
                return f"mismatch: {name} max abs {np.nanmax(np.abs(have - want)):.3g}"
        elif not np.array_equal(have.astype(np.int64) if have.dtype != bool else have,
                                np.asarray(want).astype(np.int64) if want.dtype != bool else want):
            return f"mismatch: {name} integer values differ"
    return "match"


def rtx_built(model: onnx.ModelProto) -> dict:
    from graphfix.checks.tensorrt.rtx import build_only
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        onnx.save(model, path)
        try:
            res = build_only(path, progress=False, timeout=120)
        except Exception as exc:
            return {"built": False, "error": " ".join(str(exc).split())[:160]}
    err = (res.errors[0].get("message", "") if res.errors else "") or ""
    return {"built": bool(res.passed), "error": " ".join(str(err).split())[:160]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trt", default="8.6")
    p.add_argument("--out", required=True)
    p.add_argument("--node-dir")
    p.add_argument("--rtx", action="store_true", help="also parse+build raw and fixed on TensorRT-RTX")
    args = p.parse_args(argv)
    import graphfix
    from graphfix.pass_api import PassContext
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from node_tests_regression import find_node_tests
    node_dir = find_node_tests(args.node_dir)
    rows = {}
    t0 = time.perf_counter()
    for name in sorted(os.listdir(node_dir)):
        path = os.path.join(node_dir, name, "model.onnx")
        if not os.path.isfile(path):
            continue
        raw = onnx.load(path)
        types = types_in(raw)
        if not types:
            continue
        row = {"types": types}
        if args.rtx:
            row["rtx_raw"] = rtx_built(raw)
        for io in (False, True):
            key = "int32_io" if io else "default"
            try:
                fixed, report = graphfix.fix(raw, trt=args.trt, check="none", context=PassContext(int32_io=io))
            except graphfix.GraphfixError as exc:
                row[key] = {"status": "input-error", "error": str(exc)[:160]}
                continue
            rec = next((r for r in report.passes if r.name == "emulate-types"), None)
            status = rec.status if rec else "absent"
            entry = {"emulate_types": status, "warnings": (rec.warnings if rec else [])[:2]}
            random = {n.op_type for n in raw.graph.node} & RANDOM_OPS
            if status == "applied" and random:
                entry["expected"] = f"random ({', '.join(sorted(random))}): not comparable"
            elif status == "applied":
                tol = (1e-4, 1e-3)   # emulate-types' declared tolerance (FP64 computed in FP32)
                entry["expected"] = matches_expected(os.path.join(node_dir, name), fixed, tol)
            if status == "applied" and args.rtx:
                entry["rtx"] = rtx_built(fixed)
            row[key] = entry
        rows[name] = row
    summary = {}
    for key in ("default", "int32_io"):
        applied = [n for n, r in rows.items() if r.get(key, {}).get("emulate_types") == "applied"]
        s = {"tests_with_types": len(rows), "rewritten": len(applied),
             "match_expected": sum(rows[n][key]["expected"] == "match" for n in applied),
             "mismatch": sorted(n for n in applied if rows[n][key]["expected"].startswith("mismatch")),
             "not_run": sorted(n for n in applied if rows[n][key]["expected"].startswith("not run")),
             "random": sorted(n for n in applied if rows[n][key]["expected"].startswith("random"))}
        if args.rtx:
            s["rtx_raw_built"] = sum(rows[n]["rtx_raw"]["built"] for n in applied)
            s["rtx_fixed_built"] = sum(rows[n][key]["rtx"]["built"] for n in applied)
            s["rtx_newly_built"] = sorted(n for n in applied if rows[n][key]["rtx"]["built"]
                                          and not rows[n]["rtx_raw"]["built"])
            s["rtx_lost"] = sorted(n for n in applied if rows[n]["rtx_raw"]["built"]
                                   and not rows[n][key]["rtx"]["built"])
        summary[key] = s
    doc = {"trt": args.trt, "node_dir": node_dir, "seconds": round(time.perf_counter() - t0, 1),
           "summary": summary, "tests": rows}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
