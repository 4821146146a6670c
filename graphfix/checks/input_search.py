"""Inputs that let the model run: dynamic dims chosen per symbol, retried until ONNX Runtime accepts.

The default sizes (1 for a leading batch axis, 4 elsewhere) do not fit every model: a pooling
window or a reflect pad over a dynamic length needs a longer one, a KV cache needs its past length
to agree with the mask's. The search starts from the defaults raised to the minima that pooling
windows, convolution kernels and pads imply, then tries other sizes (one symbol the sum of two
others, "past" symbols 0, all 1, then growing lengths) until the original model runs. What the user gave
(shapes per input or per symbol, input values) is never changed. When nothing runs, the result
says so, with the flags that would let the check run; the checks are then "unchecked".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import onnx
from onnx import numpy_helper

from .inputs import (concrete_shapes, default_size, graph_inputs, load_input_values, make_feeds,
                     shapes_of_values, split_shapes)

GROWTH = (16, 64, 256, 1024)
MAX_SUMMED = 6           # symbols tried one at a time as the sum of two others
POOL_OPS = ("MaxPool", "AveragePool", "LpPool", "Conv", "ConvInteger", "QLinearConv")
HINT = ("give sizes with --shapes SYMBOL=SIZE or INPUT:1x128, or input values with --inputs FILE.npz "
        "(API: shapes=, inputs=)")


@dataclass
class InputChoice:
    """The inputs the ONNX Runtime checks use, and how they were found."""
    runnable: bool
    loadable: bool = True                          # False: ONNX Runtime refuses the model itself
    shapes: Dict[str, Tuple[int, ...]] = field(default_factory=dict)
    symbols: Dict[str, int] = field(default_factory=dict)
    given: List[str] = field(default_factory=list)  # inputs whose values the user gave
    tries: int = 0
    error: Optional[str] = None                     # ONNX Runtime's error at the first try
    feeds: Optional[List[Dict[str, np.ndarray]]] = None
    # the model's ONNX Runtime outputs on the feeds (Polygraphy IterationResults, one per feed), for
    # the checks to reuse instead of running the original again; not part of the JSON
    outputs: Optional[list] = field(default=None, repr=False)
    config_inputs: List[str] = field(default_factory=list)
    searched: bool = True                           # False: every dynamic size was given

    def to_json(self) -> dict:
        return {"runnable": self.runnable, "shapes": {k: list(v) for k, v in self.shapes.items()},
                "symbols": dict(self.symbols), "given_values": list(self.given), "tries": self.tries,
                "error": self.error}

    def explain(self) -> str:
        """Why the checks are unchecked, and what to pass."""
        if not self.loadable:
            return f"ONNX Runtime cannot load the original model: {self.error}"
        tried = f"{self.tries} size choice(s) tried" if self.searched else "at the sizes given"
        text = (f"ONNX Runtime could not run the original model on the generated inputs "
                f"({tried}): {self.error}; {HINT}")
        if self.config_inputs:
            text += (f"; {', '.join(repr(n) for n in self.config_inputs)} look(s) like configuration "
                     "input(s) (a scalar): give the value with --inputs")
        return text


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


# ----------------------------------------------------------------------------- minima from the graph

def _ints(node: onnx.NodeProto, name: str) -> Optional[List[int]]:
    for a in node.attribute:
        if a.name == name:
            return list(a.ints)
    return None


def _text(node: onnx.NodeProto, name: str, default: str) -> str:
    for a in node.attribute:
        if a.name == name:
            return a.s.decode() if isinstance(a.s, bytes) else str(a.s)
    return default


def _raise(minima: Dict[str, int], symbol, need: int) -> None:
    if isinstance(symbol, str) and need > minima.get(symbol, 1):
        minima[symbol] = int(need)


def symbol_minima(model: onnx.ModelProto) -> Dict[str, int]:
    """Smallest size per dim symbol that the pooling windows, convolution kernels and reflect/edge
    pads reading that dim allow (where shape inference carries the symbol to the node)."""
    if not any(n.op_type in POOL_OPS or n.op_type == "Pad" for n in model.graph.node):
        return {}     # nothing sets a minimum: no shape inference, no weights read
    from ..weights import weightless_model   # windows and pads are small: big weights need no bytes here
    try:
        inferred = onnx.shape_inference.infer_shapes(weightless_model(model), strict_mode=False)
    except Exception:
        inferred = weightless_model(model)
    g = inferred.graph
    dims: Dict[str, list] = {}
    declared = {v.name for v in model.graph.input}   # not the weights weightless_model made inputs
    for v in [v for v in g.input if v.name in declared] + list(g.value_info):
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            dims[v.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                            for d in v.type.tensor_type.shape.dim]
    consts = {t.name: t for t in g.initializer}     # TensorProtos, read when a Pad needs one
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = a.t
    minima: Dict[str, int] = {}
    for node in g.node:
        x = dims.get(node.input[0]) if node.input else None
        if not x:
            continue
        if node.op_type in POOL_OPS and len(x) > 2:
            spatial = len(x) - 2
            kernel = _ints(node, "kernel_shape")
            if kernel is None and len(node.input) > 1 and node.input[1] in dims:
                kernel = [d if isinstance(d, int) else 1 for d in dims[node.input[1]][2:]]
            if not kernel or _text(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
                continue
            pads = _ints(node, "pads") or [0] * (2 * spatial)
            dil = _ints(node, "dilations") or [1] * spatial
            for i in range(min(spatial, len(kernel))):
                need = (kernel[i] - 1) * dil[i] + 1 - pads[i] - pads[i + spatial]
                _raise(minima, x[2 + i], need)
        elif node.op_type == "Pad" and _text(node, "mode", "constant") in ("reflect", "edge"):
            pads = _ints(node, "pads")
            if pads is None and len(node.input) > 1 and node.input[1] in consts:
                pads = [int(p) for p in numpy_helper.to_array(consts[node.input[1]]).reshape(-1)]
            if not pads:
                continue
            rank = len(pads) // 2
            axes = list(range(rank))
            if len(node.input) > 3 and node.input[3] in consts:
                axes = [int(a) % len(x) for a in numpy_helper.to_array(consts[node.input[3]]).reshape(-1)]
            reflect = _text(node, "mode", "constant") == "reflect"
            for i, axis in enumerate(axes):
                if axis < len(x):
                    _raise(minima, x[axis], max(pads[i], pads[i + rank]) + 1 if reflect else 1)
    return minima


# ----------------------------------------------------------------------------- candidates

def _free_dims(model: onnx.ModelProto, fixed_inputs, fixed_symbols) -> Dict[str, int]:
    """Dynamic dims the search may size: symbol (or 'input:axis') -> the axis it first appears on.
    Expressions of other symbols are computed, not searched."""
    free: Dict[str, int] = {}
    for inp in graph_inputs(model):
        if inp.name in fixed_inputs:
            continue
        for axis, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            key = d.dim_param or f"{inp.name}:{axis}"
            if key in fixed_symbols or (d.dim_param and not d.dim_param.isidentifier()):
                continue
            free.setdefault(key, axis)
    return free


def candidates(free: Mapping[str, int], minima: Mapping[str, int],
               fixed: Optional[Mapping[str, int]] = None) -> Iterator[Dict[str, int]]:
    """Size choices for the free dims, smallest and likeliest first, without repeats. ``fixed``:
    the sizes the user gave (a free length may have to be the sum of two of them)."""
    def at_least(key, size):
        return max(size, minima.get(key, 0))

    batch = [k for k, axis in free.items() if axis == 0]
    other = [k for k, axis in free.items() if axis != 0]
    base = {k: at_least(k, default_size(free[k])) for k in free}
    tried = set()

    def emit(choice):
        key = tuple(sorted(choice.items()))
        if key not in tried:
            tried.add(key)
            return True
        return False

    if emit(base):
        yield base
    # one length the sum of two others (a KV cache's total = past + new)
    lengths = {**{k: v for k, v in (fixed or {}).items() if k not in batch}, **{k: base[k] for k in other}}
    for k in other[:MAX_SUMMED]:
        rest = [v for name, v in lengths.items() if name != k]
        for total in sorted({a + b for i, a in enumerate(rest) for b in rest[i + 1:]}):
            choice = {**base, k: at_least(k, total)}
            if emit(choice):
                yield choice
    past = [k for k in other if "past" in k.lower()]
    if past:
        choice = {**base, **{k: 0 for k in past}}
        if emit(choice):
            yield choice
    ones = {**base, **{k: at_least(k, 1) for k in other}}   # size 1 broadcasts: a last resort
    if emit(ones):
        yield ones
    for size in GROWTH:
        choice = {**{k: base[k] for k in batch}, **{k: at_least(k, size) for k in other}}
        if emit(choice):
            yield choice


# ----------------------------------------------------------------------------- the search

def _quiet() -> None:
    """Failed tries are expected: keep ONNX Runtime's and Polygraphy's logs out of the user's way."""
    import onnxruntime as ort
    from polygraphy.logger import G_LOGGER
    ort.set_default_logger_severity(3)
    G_LOGGER.module_severity = G_LOGGER.CRITICAL


