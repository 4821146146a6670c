"""Copying a protobuf message field by field, so that a big field can be left out (weights, graphs)."""
from __future__ import annotations


def copy_fields(src, dst, skip: str) -> None:
    """Every set field of proto `src` but `skip` into `dst` (messages copied, scalars assigned)."""
    for fd, value in src.ListFields():
        if fd.name != skip:
            copy_field(dst, fd, value)


def model_without_initializers(model):
    """A new ModelProto with every field of `model` but its graph's initializers (the big part)."""
    import onnx
    out = onnx.ModelProto()
    copy_fields(model, out, skip="graph")
    copy_fields(model.graph, out.graph, skip="initializer")
    return out


def copy_field(dst, fd, value) -> None:
    """One field (`fd`, from ListFields) of value `value` into `dst`."""
    repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED
    if repeated:   # (protobuf 6 dropped FieldDescriptor.label)
        getattr(dst, fd.name).extend(value)
    elif fd.type == fd.TYPE_MESSAGE:
        getattr(dst, fd.name).CopyFrom(value)
    else:
        setattr(dst, fd.name, value)
