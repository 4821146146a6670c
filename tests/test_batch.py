"""`graphfix fix` on many models (graphfix/commandline/batch.py), through graphfix.cli.main."""
import json
import os
import sys

import onnx
import pytest

from graphfix.commandline import batch
from graphfix.cli import main
from graphfix.fixtures import build

from fuzz_cases import tiny_model  # noqa: E402  (generators shared with the fuzz harness)


def _write(path, model):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(model, str(path))
    return str(path)


def _frobnicated():
    """A model the checker rejects (an op no schema knows): fix writes it and exits 1."""
    m = tiny_model()
    m.graph.node[3].op_type = "Frobnicate"
    return m


@pytest.fixture
def models(tmp_path):
    """in/ holds two good models and a broken file; one more good model is given as a file."""
    d = tmp_path / "in"
    _write(d / "a.onnx", build("messy_graph"))
    _write(d / "b.onnx", build("identity_chain"))
    (d / "broken.onnx").write_bytes(b"this is not protobuf\x00\xff")
    (d / "notes.txt").write_text("not a model: ignored")
    extra = _write(tmp_path / "extra" / "c.onnx", tiny_model())
    return tmp_path, str(d), extra


def test_a_broken_model_among_good_ones(models, capsys):
    tmp_path, directory, extra = models
    out = str(tmp_path / "out") + "/"
    assert main(["fix", directory, extra, "-o", out, "--trt", "8.6", "--jobs", "2"]) == 2   # worst code
    text = capsys.readouterr().out
    summary = json.load(open(tmp_path / "out" / "summary.json"))
    assert summary["schema"] == "graphfix.batch/1" and summary["exit_code"] == 2
    rows = {os.path.basename(m["input"]): m for m in summary["models"]}
    assert list(rows) == ["a.onnx", "b.onnx", "broken.onnx", "c.onnx"]   # directory sorted, then the file
    assert summary["counts"] == {"ok": 3, "not ok": 0, "bad input": 1, "crashed": 0}
    assert rows["broken.onnx"]["verdict"] == "bad input" and rows["broken.onnx"]["output"] is None
    assert "not an ONNX model" in rows["broken.onnx"]["error"]
    assert json.load(open(rows["broken.onnx"]["report"]))["exit_code"] == 2
    assert not (tmp_path / "out" / "broken.onnx").exists()
    for name in ("a", "b", "c"):
        row = rows[name + ".onnx"]
        report = json.load(open(row["report"]))
        assert report["schema"] == "graphfix.report/1" and report["ok"] and row["verdict"] == "ok"
        assert row["passes_changed"] == sum(p["status"] == "applied" for p in report["passes"])
        assert onnx.load(row["output"]).graph.node
    assert rows["a.onnx"]["passes_changed"] >= 1          # messy_graph needs normalizing
    # the table: one line per model, the error line, the totals
    for name in ("a.onnx", "b.onnx", "broken.onnx", "c.onnx", "not an ONNX model", "4 model(s)"):
        assert name in text


def test_batch_output_is_what_the_single_model_path_writes(models):
    tmp_path, directory, _ = models
    single = str(tmp_path / "single.onnx")
    assert main(["fix", os.path.join(directory, "a.onnx"), "-o", single, "--trt", "8.6", "--quiet"]) == 0
    assert main(["fix", os.path.join(directory, "a.onnx"), os.path.join(directory, "b.onnx"),
                 "-o", str(tmp_path / "out") + "/", "--trt", "8.6", "--quiet"]) == 0
    assert (tmp_path / "out" / "a.onnx").read_bytes() == open(single, "rb").read()


def test_exit_code_is_the_worst_and_a_failed_check_is_not_ok(tmp_path, capsys):
    good = _write(tmp_path / "good.onnx", build("identity_chain"))
    doubtful = _write(tmp_path / "doubtful.onnx", _frobnicated())
    assert main(["fix", good, doubtful, "-o", str(tmp_path / "out") + "/", "--quiet"]) == 1
    rows = {os.path.basename(m["input"]): m for m in json.load(open(tmp_path / "out" / "summary.json"))["models"]}
    assert rows["doubtful.onnx"]["verdict"] == "not ok" and rows["doubtful.onnx"]["exit_code"] == 1
    assert os.path.exists(rows["doubtful.onnx"]["output"])   # written and judged, like the single path
    assert rows["good.onnx"]["exit_code"] == 0
    assert capsys.readouterr().out == ""                      # --quiet


