import onnx
import pytest

from graphfix.checks.structural import check_rewrite, find_cycle, validate_input
from graphfix.errors import InputError
from graphfix.fixtures import build


def _break_shape_inference(model):
    """A Reshape whose static output annotation contradicts what shape inference derives."""
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    out = broken.graph.output[0]
    del out.type.tensor_type.shape.dim[:]
    for d in (5, 7):
        out.type.tensor_type.shape.dim.add().dim_value = d
    return broken


def test_a_new_shape_inference_failure_is_reported():
    model = build("identity_chain")
    problems = check_rewrite(model, _break_shape_inference(model))
    assert any(p.startswith("shape inference") for p in problems)


def test_a_failure_the_model_already_had_is_not_held_against_the_rewrite():
    broken = _break_shape_inference(build("identity_chain"))
    assert check_rewrite(broken, broken) == []


def test_io_signature_change_and_duplicate_names_are_reported():
    model = build("identity_chain")
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    changed.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    changed.graph.node[1].name = changed.graph.node[0].name
    problems = check_rewrite(model, changed)
    assert any("I/O signature" in p for p in problems)
    assert any("duplicate node names" in p for p in problems)
    assert check_rewrite(model, changed, allow_io_change=True) != []   # names still repeated


def test_find_cycle_on_acyclic_graph_is_empty():
    assert find_cycle(build("example_encoder_block")) == []


def test_a_tensor_produced_twice_is_an_input_error():
    model = build("identity_chain")
    model.graph.node[1].output[0] = "x1"   # Relu now writes x1, which i0 writes too
    with pytest.raises(InputError, match="produced twice"):
        validate_input(model, "m.onnx")
