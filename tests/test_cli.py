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
    src, out, rep = write(tmp_path, "s.onnx", "check_reduce_axes_runtime"), str(tmp_path / "o.onnx"), str(tmp_path / "r.json")
    assert main(["fix", src, "-o", out, "--trt", "8.6", "--report", rep]) == 1
    doc = json.load(open(rep))
    assert doc["ok"] is False and doc["checks"][-1]["kind"] == "trt-check"
    # the manual step `graphfix check` gives, also in fix's verdict
    assert doc["checks"][-1]["remaining"][0]["remedy"].startswith(
        "no automatic fix; by hand: make that input a constant")
    assert main(["check", out, "--trt", "8.6", "--no-real-parser"]) == 1    # the same verdict
    assert "NOT OK" in capsys.readouterr().out


# -- bad input and output mistakes: exit 2, one line, nothing the input reads is touched -------------

from fuzz_cases import set_external, tiny_model  # noqa: E402  (generators shared with the fuzz harness)


def _one_error_line(capsys, *needles):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("graphfix: error: "), err
    assert all(n in err[0] for n in needles), err
    return err[0]


def _model_with_weights_file(tmp_path):
    """in/m.onnx whose MatMul weight lives in in/w.bin (raw float32 bytes)."""
    import numpy as np
    (tmp_path / "in").mkdir()
    model = tiny_model()
    set_external(model.graph.initializer[0], "w.bin")
    (tmp_path / "in" / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    (tmp_path / "in" / "m.onnx").write_bytes(model.SerializeToString())
    return str(tmp_path / "in" / "m.onnx"), str(tmp_path / "in" / "w.bin")


@pytest.mark.parametrize("flag", ["-o", "--report"])
@pytest.mark.parametrize("in_place", [False, True])
def test_output_or_report_onto_the_inputs_external_data_is_refused(tmp_path, capsys, flag, in_place):
    model, weights = _model_with_weights_file(tmp_path)
    before = open(weights, "rb").read()
    argv = ["fix", model, "-o", weights if flag == "-o" else str(tmp_path / "o.onnx"), "--quiet"]
    argv += (["--report", weights] if flag == "--report" else []) + (["--in-place"] if in_place else [])
    assert main(argv) == 2
    _one_error_line(capsys, weights, "external data the input model reads")
    assert open(weights, "rb").read() == before and not (tmp_path / "o.onnx").exists()


def test_report_onto_the_model_or_onto_the_output_is_refused(tmp_path, capsys):
    model, _ = _model_with_weights_file(tmp_path)
    out = str(tmp_path / "o.onnx")
    assert main(["fix", model, "-o", out, "--report", model, "--quiet"]) == 2
    _one_error_line(capsys, model, "refusing to overwrite")
    assert main(["fix", model, "-o", out, "--report", out, "--quiet"]) == 2
    _one_error_line(capsys, "--report and -o name the same file")


def test_fix_with_external_data_writes_a_self_contained_output(tmp_path, capsys):
    model, _ = _model_with_weights_file(tmp_path)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "fixed.onnx"
    assert main(["fix", model, "-o", str(out), "--trt", "8.6", "--quiet"]) == 0
    os.rename(tmp_path / "in", tmp_path / "gone")
    from graphfix.model_io import load_model
    assert load_model(str(out)).model.graph.node and os.listdir(tmp_path / "out") == ["fixed.onnx"]


def test_constant_with_cwd_relative_external_data_never_reaches_the_output(tmp_path, capsys, monkeypatch):
    """The fuzz finding: a Constant at '.ssh/id_rsa' was read from the current directory while folding."""
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa").write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    (tmp_path / "models").mkdir()
    model = tiny_model()
    set_external(model.graph.node[0].attribute[0].t, ".ssh/id_rsa")
    path = tmp_path / "models" / "m.onnx"
    path.write_bytes(model.SerializeToString())
    monkeypatch.chdir(tmp_path)
    assert main(["fix", "models/m.onnx", "-o", "out.onnx", "--quiet"]) == 2
    _one_error_line(capsys, "models/m.onnx", "'.ssh/id_rsa' does not exist")
    assert not (tmp_path / "out.onnx").exists()
    assert main(["check", "models/m.onnx"]) == 2
    _one_error_line(capsys, "models/m.onnx")


@pytest.mark.parametrize("make, problem", [
    (lambda d: "", "empty output path"),
    (lambda d: str(d), "is a directory"),
    (lambda d: str(d / "new") + "/", "is a directory"),
    (lambda d: str(d / "nope" / "o.onnx"), "directory does not exist"),
    (lambda d: str(d / ("x" * 300 + ".onnx")), "file name longer than"),
])
def test_bad_output_paths_exit_2_with_one_line(tmp_path, capsys, make, problem):
    src = write(tmp_path, "m.onnx", "identity_chain")
    for flag in ("-o", "--report"):
        argv = ["fix", src, "-o", make(tmp_path) if flag == "-o" else str(tmp_path / "o.onnx"), "--quiet"]
        if flag == "--report":
            argv += ["--report", make(tmp_path)]
        assert main(argv) == 2
        _one_error_line(capsys, problem.replace("output", "report") if flag == "--report" else problem)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_report_dash_is_standard_output(tmp_path, capsys):
    src = write(tmp_path, "m.onnx", "identity_chain")
    assert main(["fix", src, "-o", str(tmp_path / "o.onnx"), "--trt", "8.6", "--report", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["schema"] == "graphfix.report/1"   # the JSON alone
    assert "ok:" in captured.err and not (tmp_path / "-").exists()


def test_output_and_report_are_written_through_symlinks(tmp_path, capsys):
    src = write(tmp_path, "m.onnx", "identity_chain")
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real" / "o.onnx", tmp_path / "o.onnx")
    os.symlink(tmp_path / "real" / "r.json", tmp_path / "r.json")
    assert main(["fix", src, "-o", str(tmp_path / "o.onnx"), "--report", str(tmp_path / "r.json"),
                 "--trt", "8.6", "--quiet"]) == 0
    assert os.path.islink(tmp_path / "o.onnx") and os.path.islink(tmp_path / "r.json")
    assert onnx.load(str(tmp_path / "real" / "o.onnx")).graph.node
    assert json.load(open(tmp_path / "real" / "r.json"))["ok"] is True


def _bad_models():
    """name -> (model bytes, problem in the error line): inputs both fix and check must refuse."""
    from onnx import AttributeProto, TensorProto, helper
    from test_pipeline import _cyclic_model, _dangling_model
    out = {"cycle": (_cyclic_model().SerializeToString(), "cycle"),
           "dangling": (_dangling_model().SerializeToString(), "reads 'ghost'")}
    m = tiny_model()
    m.graph.initializer[0].raw_data = m.graph.initializer[0].raw_data[:8]
    out["short-raw-data"] = (m.SerializeToString(), "its data holds 8 bytes")
    m = tiny_model()
    m.ir_version = 99
    out["ir-99"] = (m.SerializeToString(), "IR version 99")
    m = tiny_model()
    m.opset_import[0].version = 0
    out["opset-0"] = (m.SerializeToString(), "ai.onnx opset 0")
    m = tiny_model()
    m.opset_import[0].domain = "not.default"
    out["no-default-opset"] = (m.SerializeToString(), "imports no opset of domain 'ai.onnx'")
    m = tiny_model()
    m.graph.input[0].type.tensor_type.elem_type = 77
    out["unknown-elem-type"] = (m.SerializeToString(), "unknown element type 77")
    m = tiny_model()
    m.graph.node[3].CopyFrom(helper.make_node("Softmax", ["a"], ["y"], name="sm", axis=1))
    m.graph.node[3].attribute[0].CopyFrom(helper.make_attribute("axis", 1.5))
    out["attribute-type"] = (m.SerializeToString(), "attribute 'axis' is FLOAT, the op's schema wants INT")
    m = tiny_model()
    m.graph.node[3].attribute.extend([AttributeProto(name="alpha", ref_attr_name="a", type=AttributeProto.FLOAT)])
    out["ref-attr-name"] = (m.SerializeToString(), "outside a function")
    out["non-utf8-name"] = (tiny_model().SerializeToString().replace(b"relu", b"r\xffu\xfe", 1), "not valid UTF-8")
    return out


@pytest.mark.parametrize("name", sorted(_bad_models()))
def test_fix_and_check_refuse_the_same_bad_inputs_with_one_line(tmp_path, capsys, name):
    data, problem = _bad_models()[name]
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    assert main(["fix", str(path), "-o", str(tmp_path / "o.onnx"), "--quiet"]) == 2
    _one_error_line(capsys, str(path), problem)
    assert main(["check", str(path)]) == 2
    _one_error_line(capsys, str(path), problem)
    assert not (tmp_path / "o.onnx").exists()


def test_fix_validates_the_result_even_when_no_pass_changes_it(tmp_path, capsys):
    """An op no schema knows in the default domain: checker and ONNX Runtime refuse it: not 'ok'."""
    m = tiny_model()
    m.graph.node[3].op_type = "Frobnicate"
    src = tmp_path / "m.onnx"
    src.write_bytes(m.SerializeToString())
    rep = tmp_path / "r.json"
    assert main(["fix", str(src), "-o", str(tmp_path / "o.onnx"), "--report", str(rep), "--quiet"]) == 1
    checks = {c["kind"]: c for c in json.load(open(rep))["checks"]}
    assert checks["onnx-checker"]["passed"] is False and "Frobnicate" in checks["onnx-checker"]["detail"]
    assert "neither ONNX's checker nor ONNX Runtime" in checks["onnx-checker"]["detail"]
    assert checks["ort"]["skipped"] and checks["ort"]["detail"].startswith("unchecked:")


def test_custom_domain_ops_are_unchecked_not_failed(tmp_path, capsys):
    """A TensorRT plugin op in its own domain: ONNX Runtime cannot load it; that is no failure."""
    from onnx import helper
    m = tiny_model()
    m.graph.node[3].op_type, m.graph.node[3].domain = "MyPlugin_TRT", "trt.plugins"
    m.opset_import.append(helper.make_opsetid("trt.plugins", 1))
    src = tmp_path / "m.onnx"
    src.write_bytes(m.SerializeToString())
    rep = tmp_path / "r.json"
    # exit 1 comes from the TensorRT verdict alone (a plugin op graphfix cannot vouch for), not from
    # ONNX Runtime or the checker
    assert main(["fix", str(src), "-o", str(tmp_path / "o.onnx"), "--report", str(rep), "--quiet"]) == 1
    checks = {c["kind"]: c for c in json.load(open(rep))["checks"]}
    assert checks["onnx-checker"]["passed"] is True
    assert checks["ort"]["skipped"] and "MyPlugin_TRT" in checks["ort"]["detail"]
    assert checks["trt-check"]["passed"] is False
    assert [r["op"] for r in checks["trt-check"]["remaining"]] == ["MyPlugin_TRT"]


def test_an_unreadable_input_exits_2(tmp_path, capsys):
    (tmp_path / "dir.onnx").mkdir()      # we run as root: a directory stands in for chmod 000
    assert main(["fix", str(tmp_path / "dir.onnx"), "-o", str(tmp_path / "o.onnx")]) == 2
    _one_error_line(capsys, "dir.onnx", "not a file")
    assert main(["check", str(tmp_path / "dir.onnx")]) == 2
    _one_error_line(capsys, "dir.onnx", "not a file")


def test_a_model_only_the_checker_rejects_is_unchecked_not_failed(tmp_path, capsys):
    """GroupNormalization-18 is deprecated (the checker refuses it) but ONNX Runtime runs it."""
    src = write(tmp_path, "m.onnx", "opset18_group_norm")
    rep = tmp_path / "r.json"
    assert main(["fix", src, "-o", str(tmp_path / "o.onnx"), "--passes", "cleanup", "--report", str(rep),
                 "--quiet"]) == 0
    checker = next(c for c in json.load(open(rep))["checks"] if c["kind"] == "onnx-checker")
    assert checker["skipped"] and "deprecated" in checker["detail"] and "ONNX Runtime loads it" in checker["detail"]
