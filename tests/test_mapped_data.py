"""graphfix/mapped_data.py: `graphfix fix` leaves big weights in the input's external-data files.

The weights are read on demand from the descriptors opened (and checked) at load, copied file to
file at save, and given to ONNX Runtime by the validated file's real path, so that its checks run
on models over 2 GiB too. The threshold is lowered so that small fixtures take these paths.
"""
import json
import os

import numpy as np
import onnx
import pytest

from graphfix import mapped_data, model_io, weights
from graphfix.cli import main
from graphfix.errors import InputError
from graphfix.fixtures import build
from graphfix.model_io import load_model, save_model
from graphfix.pipeline import fix
from gf_testing import random_feeds


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch):
    monkeypatch.setattr(weights, "BIG_TENSOR_BYTES", 1024)   # the 32x32 MatMul weights (4 KiB)


def write_external(directory, name="m.onnx", model=None):
    """The matmul_ln_blocks fixture saved with every tensor over 64 bytes in NAME.data beside it."""
    model = model or build("matmul_ln_blocks")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=name + ".data", size_threshold=64)
    return path


def run_ort(path, feeds):
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def fixed_by_the_api(path, out):
    """The reference output: the weights loaded into the model (no file stays open)."""
    fixed, _ = fix(load_model(str(path)), trt="10.0", check="none")
    save_model(fixed, str(out))
    return out.read_bytes()


def cli_fix(path, out, *extra):
    report = str(out) + ".json"
    code = main(["-q", "fix", str(path), "-o", str(out), "--trt", "10.0", "--report", report, *extra])
    with open(report) as f:
        return code, json.load(f)


def pass_check(report, name="fuse-layernorm"):
    return next(p for p in report["passes"] if p["name"] == name)["check"]


def test_big_weights_stay_in_the_file_as_stubs_read_on_demand(tmp_path):
    path = write_external(tmp_path / "in")
    loaded = load_model(str(path), keep_weights_in_files=True)
    try:
        kept = [t for t in loaded.model.graph.initializer if mapped_data.is_mapped(t)]
        assert sorted(t.name for t in kept) == ["b0.W", "b1.W"]          # gamma/beta (128 B) embedded
        assert all(not t.raw_data for t in kept)                          # no bytes in the model
        expected = onnx.numpy_helper.to_array(build("matmul_ln_blocks").graph.initializer[0])
        np.testing.assert_array_equal(mapped_data.values(kept[0]), expected)
        assert loaded.files == sorted(loaded.files[:1]) + [os.path.realpath(str(path) + ".data")]
    finally:
        mapped_data.release()


def test_the_cli_output_is_the_apis_byte_for_byte_and_the_ort_check_ran(tmp_path):
    path = write_external(tmp_path / "in")
    expected = fixed_by_the_api(path, tmp_path / "api.onnx")
    for check in ("ort", "none"):
        out = tmp_path / f"cli-{check}.onnx"
        code, report = cli_fix(path, out, "--check", check)
        assert code == 0, report
        assert out.read_bytes() == expected                  # weights copied file to file, embedded
        assert not os.path.exists(str(out) + ".data")
    check = pass_check(report := cli_fix(path, tmp_path / "again.onnx")[1])
    assert check["passed"] is True and not check.get("unchecked"), check
    assert report["checks"][0]["kind"] == "ort" and report["checks"][0]["passed"] is True
    feeds = random_feeds(build("matmul_ln_blocks"), shapes={"x": [3, 32]})
    np.testing.assert_allclose(run_ort(tmp_path / "cli-ort.onnx", feeds), run_ort(path, feeds), atol=1e-5, rtol=1e-4)
    assert mapped_data.files() == []                          # descriptors closed at the end of the run


def test_the_ort_checks_run_on_a_model_over_the_protobuf_limit(tmp_path, monkeypatch):
    """Over 2 GiB (a limit lowered here to 4 KiB): ONNX Runtime reads the weights from the input's
    file, so the checks run, where the model handed over as bytes was 'unchecked'."""
    from graphfix.checks.ort import ort_reads_folder
    if not ort_reads_folder():
        pytest.skip("ONNX Runtime < 1.21 does not read a bytes model's weights from a folder (the fallback "
                    "embeds them: test_an_onnx_runtime_without_the_folder_option_gets_the_weights_embedded)")
    monkeypatch.setattr(weights, "PROTOBUF_LIMIT", 4096)
    path = write_external(tmp_path / "in")
    report = fix(load_model(str(path)), trt="10.0")[1].to_json()   # weights loaded: too big for bytes
    assert pass_check(report)["unchecked"] is True
    fixed, report = fix(str(path), trt="10.0")     # given the path, the API keeps them in the file too
    assert pass_check(report.to_json())["passed"] is True
    assert not any(mapped_data.is_mapped(t) for t in fixed.graph.initializer)   # returned embedded
    assert mapped_data.files() == []                                            # and the file closed
    out = tmp_path / "out.onnx"
    code, report = cli_fix(path, out)
    assert code == 0, report
    assert pass_check(report)["passed"] is True and not pass_check(report).get("unchecked")
    assert report["checks"][0]["passed"] is True
    assert os.path.getsize(str(out) + ".data") >= 2 * 32 * 32 * 4   # over the limit: weights beside OUT
    feeds = random_feeds(build("matmul_ln_blocks"), shapes={"x": [2, 32]})
    np.testing.assert_allclose(run_ort(out, feeds), run_ort(path, feeds), atol=1e-5, rtol=1e-4)
    code, again = cli_fix(out, tmp_path / "twice.onnx")           # idempotent on its own output
    assert code == 0 and not [p for p in again["passes"] if p["status"] == "applied"]


