import os

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from graphfix.errors import InputError, OutputError
from graphfix.fixtures import build
from graphfix.model_io import load_model, save_model


def test_load_accepts_path_bytes_proto_and_graph(tmp_path):
    model = build("identity_chain")
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    for src in (str(path), path, model.SerializeToString(), model, gs.import_onnx(model)):
        loaded = load_model(src)
        assert [n.op_type for n in loaded.model.graph.node] == [n.op_type for n in model.graph.node]
    assert load_model(str(path)).path == str(path)


def test_load_copies_a_proto_so_the_caller_keeps_theirs():
    model = build("identity_chain")
    loaded = load_model(model)
    loaded.model.graph.node.pop()
    assert len(model.graph.node) == 5


@pytest.mark.parametrize("content, problem", [
    (None, "no such file"),
    (b"", "empty file"),
    (b"this is not a protobuf \xff\xfe", "not an ONNX model"),
])
def test_bad_files_raise_an_input_error_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as err:
        load_model(str(path))
    assert str(path) in str(err.value) and problem in str(err.value)


def test_truncated_model_is_an_input_error(tmp_path):
    data = build("example_encoder_block").SerializeToString()
    path = tmp_path / "trunc.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="trunc.onnx"):
        load_model(str(path))


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(InputError, match="not a file"):
        load_model(str(tmp_path))


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    out = tmp_path / "out.onnx"
    save_model(build("identity_chain"), str(out))
    assert onnx.load(str(out)).graph.node
    assert sorted(os.listdir(tmp_path)) == ["out.onnx"]


def test_save_refuses_to_overwrite_the_input_unless_asked(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(build("identity_chain"), str(path))
    before = path.read_bytes()
    with pytest.raises(OutputError, match="refusing to overwrite"):
        save_model(build("messy_graph"), str(path), input_path=str(path))
    assert path.read_bytes() == before
    save_model(build("messy_graph"), str(path), input_path=str(path), overwrite_input=True)
    assert path.read_bytes() != before


def test_save_into_a_missing_directory_is_an_output_error(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        save_model(build("identity_chain"), str(tmp_path / "nope" / "m.onnx"))


def test_external_data_round_trip(tmp_path):
    model = build("example_encoder_block")
    src = tmp_path / "src" / "ext.onnx"
    src.parent.mkdir()
    onnx.save_model(model, str(src), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.weights", size_threshold=0)
    loaded = load_model(str(src))
    assert loaded.had_external_data
    emb = next(t for t in loaded.model.graph.initializer if t.name == "emb")
    expected = next(t for t in build("example_encoder_block").graph.initializer if t.name == "emb")
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(emb), onnx.numpy_helper.to_array(expected))
    out = tmp_path / "out" / "fixed.onnx"
    out.parent.mkdir()
    save_model(loaded.model, str(out), external_data=True)
    assert sorted(os.listdir(out.parent)) == ["fixed.onnx", "fixed.onnx.data"]
    again = load_model(str(out))
    emb2 = next(t for t in again.model.graph.initializer if t.name == "emb")
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(emb2), onnx.numpy_helper.to_array(expected))


# -- external data: read at load time, from the model's directory only ---------------------------

from fuzz_cases import set_external, tiny_model  # noqa: E402  (generators shared with the fuzz harness)


def _if_body_model():
    """tiny_model whose Constant is replaced by an If whose branches hold the weight `bw`::

        flag --If{then/else: bw --Identity--> bo}--> c ; x --MatMul(w)--> m --Add(c)--> a --Relu--> y
    """
    from onnx import TensorProto, helper
    from graphfix.fixtures._make import vi
    m = tiny_model()
    body_w = onnx.numpy_helper.from_array(np.full((2, 2), 3, np.float32), "bw")
    branch = helper.make_graph([helper.make_node("Identity", ["bw"], ["bo"])], "b", [],
                               [vi("bo", TensorProto.FLOAT, [2, 2])], [body_w])
    m.graph.node[0].CopyFrom(helper.make_node("If", ["flag"], ["c"], name="if", then_branch=branch,
                                              else_branch=branch))
    m.graph.input.append(vi("flag", TensorProto.BOOL, []))
    return m


def _tensor(model, where):
    if where == "initializer":
        return model.graph.initializer[0]
    if where == "constant":
        return model.graph.node[0].attribute[0].t
    return model.graph.node[0].attribute[0].g.initializer[0]


def _external_model(directory, where, location, data=None):
    """Write m.onnx in `directory` with the `where` tensor stored at `location` (and `data` there)."""
    model = _if_body_model() if where == "if-body" else tiny_model()
    set_external(_tensor(model, where), location)
    if data is not None:
        (directory / location).parent.mkdir(parents=True, exist_ok=True)
        (directory / location).write_bytes(data)
    path = directory / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


WHERE = ["initializer", "constant", "if-body"]
LEGIT = np.arange(4, dtype=np.float32) + 10


@pytest.mark.parametrize("where", WHERE)
def test_external_data_is_embedded_at_load_wherever_the_tensor_is(tmp_path, where):
    path = _external_model(tmp_path, where, "data/w.bin", LEGIT.tobytes())
    loaded = load_model(str(path))
    from graphfix.external_data import external_tensors
    assert not external_tensors(loaded.model)           # nothing left for a later stage to open
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(_tensor(loaded.model, where)).ravel(), LEGIT)
    assert loaded.files == [os.path.realpath(path), os.path.realpath(tmp_path / "data" / "w.bin")]


