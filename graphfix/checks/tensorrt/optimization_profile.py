"""What a TensorRT validation build is given: the optimization profile, the run shapes, and the
tolerances its outputs are held to (see graphfix.checks.tensorrt.trt for the documented defaults)."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from ...errors import UsageError

# (atol, rtol) for floating-point outputs, by the engine's precision. Integer and bool outputs
# must match exactly.
PRECISION_TOLERANCES = {"fp32": (1e-3, 1e-3), "tf32": (1e-2, 1e-2), "fp16": (1e-2, 1e-2)}
EXACT = (0.0, 0.0)


def dims_text(dims: Sequence[int]) -> str:
    return "x".join(str(d) for d in dims) or "scalar"


def _dims(inp) -> List:
    """Per axis: the static size, or the dim symbol (str), or None for an anonymous dynamic axis."""
    out = []
    for d in inp.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(d.dim_value)
        else:
            out.append(d.dim_param or None)
    return out


def _symbol_values(inputs, table: Dict[str, Sequence[int]]) -> Dict[str, int]:
    """Dim symbol -> size, as the user's shapes for some inputs fix them for every input."""
    values: Dict[str, int] = {}
    for inp in inputs:
        if inp.name in table:
            for axis, dim in enumerate(_dims(inp)):
                if isinstance(dim, str) and axis < len(table[inp.name]):
                    values.setdefault(dim, int(table[inp.name][axis]))
    return values


def derive_profile(model, shapes=None, min_shapes=None, opt_shapes=None, max_shapes=None
                   ) -> Tuple[Dict[str, Dict[str, List[int]]], Dict[str, List[int]]]:
    """(optimization profile for the inputs with dynamic dims or user shapes, run shapes per input).

    ``shapes`` fixes min = opt = max; otherwise opt comes from ``opt_shapes`` or the ORT checks'
    concrete shapes, min from ``min_shapes`` or, per dynamic axis, the smallest size the model's
    pooling windows and pads allow (1 where nothing limits it), max from ``max_shapes`` or
    2 x opt per dynamic axis. A size the user gives for a dim symbol (``batch``), directly
    (``{"seq": 128}``) or through an input's shape, holds for every input with that symbol. Static
    axes must be left as they are. Raises UsageError.
    """
    from ..input_search import symbol_minima
    from ..inputs import concrete_shapes, graph_inputs, split_shapes

    tables, sizes = {}, {}
    for flag, table in (("--shapes", shapes), ("--min-shapes", min_shapes), ("--opt-shapes", opt_shapes),
                        ("--max-shapes", max_shapes)):
        per_input, per_symbol = split_shapes(model, table, flag)   # refuses unknown names
        tables[flag], sizes[flag] = per_input, per_symbol
    inputs = graph_inputs(model)
    fixed = tables["--shapes"]
    given = {"min": {**tables["--min-shapes"], **fixed}, "opt": {**tables["--opt-shapes"], **fixed},
             "max": {**tables["--max-shapes"], **fixed}}
    flags = {"min": "--min-shapes", "opt": "--opt-shapes", "max": "--max-shapes"}
    symbols = {k: {**sizes[flags[k]], **sizes["--shapes"], **_symbol_values(inputs, v)} for k, v in given.items()}
    minima = symbol_minima(model)
    defaults = concrete_shapes(model, given["opt"], {**{k: max(v, 4) for k, v in minima.items()}, **symbols["opt"]})

    def pick(kind: str, inp, opt=None) -> List[int]:
        if inp.name in given[kind]:
            return [int(d) for d in given[kind][inp.name]]
        out = []
        for axis, dim in enumerate(_dims(inp)):
            if isinstance(dim, int):
                out.append(dim)
            elif isinstance(dim, str) and dim in symbols[kind]:
                out.append(symbols[kind][dim])
            elif kind == "opt":
                out.append(int(defaults[inp.name][axis]))
            else:
                out.append(minima.get(dim, 1) if kind == "min" else 2 * opt[axis])
        return out

    run: Dict[str, List[int]] = {}
    profile: Dict[str, Dict[str, List[int]]] = {}
    for inp in inputs:
        name = inp.name
        user = any(name in t for t in tables.values())
        if not inp.type.tensor_type.HasField("shape") and not user:
            run[name] = [int(d) for d in defaults[name]]
            continue  # rank unknown: nothing to derive (TensorRT will say what it needs)
        static = [d if isinstance(d, int) else None for d in _dims(inp)]
        opt = pick("opt", inp)
        low, high = pick("min", inp, opt), pick("max", inp, opt)
        for label, dims in (("min", low), ("opt", opt), ("max", high)):
            if len(dims) != len(static):
                raise UsageError(f"{label} shape {dims_text(dims)} for '{name}' has rank {len(dims)}; "
                                 f"the input has rank {len(static)}")
            for axis, (s, d) in enumerate(zip(static, dims)):
                if s is not None and d != s:
                    raise UsageError(f"{label} shape {dims_text(dims)} for '{name}': axis {axis} is static ({s})")
        if any(not (lo <= o <= hi) for lo, o, hi in zip(low, opt, high)):
            raise UsageError(f"shapes for '{name}' need min <= opt <= max on every axis: "
                             f"{dims_text(low)} / {dims_text(opt)} / {dims_text(high)}")
        run[name] = opt
        if any(s is None for s in static) or user:
            profile[name] = {"min": low, "opt": opt, "max": high}
    return profile, run


def precision_name(fp16: bool = False, tf32: bool = False) -> str:
    return "+".join(p for p, on in (("fp16", fp16), ("tf32", tf32)) if on) or "fp32"


def output_tolerances(model, precision: str) -> Dict[str, Tuple[float, float]]:
    """(atol, rtol) per output: the looser of the engine precision's and the output dtype's."""
    from ..ort import TOLERANCES
    floats = set(TOLERANCES)
    atol, rtol = max(PRECISION_TOLERANCES[p] for p in precision.split("+"))
    out = {}
    for o in model.graph.output:
        elem = o.type.tensor_type.elem_type
        if elem in floats:
            a, r = TOLERANCES[elem]
            out[o.name] = (max(a, atol), max(r, rtol))
        else:
            out[o.name] = EXACT
    return out
