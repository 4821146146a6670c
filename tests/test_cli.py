import json
import os
import subprocess
import sys

import onnx
import pytest

from graphfix.cli import main
from graphfix.fixtures import build


def write(tmp_path, name, fixture="example_encoder_block"):
    path = tmp_path / name
    onnx.save(build(fixture), str(path))
    return str(path)


def test_fix_writes_output_and_report(tmp_path, capsys):
    src = write(tmp_path, "in.onnx", "messy_graph")
    out, rep = str(tmp_path / "out.onnx"), str(tmp_path / "report.json")
    assert main(["fix", src, "-o", out, "--trt", "8.6", "--report", rep]) == 0
    doc = json.load(open(rep))
    assert doc["schema"] == "graphfix.report/1" and doc["ok"] is True
    assert doc["input"]["path"] == src and doc["output"]["path"] == out
    assert onnx.load(out).graph.node
    text = capsys.readouterr().out
    assert "normalize" in text and "ok:" in text


@pytest.mark.parametrize("content, problem", [
    (None, "no such file"),
    (b"garbage\x00\xff", "not an ONNX model"),
    ("truncated", "not an ONNX model"),
    ("cycle", "cycle"),
    ("dangling", "reads 'ghost'"),
])
def test_bad_input_exits_2_with_one_line_naming_the_file(tmp_path, capsys, content, problem):
    path = tmp_path / "bad.onnx"
    if content == "truncated":
        data = build("example_encoder_block").SerializeToString()
        path.write_bytes(data[: len(data) - 40])
    elif content in ("cycle", "dangling"):
        from test_pipeline import _cyclic_model, _dangling_model
        onnx.save(_cyclic_model() if content == "cycle" else _dangling_model(), str(path))
    elif content is not None:
        path.write_bytes(content)
    out = tmp_path / "out.onnx"
    assert main(["fix", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and problem in err[0], err
    assert "Traceback" not in err[0]
    assert not out.exists()


def test_refuses_to_overwrite_input_without_in_place(tmp_path, capsys):
    src = write(tmp_path, "m.onnx", "messy_graph")
    before = open(src, "rb").read()
    assert main(["fix", src, "-o", src]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert open(src, "rb").read() == before
    assert main(["fix", src, "-o", src, "--in-place", "--trt", "8.6"]) == 0
    assert open(src, "rb").read() != before
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_unknown_pass_and_bad_usage_exit_2(tmp_path, capsys):
    src = write(tmp_path, "m.onnx")
    assert main(["fix", src, "-o", str(tmp_path / "o.onnx"), "--passes", "nope"]) == 2
    assert "unknown pass 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["fix", src])   # -o missing
    assert exit_info.value.code == 2


def test_failed_check_exits_1(tmp_path, monkeypatch):
    from test_pipeline import _BreakRelu
    from graphfix import registry
    monkeypatch.setattr(registry, "PIPELINE_ORDER", ["normalize", "test-breaker"] + registry.PIPELINE_ORDER[1:])
    registry.registered()
    monkeypatch.setitem(registry._REGISTRY, "test-breaker", _BreakRelu)
    src = write(tmp_path, "m.onnx", "identity_chain")
    assert main(["fix", src, "-o", str(tmp_path / "o.onnx"), "--trt", "8.6", "--quiet"]) == 1


def test_passes_lists_every_registered_pass(capsys):
    from graphfix.registry import ordered_passes
    assert main(["passes", "--json"]) == 0
    listed = [p["name"] for p in json.loads(capsys.readouterr().out)]
    assert listed == [c.info.name for c in ordered_passes()]
    assert main(["passes"]) == 0
    assert "fixes:" in capsys.readouterr().out


def test_python_dash_m_graphfix_runs(tmp_path):
    src = write(tmp_path, "m.onnx", "identity_chain")
    proc = subprocess.run([sys.executable, "-m", "graphfix", "fix", src, "-o", str(tmp_path / "o.onnx"),
                           "--trt", "8.6"], capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "cleanup" in proc.stdout


def test_fixtures_command_writes_models(tmp_path, capsys):
    assert main(["fixtures", str(tmp_path), "example_encoder_block"]) == 0
    assert onnx.load(str(tmp_path / "example_encoder_block.onnx")).graph.node
    assert main(["fixtures", str(tmp_path), "--list"]) == 0
    assert "example_encoder_block" in capsys.readouterr().out
    assert main(["fixtures", str(tmp_path), "nope"]) == 2


def test_shapes_per_symbol_and_input_values(tmp_path, capsys):
    import numpy as np
    from graphfix.fixtures.dynamic_inputs import sample_rate_config
    src, out, rep = str(tmp_path / "sr.onnx"), str(tmp_path / "out.onnx"), str(tmp_path / "r.json")
    onnx.save(sample_rate_config(), src)
    assert main(["fix", src, "-o", out, "--trt", "8.6", "--quiet"]) == 1      # unchecked: sr is unknown
    values = str(tmp_path / "values.npz")
    np.savez(values, sr=np.array(8000, dtype=np.int64))
    assert main(["fix", src, "-o", out, "--trt", "8.6", "--shapes", "n=64", "--inputs", values,
                 "--report", rep, "--quiet"]) == 0
    doc = json.load(open(rep))
    assert doc["inputs"]["shapes"]["x"] == [1, 64] and doc["inputs"]["given_values"] == ["sr"]


@pytest.mark.parametrize("shapes, message", [
    ("nn=64", "--shapes: no dim symbol named nn (symbols: n;"),
    ("X:1x4", "--shapes: no model input named X (inputs: x, sr; dim symbols: n)"),
    ("n=x", "bad --shapes entry 'n=x'"),
])
def test_misspelt_shapes_exit_2_with_the_real_names(tmp_path, capsys, shapes, message):
    from graphfix.fixtures.dynamic_inputs import sample_rate_config
    src = str(tmp_path / "sr.onnx")
    onnx.save(sample_rate_config(), src)
    assert main(["fix", src, "-o", str(tmp_path / "o.onnx"), "--shapes", shapes]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "o.onnx")


def test_fix_exits_1_when_check_still_flags_the_output(tmp_path, capsys):
    src, out, rep = write(tmp_path, "s.onnx", "check_scatter_reduction"), str(tmp_path / "o.onnx"), str(tmp_path / "r.json")
    assert main(["fix", src, "-o", out, "--trt", "8.6", "--report", rep]) == 1
    doc = json.load(open(rep))
    assert doc["ok"] is False and doc["checks"][-1]["kind"] == "trt-check"
    assert doc["checks"][-1]["remaining"][0]["remedy"] == "no automatic fix"
    assert main(["check", out, "--trt", "8.6", "--no-real-parser"]) == 1    # the same verdict
    assert "NOT OK" in capsys.readouterr().out