@pytest.mark.parametrize("where", WHERE)
def test_relative_external_data_is_read_beside_the_model_not_from_the_current_directory(tmp_path, monkeypatch, where):
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa").write_bytes(b"SECRET-KEY-BYTES")
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    path = _external_model(model_dir, where, ".ssh/id_rsa")
    monkeypatch.chdir(tmp_path)                           # the attack: the path exists from the cwd
    with pytest.raises(InputError, match="does not exist") as err:
        load_model(str(path))
    assert str(path) in str(err.value)
    (model_dir / ".ssh").mkdir()
    (model_dir / ".ssh" / "id_rsa").write_bytes(LEGIT.tobytes())
    loaded = load_model(os.path.relpath(path))
    assert b"SECRET" not in loaded.model.SerializeToString()
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(_tensor(loaded.model, where)).ravel(), LEGIT)


def _prepare_attack(tmp_path, kind):
    """(location, problem) for an external-data location that must be refused."""
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"CANARY-BYTES-16!")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    if kind == "absolute":
        return str(outside), "absolute path"
    if kind == "dotdot":
        return "../outside.bin", "leaves the model's directory"
    if kind == "url":
        return "file://" + str(outside), "is a URL"
    if kind == "symlink-out":
        os.symlink(outside, model_dir / "w.bin")
        return "w.bin", "symlink leading outside"
    if kind == "hardlink":
        os.link(outside, model_dir / "w.bin")
        return "w.bin", "hard links"
    if kind == "missing":
        return "w.bin", "does not exist"
    if kind == "directory":
        (model_dir / "w.bin").mkdir()
        return "w.bin", "is a directory"
    if kind == "fifo":          # opening it would block forever: refused before any open
        os.mkfifo(model_dir / "w.bin")
        return "w.bin", "not a regular file"
    if kind == "short":
        (model_dir / "w.bin").write_bytes(b"\0" * 4)
        return "w.bin", "lie outside the file"
    raise AssertionError(kind)


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("kind", ["absolute", "dotdot", "url", "symlink-out", "hardlink", "missing",
                                  "directory", "fifo", "short"])
def test_unsafe_or_broken_external_data_is_an_input_error(tmp_path, kind, where):
    location, problem = _prepare_attack(tmp_path, kind)
    model = _if_body_model() if where == "if-body" else tiny_model()
    set_external(_tensor(model, where), location, length=16)
    path = tmp_path / "model" / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(InputError) as err:
        load_model(str(path))
    message = str(err.value)
    assert str(path) in message and problem in message and "\n" not in message, message


def test_a_symlinked_model_reads_external_data_beside_its_target(tmp_path):
    """Hugging Face's cache: snapshots/rev/{m.onnx, w.bin} are links into blobs/."""
    blobs, snap = tmp_path / "blobs", tmp_path / "snapshots" / "rev"
    blobs.mkdir()
    snap.mkdir(parents=True)
    model = tiny_model()
    set_external(model.graph.initializer[0], "w.bin")
    (blobs / "aaa").write_bytes(model.SerializeToString())
    (blobs / "bbb").write_bytes(LEGIT.tobytes())
    os.symlink("../../blobs/aaa", snap / "m.onnx")
    os.symlink("../../blobs/bbb", snap / "w.bin")
    loaded = load_model(str(snap / "m.onnx"))
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(loaded.model.graph.initializer[0]).ravel(), LEGIT)


def test_a_proto_or_bytes_with_external_references_is_refused():
    model = tiny_model()
    set_external(model.graph.initializer[0], "w.bin")
    for src, name in ((model, "<ModelProto>"), (model.SerializeToString(), "<bytes>")):
        with pytest.raises(InputError, match="only a model given by its path"):
            load_model(src)


def test_an_unreadable_input_is_an_input_error(tmp_path, monkeypatch):
    import graphfix.model_io as model_io
    path = tmp_path / "m.onnx"
    path.write_bytes(tiny_model().SerializeToString())

    def denied(*args, **kwargs):   # we run as root: chmod 000 would not stop us reading
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(model_io, "open", denied, raising=False)
    with pytest.raises(InputError, match="cannot be read \\(Permission denied\\)"):
        load_model(str(path))


def test_a_fifo_as_the_model_file_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "m.onnx")
    with pytest.raises(InputError, match="not a regular file"):
        load_model(str(tmp_path / "m.onnx"))


# -- output: never a file the input reads; through symlinks; umask mode ----------------------------

def _model_with_weights_file(tmp_path):
    directory = tmp_path / "in"
    directory.mkdir()
    path = _external_model(directory, "initializer", "w.bin", LEGIT.tobytes())
    return str(path), str(directory / "w.bin")