def test_a_stub_is_never_opened_from_the_current_directory(tmp_path, monkeypatch):
    """Decoys named like the stubs' locations, in the current directory: nothing reads them."""
    path = write_external(tmp_path / "in")
    expected = fixed_by_the_api(path, tmp_path / "api.onnx")
    decoys = tmp_path / "cwd" / mapped_data.MAPPED
    decoys.mkdir(parents=True)
    for i in range(200):
        (decoys / str(i)).write_bytes(b"\xff" * 8192)
    monkeypatch.chdir(tmp_path / "cwd")
    code, report = cli_fix(path, tmp_path / "out.onnx")
    assert code == 0, report
    assert (tmp_path / "out.onnx").read_bytes() == expected


def test_weights_in_a_symlinked_snapshot_are_read_beside_the_links_target(tmp_path):
    """Hugging Face's cache: snapshots/rev/{m.onnx, m.onnx.data} link into blobs/. ONNX Runtime is
    given the real file (it refuses locations that lead out of the folder)."""
    src = write_external(tmp_path / "src")
    blobs, snap = tmp_path / "blobs", tmp_path / "snapshots" / "rev"
    blobs.mkdir()
    snap.mkdir(parents=True)
    os.replace(src, blobs / "aaa")
    os.replace(str(src) + ".data", blobs / "bbb")
    os.symlink("../../blobs/aaa", snap / "m.onnx")
    os.symlink("../../blobs/bbb", snap / "m.onnx.data")
    code, report = cli_fix(snap / "m.onnx", tmp_path / "out.onnx")
    assert code == 0, report
    assert pass_check(report)["passed"] is True
    feeds = random_feeds(build("matmul_ln_blocks"), shapes={"x": [2, 32]})
    np.testing.assert_allclose(run_ort(tmp_path / "out.onnx", feeds), run_ort(snap / "m.onnx", feeds),
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("attack", ["dotdot", "symlink-out", "hard-link", "short"])
def test_unsafe_external_data_is_refused_before_anything_stays_in_a_file(tmp_path, attack):
    model_dir = tmp_path / "in"
    path = write_external(model_dir)
    data = model_dir / "m.onnx.data"
    model = onnx.load(str(path), load_external_data=False)
    w = next(t for t in model.graph.initializer if t.name == "b0.W")
    location = {e.key: e for e in w.external_data}["location"]
    outside = tmp_path / "secret.bin"
    outside.write_bytes(data.read_bytes())
    if attack == "dotdot":
        location.value = "../secret.bin"
    elif attack == "symlink-out":
        os.symlink(outside, model_dir / "link.bin")
        location.value = "link.bin"
    elif attack == "hard-link":
        os.link(outside, model_dir / "hard.bin")
        location.value = "hard.bin"
    else:
        with open(data, "r+b") as f:
            f.truncate(100)
    path.write_bytes(model.SerializeToString())
    with pytest.raises(InputError) as err:
        load_model(str(path), keep_weights_in_files=True)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not mapped_data.files()                      # nothing kept open for a refused model
    assert main(["-q", "fix", str(path), "-o", str(tmp_path / "out.onnx")]) == 2


def test_an_onnx_runtime_without_the_folder_option_gets_the_weights_embedded(tmp_path, monkeypatch):
    """Before 1.21 ONNX Runtime ignores session.model_external_initializers_file_folder_path and
    would look for the files in the current directory: it gets the weights in the bytes instead."""
    from graphfix.checks import ort as ort_check
    monkeypatch.setattr(ort_check, "ort_reads_folder", lambda: False)
    path = write_external(tmp_path / "in")
    expected = fixed_by_the_api(path, tmp_path / "api.onnx")
    code, report = cli_fix(path, tmp_path / "out.onnx")
    assert code == 0 and pass_check(report)["passed"] is True, report
    assert (tmp_path / "out.onnx").read_bytes() == expected
    monkeypatch.setattr(weights, "PROTOBUF_LIMIT", 4096)     # over the limit: unchecked, as before
    code, report = cli_fix(path, tmp_path / "big.onnx")
    assert pass_check(report)["unchecked"] is True


def test_a_pipe_as_output_gets_the_kept_weights_embedded(tmp_path):
    """-o /dev/stdout on a pipe: the weights left in the file are streamed through, not copied file
    to file (a pipe has no offsets). A 160x160 weight (100 KiB) passes the real threshold."""
    import subprocess
    import sys
    from onnx import TensorProto, helper
    from graphfix.fixtures._make import make_model, vi, weight
    # x[1,160] --MatMul(W[160x160])--> y[1,160]
    model = make_model([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
                       [vi("x", TensorProto.FLOAT, [1, 160])], [vi("y", TensorProto.FLOAT, [1, 160])],
                       [weight("W", [160, 160], seed=3)])
    expected = onnx.numpy_helper.to_array(model.graph.initializer[0])
    path = write_external(tmp_path / "in", model=model)    # (moves the model's weights out)
    proc = subprocess.run([sys.executable, "-m", "graphfix", "-q", "fix", str(path), "-o", "/dev/stdout",
                           "--trt", "10.0"], capture_output=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = onnx.load_from_string(proc.stdout)
    assert out.graph.initializer[0].data_location == TensorProto.DEFAULT
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(out.graph.initializer[0]), expected)
