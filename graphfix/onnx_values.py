"""ONNX facts that the passes and `graphfix check` share: domains, random ops, Constant values.

One definition each, so that a pass and `check` cannot disagree on what is a constant or what may
be computed before run time (graphsurgeon nodes and NodeProtos both go through constant_attr_value).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

DEFAULT_DOMAINS = ("", "ai.onnx")

# Ops whose output differs between runs: never computed before run time (fold-constants, `check`).
NONDETERMINISTIC_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                                  "Multinomial", "Bernoulli"})

# The attributes a Constant node carries its value in, with the numpy type of the list forms.
CONSTANT_VALUE_ATTRS = {"value": None, "value_int": np.int64, "value_ints": np.int64,
                        "value_float": np.float32, "value_floats": np.float32}


def constant_attr_value(attrs: Mapping[str, Any]) -> Optional[np.ndarray]:
    """The value of a Constant node from its attributes (name -> value, as graphsurgeon keeps them or
    as onnx.helper.get_attribute_value returns them); None for kinds numpy does not mirror (strings,
    sparse tensors)."""
    if "value" in attrs:
        value = attrs["value"]
        if hasattr(value, "values") and not isinstance(value, np.ndarray):   # a gs.Constant
            return np.asarray(value.values)
        if hasattr(value, "data_type"):                                     # a TensorProto
            from onnx import numpy_helper
            return np.asarray(numpy_helper.to_array(value))
        return None
    for key, dtype in CONSTANT_VALUE_ATTRS.items():
        if dtype is not None and key in attrs:
            return np.asarray(list(attrs[key]) if key.endswith("s") else attrs[key], dtype=dtype)
    return None
