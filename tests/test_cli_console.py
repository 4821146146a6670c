"""The command line's habits: --version, -v/-q everywhere, progress on stderr, closed pipes, a fix
summary in words, a grouped check table that fits the terminal, one rule for missing TensorRT,
flags refused where they do nothing, a fast `graphfix -h` and a package that installs cleanly.
Each through graphfix.cli.main(argv), and the process-level ones through the console script."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from graphfix import console
from graphfix.cli import add_verbosity_flags, build_parser, main
from graphfix.fixtures import build

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = ROOT / "fixtures" / "exported"
SCRIPT = shutil.which("graphfix", path=os.path.dirname(sys.executable)) or shutil.which("graphfix")


def saved(tmp_path, fixture="example_encoder_block", name=None) -> str:
    path = tmp_path / (name or f"{fixture}.onnx")
    onnx.save(build(fixture), str(path))
    return str(path)


def script(*args, **kw) -> subprocess.CompletedProcess:
    if SCRIPT is None:
        pytest.skip("the graphfix console script is not installed")
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=300, **kw)


# --- --version, -v/-q, -h -----------------------------------------------------------------------------

def test_version_through_main_and_console_script(capsys):
    import graphfix
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"graphfix {graphfix.__version__}"
    proc = script("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"graphfix {graphfix.__version__}"


def test_every_command_takes_v_and_q():
    parser = add_verbosity_flags(build_parser())
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert {"fix", "check", "validate", "passes", "fixtures"} <= set(sub.choices)
    for name, sp in sub.choices.items():
        flags = {s for a in sp._actions for s in a.option_strings}
        assert {"-v", "--verbose", "-q", "--quiet"} <= flags, name
    assert parser.parse_args(["-v", "passes"]).top_verbose == 1
    assert parser.parse_args(["passes", "-vv"]).verbose == 2


def test_help_imports_nothing_heavy():
    code = ("import sys, graphfix.cli as c\n"
            "p = c.add_verbosity_flags(c.build_parser())\n"
            "print(sorted(m for m in ('onnx', 'numpy', 'onnx_graphsurgeon', 'onnxruntime', 'polygraphy')"
            " if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    help_proc = script("-h")
    assert help_proc.returncode == 0 and "fix" in help_proc.stdout and "--version" in help_proc.stdout


def test_lazy_package_still_exposes_its_api():
    import graphfix
    import graphfix.plugin_rules as pr
    assert callable(graphfix.fix) and graphfix.Report.__name__ == "Report"
    assert pr.Rule.__name__ == "Rule" and callable(pr.register_rule)
    with pytest.raises(AttributeError):
        graphfix.no_such_name


# --- fix: summary, -q, -v, progress ---------------------------------------------------------------------

def test_fix_summary_in_words(tmp_path, capsys):
    src = saved(tmp_path)
    assert main(["fix", src, "-o", str(tmp_path / "o.onnx"), "--trt", "8.6"]) == 0
    out = capsys.readouterr().out
    assert "0 change(s)" not in out and "unchanged   " not in out           # no row per idle pass
    idle = [line for line in out.splitlines() if line.strip().startswith("nothing to do:")]
    assert len(idle) == 1 and "normalize" in idle[0] and "cleanup" in idle[0]
    assert "islands_narrowed" not in out and "sentinels_clamped" not in out  # counts named for people
    assert "INT64 tensor(s) narrowed to INT32" in out and "LayerNorm(s) fused" in out
    assert "JSON report" not in out
    assert out.strip().splitlines()[-1].startswith("ok: 4 pass(es) changed the model")


def test_fix_summary_names_rule_rewrites_and_normalize_changes(tmp_path, capsys):
    assert main(["fix", saved(tmp_path, "nms_topk_head"), "-o", str(tmp_path / "o.onnx"), "--trt", "8.6",
                 "--nms-plugin"]) == 0
    out = capsys.readouterr().out
    assert "plugins: 1 x efficient-nms (" in out and "efficient_nms" not in out
    assert main(["fix", saved(tmp_path, "messy_graph"), "-o", str(tmp_path / "o.onnx"), "--trt", "8.6"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if "normalize:" in x][0]
    assert "unused node(s) removed" in line and "topological order" in line and "change(s)" not in line


def test_fix_folds_repeated_warnings_and_v_lists_them(tmp_path, capsys):
    src = str(EXPORTED / "llama_dynamo18.onnx")
    assert main(["fix", src, "-o", str(tmp_path / "o.onnx"), "--trt", "8.6", "--check", "none"]) == 0
    out = capsys.readouterr().out
    assert out.count("RMSNorm-style chain") == 0 and "5 RMSNorm chain(s) seen" in out
    assert main(["fix", src, "-o", str(tmp_path / "o.onnx"), "--trt", "8.6", "--check", "none", "-v"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("RMSNorm-style chain") == 5
    assert re.search(r"\[\d+\.\d\ds\]", captured.out)                     # per-pass times with -v
    assert "pass 1/" in captured.err                                       # progress as plain lines


def test_fix_quiet_prints_nothing_when_ok_and_one_line_when_not(tmp_path, capsys, monkeypatch):
    src = saved(tmp_path, "identity_chain")
    assert main(["fix", src, "-o", str(tmp_path / "o.onnx"), "--trt", "8.6", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    from test_pipeline import _BreakRelu
    from graphfix import registry
    monkeypatch.setattr(registry, "PIPELINE_ORDER", ["normalize", "test-breaker"] + registry.PIPELINE_ORDER[1:])
    registry.registered()
    monkeypatch.setitem(registry._REGISTRY, "test-breaker", _BreakRelu)
    assert main(["fix", src, "-o", str(tmp_path / "o2.onnx"), "--trt", "8.6", "-q"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "test-breaker" in err[0] and err[0].startswith("graphfix: error:")


def test_progress_off_when_not_a_terminal_and_a_status_line_on_one(tmp_path, capsys, monkeypatch):
    src = saved(tmp_path)
    assert main(["fix", src, "-o", str(tmp_path / "o.onnx"), "--trt", "8.6"]) == 0
    assert capsys.readouterr().err == ""                     # captured stderr is not a terminal
    monkeypatch.setattr(console, "_is_tty", lambda stream: stream is sys.stderr)
    assert main(["fix", src, "-o", str(tmp_path / "o.onnx"), "--trt", "8.6"]) == 0
    captured = capsys.readouterr()
    assert "\r\x1b[K" in captured.err and "pass 2/" in captured.err and "fold-constants" in captured.err
    assert captured.err.endswith("\r\x1b[K")                   # the status line is cleared at the end
    assert "\r" not in captured.out
    assert main(["fix", src, "-o", str(tmp_path / "o.onnx"), "--trt", "8.6", "-q"]) == 0
    assert capsys.readouterr().err == ""                     # -q: no progress even on a terminal


def test_third_party_warnings_kept_off_unless_verbose():
    import warnings
    from polygraphy.logger import G_LOGGER
    console.configure(console.NORMAL)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.warn_explicit("overflow", RuntimeWarning, "comparator.py", 1, module="polygraphy.comparator")
        assert seen == []
        G_LOGGER.module_severity = G_LOGGER.INFO
        console.quiet_libraries()
        assert G_LOGGER.module_severity.get() >= G_LOGGER.ERROR
    finally:
        console.reset()
    assert not console.is_configured()
    with warnings.catch_warnings(record=True) as seen:       # reset() gives the filters back
        warnings.simplefilter("always")
        warnings.warn_explicit("overflow", RuntimeWarning, "comparator.py", 1, module="polygraphy.comparator")
    assert len(seen) == 1


def test_console_script_progress_quiet_and_width(tmp_path):
    src, out = saved(tmp_path), str(tmp_path / "o.onnx")
    plain = script("fix", src, "-o", out, "--trt", "8.6")
    assert plain.returncode == 0 and plain.stderr == "" and "nothing to do:" in plain.stdout   # a pipe: no progress
    verbose = script("fix", src, "-o", out, "--trt", "8.6", "-v")
    # the last pass of the run, numbered out of all of them (cleanup comes last)
    assert verbose.returncode == 0 and re.search(r"graphfix: pass (\d+)/\1: cleanup", verbose.stderr)
    quiet = script("-q", "fix", src, "-o", out, "--trt", "8.6")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    narrow = script("check", str(EXPORTED / "llama_dynamo18.onnx"), "--trt", "8.6", "--no-real-parser",
                    env=dict(os.environ, COLUMNS="60"))
    assert narrow.returncode == 1 and max(len(line) for line in narrow.stdout.splitlines()) <= 60
    refused = script("fix", src, "-o", out, "--trt", "8.6", "--fp16")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr


# --- closed pipes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, code", [(["passes"], 0), (["passes", "--json"], 0), (["check", "NMS", "--trt", "8.6"], 1)])
def test_closed_stdout_gives_no_traceback(tmp_path, args, code):
    if SCRIPT is None:
        pytest.skip("the graphfix console script is not installed")
    if "NMS" in args:
        args = [a if a != "NMS" else saved(tmp_path, "check_reduce_axes_input") for a in args] + ["--no-real-parser"]
    proc = subprocess.Popen([SCRIPT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                     # like `| head` that already quit
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == code
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# --- check: grouped, fits the width, names the flag -----------------------------------------------------

def test_check_groups_by_op_and_reason_and_fits_the_width(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "72")
    src = str(EXPORTED / "llama_dynamo18.onnx")
    assert main(["check", src, "--trt", "8.6", "--no-real-parser"]) == 1
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 72
    assert "ReduceMean x5" in out and "+2 more" in out and out.count("node_mean") == 3
    assert "`graphfix fix --int32-io`" in " ".join(out.split())           # int64 I/O: the flag that helps
    assert "cannot predict a crash" in " ".join(out.split())               # 8.6 and opset 18
    assert main(["check", src, "--trt", "8.6", "--no-real-parser", "-v"]) == 1
    verbose = capsys.readouterr().out
    assert all(f"node_mean_{i}" in verbose for i in range(1, 5)) and "source:" in verbose
    assert main(["check", src, "--trt", "8.6", "--no-real-parser", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert sum(f["op"] == "ReduceMean" for f in doc["findings"]) == 5     # JSON keeps every node


def test_check_names_opt_in_flags_and_manual_steps_without_lab_notes(tmp_path, capsys):
    assert main(["check", saved(tmp_path, "check_nms"), "--trt", "8.6", "--no-real-parser"]) == 0
    out = capsys.readouterr().out
    assert "`graphfix fix --nms-plugin` (pass plugins)" in " ".join(out.split())
    assert "rig" not in out.lower().replace("original", "").replace("trigger", "")
    assert main(["check", saved(tmp_path, "check_unsupported_op"), "--trt", "8.6", "--no-real-parser"]) == 1
    out = capsys.readouterr().out
    assert "no automatic fix; by hand:" in " ".join(out.split()) and "--plugin-rules" in out


def test_check_groups_model_level_findings_and_counts_each_node_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["check", saved(tmp_path, "quantized_dynamic_mlp"), "--trt", "8.6", "--no-real-parser"]) == 1
    out = capsys.readouterr().out
    assert "tensor '…' is INT8" in out and "names: l1_wq, l1_wzp, l2_wq, +1 more" in out
    assert "DynamicQuantizeLinear x2: tensor '…' is UINT8" in out and "l1_dql, l1_dql" not in out


def test_check_verdict_counts_only_what_plain_fix_repairs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["check", saved(tmp_path, "check_nms"), "--trt", "8.6", "--no-real-parser"]) == 0
    verdict = [line for line in capsys.readouterr().out.splitlines() if line.startswith("0 error(s)")][0]
    assert verdict.endswith("still repairs the warnings above (int64-to-int32)")   # NMS needs --nms-plugin


def test_check_clean_model_says_what_fix_still_repairs(tmp_path, capsys):
    assert main(["check", saved(tmp_path), "--trt", "8.6", "--no-real-parser"]) == 0
    out = capsys.readouterr().out
    assert "clean" in out and "`graphfix fix` still repairs the warnings above" in " ".join(out.split())
    assert main(["check", saved(tmp_path), "--trt", "8.6", "--no-real-parser", "-q"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [
        "0 error(s), 0 wrong result(s), 6 warning(s): clean"]


def test_check_help_names_the_json_schema(capsys):
    from graphfix.diagnosis import SCHEMA
    with pytest.raises(SystemExit):
        main(["check", "-h"])
    assert SCHEMA in capsys.readouterr().out.replace("\n", " ").replace("  ", "")


# --- TensorRT missing; flags that do not apply ----------------------------------------------------------

def test_missing_tensorrt_one_rule_before_any_work(tmp_path, capsys, monkeypatch):
    from graphfix.checks.tensorrt import trt as trt_check
    from graphfix import pipeline
    monkeypatch.setattr(trt_check, "trt_unavailable_reason", lambda: "tensorrt is not installed")
    monkeypatch.setattr(pipeline, "fix", lambda *a, **k: pytest.fail("fix ran although TensorRT is missing"))
    src, out = saved(tmp_path), tmp_path / "o.onnx"
    for argv, what in ((["fix", src, "-o", str(out), "--check", "trt", "--trt", "8.6"], "--check trt"),
                       (["validate", src, src], "validate")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"graphfix: error: {what} needs TensorRT: tensorrt is not installed "
                       "(README: 'Installing TensorRT')"]
    assert not out.exists()


@pytest.mark.parametrize("extra, words", [
    (["--fp16"], "--fp16: used only with --check trt"),
    (["--min-shapes", "x:1x1", "--timing-cache", "c.bin"], "--min-shapes, --timing-cache: used only with --check trt"),
    (["--plugins", "lib.so"], "--plugins: used only with --check trt or --until-parses"),
    (["--plugin-as-function"], "--plugin-as-function needs TensorRT >= 10.7 (target: 8.6"),
    (["--trt", "7.1"], "TensorRT 7.1 (flag) is not supported: graphfix targets TensorRT 8.6 and newer"),
    (["--nms-plugin", "--skip", "plugins"], "--nms-plugin acts through the plugins pass, which --passes/--skip"),
    (["--dequantize", "float", "--passes", "normalize"], "--dequantize acts through the decompose-quantized pass"),
])
def test_flags_that_do_nothing_are_refused(tmp_path, capsys, extra, words):
    argv = ["fix", saved(tmp_path), "-o", str(tmp_path / "o.onnx")] + extra
    if "--trt" not in extra:
        argv += ["--trt", "8.6"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "o.onnx").exists()


def test_check_refuses_targets_below_8_6(tmp_path, capsys):
    assert main(["check", saved(tmp_path), "--trt", "7.1"]) == 2
    assert "not supported" in capsys.readouterr().err


def test_plugins_flag_does_not_swallow_the_models():
    from graphfix.commandline.trt import plugin_libraries
    args = add_verbosity_flags(build_parser()).parse_args(
        ["validate", "--plugins", "a.so", "orig.onnx", "fixed.onnx", "--plugins", "b.so,c.so"])
    assert (args.original, args.fixed) == ("orig.onnx", "fixed.onnx")
    assert plugin_libraries(args) == ["a.so", "b.so", "c.so"]


def test_fixtures_list_needs_no_directory(capsys):
    assert main(["fixtures", "--list"]) == 0
    assert "example_encoder_block" in capsys.readouterr().out.split()
    assert main(["fixtures"]) == 2
    assert "give a directory" in capsys.readouterr().err


# --- the package ---------------------------------------------------------------------------------------

def test_package_metadata_license_and_extras():
    text = (ROOT / "pyproject.toml").read_text()
    assert "Version 2.0, January 2004" in (ROOT / "LICENSE").read_text()
    assert 'license = {text = "Apache-2.0"}' in text
    assert "License :: OSI Approved :: Apache Software License" in text
    assert all(f"Programming Language :: Python :: 3.{m}" in text for m in (9, 10, 11, 12))
    trt = re.search(r"^trt = \[(.*)\]$", text, re.M).group(1)
    assert "tensorrt==8.6.0;" in trt and "python_version < '3.11'" in trt   # never the bare NVIDIA-index stub


def test_building_leaves_the_tree_clean(tmp_path):
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    tree = tmp_path / "src"
    tree.mkdir()
    for name in ("pyproject.toml", "setup.cfg", "README.md", "LICENSE", ".build"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(str(ROOT / name), str(tree / name))
    for name in ("graphfix", "passes", "fixtures"):
        shutil.copytree(str(ROOT / name), str(tree / name), ignore=shutil.ignore_patterns("__pycache__"))
    before = sorted(p.name for p in tree.iterdir())
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist")], cwd=str(tree), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in tree.iterdir()) == before        # no build/, no graphfix.egg-info
    import zipfile
    wheel = next((tmp_path / "dist").glob("graphfix-*.whl"))
    names = zipfile.ZipFile(str(wheel)).namelist()
    assert any(n.endswith(".dist-info/LICENSE") for n in names)
    assert "graphfix/console.py" in names and "graphfix/passes/normalize.py" in names