@pytest.mark.parametrize("in_place", [False, True])
def test_save_never_replaces_the_inputs_external_data(tmp_path, in_place):
    model_path, weights = _model_with_weights_file(tmp_path)
    loaded = load_model(model_path)
    link = tmp_path / "link.onnx"
    os.symlink(weights, link)
    before = open(weights, "rb").read()
    for out in (weights, str(link)):
        with pytest.raises(OutputError, match="external data the input model reads"):
            save_model(loaded.model, out, input_path=loaded, overwrite_input=in_place)
    assert open(weights, "rb").read() == before

def test_save_never_writes_its_data_file_over_the_inputs_external_data(tmp_path):
    """-o x.onnx with external data writes x.onnx.data: refused when the input reads that file."""
    (tmp_path / "in").mkdir()
    path = _external_model(tmp_path / "in", "initializer", "x.onnx.data", LEGIT.tobytes())
    loaded = load_model(str(path))
    with pytest.raises(OutputError, match="external data the input model reads"):
        save_model(loaded.model, str(tmp_path / "in" / "x.onnx"), input_path=loaded, external_data=True)
    assert (tmp_path / "in" / "x.onnx.data").read_bytes() == LEGIT.tobytes()
    assert sorted(os.listdir(tmp_path / "in")) == ["m.onnx", "x.onnx.data"]


def test_save_to_another_directory_leaves_nothing_dangling(tmp_path):
    src = tmp_path / "in" / "ext.onnx"
    src.parent.mkdir()
    onnx.save_model(build("example_encoder_block"), str(src), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ext.weights", size_threshold=0)
    loaded = load_model(str(src))
    (tmp_path / "elsewhere").mkdir()
    for external in (False, True):
        save_model(loaded.model, str(tmp_path / "elsewhere" / f"out{int(external)}.onnx"), input_path=loaded,
                   external_data=external)
    os.rename(tmp_path / "in", tmp_path / "gone")            # OUT must not need the input's files
    assert sorted(os.listdir(tmp_path / "elsewhere")) == ["out0.onnx", "out1.onnx", "out1.onnx.data"]
    expected = onnx.numpy_helper.to_array(next(t for t in build("example_encoder_block").graph.initializer
                                               if t.name == "emb"))
    for name in ("out0.onnx", "out1.onnx"):
        again = load_model(str(tmp_path / "elsewhere" / name))
        emb = next(t for t in again.model.graph.initializer if t.name == "emb")
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(emb), expected)


def test_save_writes_through_a_symlink(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "model.onnx"
    link = tmp_path / "link.onnx"
    os.symlink(target, link)                                  # dangling until written
    save_model(build("identity_chain"), str(link))
    assert os.path.islink(link) and onnx.load(str(target)).graph.node
    save_model(build("messy_graph"), str(link))               # and again over an existing target
    assert os.path.islink(link) and len(onnx.load(str(target)).graph.node) == 4
    assert sorted(os.listdir(tmp_path / "real")) == ["model.onnx"]


def test_save_writes_directly_into_a_non_regular_target(tmp_path):
    link = tmp_path / "null.onnx"
    os.symlink(os.devnull, link)
    save_model(build("identity_chain"), str(link))
    assert os.path.islink(link) and os.readlink(link) == os.devnull
    assert sorted(os.listdir(tmp_path)) == ["null.onnx"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_get_the_umask_mode(tmp_path, umask):
    from graphfix.model_io import write_atomic
    old = os.umask(umask)
    try:
        save_model(build("example_encoder_block"), str(tmp_path / "m.onnx"), external_data=True)
        write_atomic(str(tmp_path / "report.json"), b"{}")
    finally:
        os.umask(old)
    for name in ("m.onnx", "m.onnx.data", "report.json"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask, name


@pytest.mark.parametrize("make, problem", [
    (lambda d: "", "empty output path"),
    (lambda d: str(d), "is a directory"),
    (lambda d: str(d / "new") + "/", "is a directory"),
    (lambda d: str(d / "nope" / "m.onnx"), "directory does not exist"),
    (lambda d: str(d / ("x" * 300 + ".onnx")), "file name longer than"),
])
def test_bad_output_paths_are_output_errors(tmp_path, make, problem):
    with pytest.raises(OutputError, match=problem):
        save_model(build("identity_chain"), make(tmp_path))
    assert os.listdir(tmp_path) == []


def test_unwritable_output_directory_is_an_output_error(tmp_path, monkeypatch):
    import graphfix.model_io as model_io
    monkeypatch.setattr(model_io.os, "access", lambda path, mode: False)   # root writes anywhere
    with pytest.raises(OutputError, match="not writable"):
        save_model(build("identity_chain"), str(tmp_path / "m.onnx"))
    monkeypatch.undo()

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(model_io.tempfile, "mkdtemp", read_only)
    with pytest.raises(OutputError, match="cannot write output \\(Read-only file system\\)"):
        save_model(build("identity_chain"), str(tmp_path / "m.onnx"))
