"""benchmarks/rig_precision.py: import-safe without TensorRT, and its --dry-run prepares the models."""
import importlib.util
import json
import os

import onnx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script():
    spec = importlib.util.spec_from_file_location("rig_precision", os.path.join(REPO, "benchmarks", "rig_precision.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_prepares_mixed_models(tmp_path):
    out = tmp_path / "precision.json"
    assert _script().main([str(out), "--dry-run", "--models", "prec_attention_masks,prec_small_cnn"]) == 0
    doc = json.loads(out.read_text())
    assert doc["dry_run"] and [r["model"] for r in doc["models"]] == ["prec_attention_masks", "prec_small_cnn"]
    for row in doc["models"]:
        assert row["fix"]["ok"] and row["fix"]["precision"]["status"] == "applied" and row["builds"] == {}
        mixed = onnx.load(str(tmp_path / "precision.work" / (row["model"] + ".fp16mixed.onnx")))
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in mixed.graph.initializer)
    assert "Softmax" in doc["models"][0]["fix"]["precision"]["fp32_nodes"]["softmax"]