def choose_inputs(model: onnx.ModelProto, *, shapes: Optional[Mapping[str, object]] = None,
                  values=None, seed: int = 1, iterations: int = 1) -> InputChoice:
    """Inputs for the ONNX Runtime checks of `model` (the reference): the first size choice on which
    ONNX Runtime runs it. ``shapes``: per input (sequence) or per dim symbol (int); ``values``: an
    .npz path or name -> array. Raises UsageError/InputError for names or values that do not fit."""
    from .ort import _session, runnable_copy

    per_input, per_symbol = split_shapes(model, shapes)
    given = load_input_values(model, values)
    fixed_inputs = {**per_input, **shapes_of_values(given)}
    # symbols carried by the given shapes and values hold everywhere
    fixed_symbols = dict(per_symbol)
    for name, dims in concrete_shapes(model, fixed_inputs, per_symbol).items():
        if name in fixed_inputs:
            inp = next(i for i in graph_inputs(model) if i.name == name)
            for d, n in zip(inp.type.tensor_type.shape.dim, dims):
                if d.dim_param and d.dim_param.isidentifier():
                    fixed_symbols.setdefault(d.dim_param, int(n))
    config = [i.name for i in graph_inputs(model) if i.name not in given
              and i.type.tensor_type.HasField("shape") and len(i.type.tensor_type.shape.dim) == 0
              and i.type.tensor_type.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                                       onnx.TensorProto.DOUBLE, onnx.TensorProto.BOOL)]
    choice = InputChoice(runnable=False, given=sorted(given), config_inputs=config)
    not_tensors = [i.name for i in graph_inputs(model) if i.type.WhichOneof("value") != "tensor_type"]
    if not_tensors:   # nothing to generate: the ONNX Runtime check says why it does not compare
        choice.loadable, choice.error = False, f"inputs that are not tensors: {', '.join(not_tensors)}"
        return choice
    _quiet()
    try:
        session = _session(runnable_copy(model))
    except Exception as exc:
        choice.loadable, choice.error = False, _one_line(exc)
        return choice
    out_names = [o.name for o in session.get_outputs()]
    import onnxruntime as ort
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4    # a failed try is expected, not an error to print
    free = _free_dims(model, fixed_inputs, fixed_symbols)
    choice.searched = bool(free)
    fallback = None     # the first choice that ran but left an output empty
    for sizes in candidates(free, symbol_minima(model), fixed_symbols):
        symbols = {**fixed_symbols, **sizes}
        dims = concrete_shapes(model, fixed_inputs, symbols)
        choice.tries += 1
        try:
            feeds = [{**feed, **given} for feed in make_feeds(model, seed=seed, iterations=iterations,
                                                                shapes=dims)]
        except Exception as exc:   # a dtype the generator does not know (strings): values must be given
            choice.error = choice.error or f"cannot generate values for the inputs: {_one_line(exc)}"
            break
        try:
            outputs = [dict(zip(out_names, session.run(out_names, feed, quiet))) for feed in feeds]
        except Exception as exc:
            if choice.error is None:
                choice.error = _one_line(exc)
            continue
        empty = [n for out in outputs for n, v in out.items() if np.size(v) == 0]
        if empty:   # an empty output compares equal to anything: look on, keep this as a last resort
            fallback = fallback or (feeds, dims, symbols, outputs)
            if choice.error is None:
                choice.error = f"output(s) {', '.join(sorted(set(empty)))} empty at {_sizes_text(sizes)}"
            continue
        return _chosen(choice, feeds, dims, symbols, outputs)
    if fallback is not None:
        return _chosen(choice, *fallback)
    return choice


def _chosen(choice: InputChoice, feeds, dims, symbols, outputs) -> InputChoice:
    from polygraphy.comparator.struct import IterationResult
    choice.runnable, choice.feeds, choice.shapes = True, feeds, dims
    choice.outputs = [IterationResult(out, runner_name="reference") for out in outputs]
    choice.symbols = {k: v for k, v in symbols.items() if ":" not in k}
    return choice


def _sizes_text(sizes: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sizes.items()) or "the static shapes"
