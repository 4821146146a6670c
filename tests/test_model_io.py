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