def crash_on_purpose(job):
    """Stands in for batch.fix_one in the workers: dies like a segfaulting native library."""
    if os.path.basename(job.input) == "crash.onnx":
        os._exit(139)
    return batch.fix_one(job)


def test_a_worker_that_dies_is_named_and_the_others_finish(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "fix_one", crash_on_purpose)   # spawned workers import it by name
    for name in ("a", "crash", "z"):
        _write(tmp_path / "in" / f"{name}.onnx", build("identity_chain"))
    assert main(["fix", str(tmp_path / "in"), "-o", str(tmp_path / "out") + "/", "--jobs", "2", "--quiet",
                 "--check", "none"]) == 1
    rows = {os.path.basename(m["input"]): m for m in json.load(open(tmp_path / "out" / "summary.json"))["models"]}
    assert rows["crash.onnx"]["verdict"] == "crashed" and "worker process died" in rows["crash.onnx"]["error"]
    assert rows["a.onnx"]["verdict"] == rows["z.onnx"]["verdict"] == "ok"
    assert sorted(os.listdir(tmp_path / "out")) == ["a.onnx", "a.report.json", "crash.report.json",
                                                    "summary.json", "z.onnx", "z.report.json"]


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("graphfix: error: "), err
    for needle in needles:
        assert needle in err[0], err


@pytest.mark.parametrize("case, problem", [
    ("same names", "would both be written to"),
    ("output is a file", "-o must be a directory, and this is a file"),
    ("output without slash", "end it with '/'"),
    ("report", "--report is for one model"),
    ("in-place", "--in-place is for one model"),
    ("empty directory", "no .onnx files"),
    ("output onto input", "refusing to write over an input model"),
    ("jobs", "--jobs must be at least 1"),
])
def test_ambiguous_or_colliding_requests_exit_2_before_any_work(tmp_path, capsys, case, problem):
    a = _write(tmp_path / "one" / "m.onnx", tiny_model())
    b = _write(tmp_path / "two" / "m.onnx" if case == "same names" else tmp_path / "two" / "n.onnx", tiny_model())
    out = str(tmp_path / "out") + "/"
    extra, more = [], []
    if case == "output is a file":
        out = _write(tmp_path / "file.onnx", tiny_model())
    elif case == "output without slash":
        out = str(tmp_path / "newdir")
    elif case == "report":
        extra = ["--report", str(tmp_path / "r.json")]
    elif case == "in-place":
        extra = ["--in-place"]
    elif case == "empty directory":
        os.makedirs(tmp_path / "empty")
        more = [str(tmp_path / "empty")]
    elif case == "output onto input":
        out = str(tmp_path / "one")
    elif case == "jobs":
        extra = ["--jobs", "0"]
    before = sorted(os.listdir(tmp_path))
    assert main(["fix", a, b] + more + ["-o", out, "--quiet"] + extra) == 2
    _one_error_line(capsys, problem)
    assert sorted(os.listdir(tmp_path)) == before     # nothing written, not even OUTDIR


def test_progress_line_only_on_a_terminal(tmp_path, capsys, monkeypatch):
    for name in ("a", "b"):
        _write(tmp_path / "in" / f"{name}.onnx", build("identity_chain"))
    argv = ["fix", str(tmp_path / "in"), "-o", str(tmp_path / "out") + "/", "--check", "none"]
    assert main(argv) == 0
    assert capsys.readouterr().err == ""                 # not a terminal: the table alone, on stdout
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "\r" in err and "2/2" in err and "b.onnx: ok" in err


def test_one_file_keeps_the_single_model_path(tmp_path, capsys):
    src = _write(tmp_path / "m.onnx", tiny_model())
    assert main(["fix", str(tmp_path), "-o", str(tmp_path / "o.onnx"), "--quiet"]) == 2   # as before
    _one_error_line(capsys, "not a file")
    assert main(["fix", src, "-o", str(tmp_path) + "/", "--quiet"]) == 2   # a directory is refused, as before
    _one_error_line(capsys, "is a directory")
    assert main(["fix", src, "-o", str(tmp_path / "o.onnx"), "--quiet"]) == 0
    assert not (tmp_path / "summary.json").exists()
