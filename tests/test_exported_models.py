"""graphfix on real exporter output: the committed BERT/GPT-2/ViT exports in fixtures/exported/
(TorchScript exporter at opsets 14 and 17, dynamo exporter at opset 18) and Llama/T5 ones (opset 17
and dynamo 18; they have no LayerNorm to decompose at 14); see scripts/export_models.py.

For each: the pipeline for TensorRT 8.6 ends ok, ONNX Runtime gives the same outputs before and after
at two input shapes (the dynamic axes grown), a second run changes nothing, and each pass did what
this kind of export needs (LayerNorms fused where the exporter decomposed them, INT64 narrowed,
no pass failed). Passes not registered yet are skipped by name.
"""
import functools
import importlib.util
import os

import onnx
import pytest

from graphfix.registry import registered
from graphfix.report import FAILED, ROLLED_BACK, SKIPPED

_HERE = os.path.dirname(os.path.abspath(__file__))
_SPEC = importlib.util.spec_from_file_location(
    "exported_summary", os.path.join(_HERE, "..", "benchmarks", "exported_summary.py"))
summary = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(summary)

MANIFEST = summary.load_manifest()
ENTRIES = {e["file"]: e for e in MANIFEST["models"]}
FILES = sorted(ENTRIES)
TRT = "8.6"


@functools.lru_cache(maxsize=None)
def evaluated(file):
    """(record, fixed model, report) for one export; computed once per test session."""
    return summary.evaluate(ENTRIES[file], trt=TRT)


def _require(pass_name):
    if pass_name not in registered():
        pytest.skip(f"pass '{pass_name}' is not registered yet")


def test_manifest_lists_every_committed_model():
    on_disk = sorted(f for f in os.listdir(summary.EXPORTED_DIR) if f.endswith(".onnx"))
    assert on_disk == FILES
    assert {(e["model"], e["exporter"], e["opset"]) for e in ENTRIES.values()} == {
        (m, x, o) for m in ("bert", "gpt2", "vit") for x, o in (("torchscript", 14), ("torchscript", 17), ("dynamo", 18))
    } | {(m, x, o) for m in ("llama", "t5") for x, o in (("torchscript", 17), ("dynamo", 18))}
    total = sum(os.path.getsize(os.path.join(summary.EXPORTED_DIR, f)) for f in FILES)
    assert total < 10 * 1024 * 1024


@pytest.mark.parametrize("file", FILES)
def test_fix_is_ok_and_equivalent(file):
    rec, fixed, report = evaluated(file)
    assert report.ok, report.summary()
    for eq in rec["equivalence"]:
        assert eq["passed"], (eq["shapes"], eq["error"], eq["outputs"])
    onnx.checker.check_model(fixed, full_check=True)
    io = lambda m: [(v.name, v.type.tensor_type.elem_type) for v in list(m.graph.input) + list(m.graph.output)]
    assert io(fixed) == io(onnx.load(os.path.join(summary.EXPORTED_DIR, file)))


@pytest.mark.parametrize("file", FILES)
def test_second_fix_changes_nothing(file):
    import graphfix
    _, fixed, _ = evaluated(file)
    again, report = graphfix.fix(fixed, trt=TRT, check="none")
    assert not report.changed, [(p.name, p.changes[:3]) for p in report.passes if p.changes]
    assert again.SerializeToString() == fixed.SerializeToString()


@pytest.mark.parametrize("file", FILES)
def test_no_pass_failed_or_rolled_back(file):
    _, _, report = evaluated(file)
    bad = [(p.name, p.status, p.error) for p in report.passes if p.status in (FAILED, ROLLED_BACK)]
    assert not bad


@pytest.mark.parametrize("file", FILES)
def test_fuse_layernorm_fuses_every_decomposed_layernorm(file):
    _require("fuse-layernorm")
    rec, fixed, report = evaluated(file)
    entry = ENTRIES[file]
    p = next(p for p in report.passes if p.name == "fuse-layernorm")
    assert p.status not in (FAILED, ROLLED_BACK, SKIPPED), p.error
    if entry["opset"] < 17:  # no LayerNormalization op before opset 17: the exporter decomposed each one
        assert summary.headline(p) == entry["layernorm_modules"], (p.counts, p.warnings)
    else:                    # already LayerNormalization nodes: nothing to fuse, nothing lost
        assert summary.headline(p) == 0, (p.counts, p.changes[:3])
        assert rec["layernorm_nodes"]["after"] == entry["layernorm_modules"]


@pytest.mark.parametrize("file", FILES)
def test_int64_narrowed_for_trt86(file):
    _require("int64-to-int32")
    rec, _, report = evaluated(file)
    p = next(p for p in report.passes if p.name == "int64-to-int32")
    assert p.status not in (FAILED, ROLLED_BACK, SKIPPED), p.error
    # every export computes shapes and positions in INT64; narrowing must find some of it
    assert summary.headline(p) > 0, p.counts
    assert rec["int64_constants"]["after"] < rec["int64_constants"]["before"]


@pytest.mark.parametrize("pass_name", ["cast-bool", "target-opset"])
@pytest.mark.parametrize("file", FILES)
def test_pass_ran_cleanly(file, pass_name):
    _require(pass_name)
    _, fixed, report = evaluated(file)
    p = next(p for p in report.passes if p.name == pass_name)
    assert p.status not in (FAILED, ROLLED_BACK, SKIPPED), p.error
    if pass_name == "target-opset":
        opset = next(o.version for o in fixed.opset_import if o.domain in ("", "ai.onnx"))
        assert opset <= 17, "TensorRT 8.6's parser is validated up to opset 17"


def test_counts_are_collected_for_the_closing_note(capsys):
    records = [evaluated(f)[0] for f in FILES]
    text = summary.table(records)
    with capsys.disabled():
        print("\n" + text)
    assert len(text.splitlines()) == len(FILES) + 2
