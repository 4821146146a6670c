"""Fuzz cases for graphfix's handling of bad input and output mistakes: seeded, bounded in time.

Each case builds files in its own directory (from the bundled fixtures, damaged in code), runs
``graphfix fix`` and/or ``graphfix check`` through ``graphfix.cli.main(argv)`` in this process,
and judges the run against the contract (README, "Bad input and exit codes"):

- the exit code is 0, 1 or 2 (and the one the case requires, where it requires one);
- exit 2 prints exactly one line on stderr, ``graphfix: error: ...``, naming the file at fault;
- no exception escapes ``main`` (a traceback), and no run outlasts its time limit (a hang);
- every file the input consists of has the same bytes afterwards (SHA-256 before/after);
- a canary file outside the model's directory is never read: its bytes never reach an output;
- an output written (exit 0 or 1) loads again on its own (no external data left dangling);
- ``check`` refuses an input (exit 2) exactly when ``fix`` does, for the same input.

Categories: bytes (truncation, bit flips...), graph (cycles, dangling names, dtypes, ranks, dims,
opsets, domains, nesting, attributes...), external (external-data attacks and breakage), output
(where -o / --report point). ``benchmarks/fuzz.py`` runs many; tests/test_fuzz.py a fast subset.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from graphfix.fixtures import build
from graphfix.fixtures._make import make_model, vi

BASE_FIXTURES = ("identity_chain", "messy_graph", "fold_constant_node_chain", "int64_if_outer_scope",
                 "opset18_if_subgraph", "bool_equal", "int64_shape_reshape", "float_mlp",
                 "example_encoder_block", "random_and_if_on_constants", "check_nms", "int64_token_ids")
FAILURES = ("traceback", "hang", "exit-code", "stderr", "unexpected-exit", "input-modified",
            "canary-read", "output-dangles", "check-fix-disagree")


@dataclass
class Case:
    category: str
    name: str
    root: str                                   # the case's directory (canary lives here)
    model: str                                  # the input model path
    fix_argv: Optional[List[str]] = None        # None: fix is not run
    check: bool = True                          # run `check` on the model too
    cwd: Optional[str] = None                   # run from here (relative-path attacks)
    expect: Sequence[int] = (0, 1, 2)           # exit codes fix may give
    canary: Optional[bytes] = None
    protected: List[str] = field(default_factory=list)   # input files (hashed before/after)
    post: Optional[Callable[[int, str], List[str]]] = None   # (fix exit, stdout) -> extra failures


@dataclass
class Outcome:
    category: str
    name: str
    fix_exit: Optional[int]
    check_exit: Optional[int]
    failures: List[str]
    seconds: float

    @property
    def verdict(self) -> str:
        return self.failures[0].split(":")[0] if self.failures else "ok"


# -- building blocks ------------------------------------------------------------------------------

def _base(rng: random.Random) -> onnx.ModelProto:
    return build(rng.choice(BASE_FIXTURES))


def tiny_model(name: str = "tiny") -> onnx.ModelProto:
    """A weight as an initializer (w) and as an attribute tensor (Constant c)::

        x[2x2] --MatMul(w)--> m --Add(c)--> a --Relu--> y[2x2]
    """
    w = onnx.numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(2, 2), "w")
    c = helper.make_node("Constant", [], ["c"], name="const",
                         value=onnx.numpy_helper.from_array(np.ones((2, 2), np.float32), "cval"))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "c"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["y"], name="relu")]
    return make_model([c] + nodes, [vi("x", TensorProto.FLOAT, [2, 2])], [vi("y", TensorProto.FLOAT, [2, 2])],
                      [w], name=name)


def _save(model: onnx.ModelProto, path: str) -> str:
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def _canary(root: str, rng: random.Random, rel: str = "canary.bin") -> bytes:
    data = b"GFCANARY" + bytes(rng.getrandbits(8) for _ in range(56))
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return data


def _model_dir(root: str) -> str:
    d = os.path.join(root, "model")
    os.makedirs(d, exist_ok=True)
    return d


def _fix_argv(case_root: str, model: str, rng: random.Random, out: Optional[str] = None) -> List[str]:
    os.makedirs(os.path.join(case_root, "out"), exist_ok=True)
    out = out or os.path.join(case_root, "out", "fixed.onnx")
    return ["fix", model, "-o", out, "--trt", rng.choice(("8.6", "10.0")), "--quiet"]


def _simple(category: str, name: str, root: str, rng: random.Random, model: onnx.ModelProto = None,
            data: bytes = None, **kw) -> Case:
    path = os.path.join(_model_dir(root), "m.onnx")
    if data is None:
        data = model.SerializeToString()
    with open(path, "wb") as f:
        f.write(data)
    return Case(category, name, root, path, _fix_argv(root, path, rng), protected=[path], **kw)


# -- bytes ----------------------------------------------------------------------------------------

def bytes_truncate(root, rng):
    data = _base(rng).SerializeToString()
    return _simple("bytes", "truncate", root, rng, data=data[:rng.randrange(0, len(data))])


def bytes_bitflip(root, rng):
    data = bytearray(_base(rng).SerializeToString())
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return _simple("bytes", "bitflip", root, rng, data=bytes(data))


def bytes_garbage(root, rng):
    size = rng.choice((0, 1, 7, 100, 4096))
    return _simple("bytes", "garbage", root, rng, data=bytes(rng.getrandbits(8) for _ in range(size)))


def bytes_splice(root, rng):
    data = _base(rng).SerializeToString()
    a, b = sorted(rng.randrange(len(data)) for _ in range(2))
    return _simple("bytes", "splice", root, rng, data=data[:a] + data[b:] + data[a:b])


# -- graph ----------------------------------------------------------------------------------------

def _pick_node(model, rng) -> Optional[onnx.NodeProto]:
    return rng.choice(list(model.graph.node)) if model.graph.node else None


def graph_cycle(root, rng):
    m = tiny_model()
    m.graph.node[1].input[0] = "y"          # mm reads relu's output: mm -> add -> relu -> mm
    return _simple("graph", "cycle", root, rng, m, expect=(2,))


def graph_dangling(root, rng):
    m = _base(rng)
    node = _pick_node(m, rng)
    if node.input:
        node.input[rng.randrange(len(node.input))] = "ghost_" + str(rng.randrange(100))
    else:
        node.input.append("ghost")
    return _simple("graph", "dangling-input", root, rng, m)


def graph_dangling_output(root, rng):
    m = _base(rng)
    m.graph.output[0].name = "nobody_makes_this"
    return _simple("graph", "dangling-output", root, rng, m, expect=(2,))


def graph_dtype(root, rng):
    m = _base(rng)
    v = rng.choice(list(m.graph.input) + list(m.graph.output))
    v.type.tensor_type.elem_type = rng.choice((0, 2, 7, 9, 17, 77, 1000, -3))
    return _simple("graph", "wrong-dtype", root, rng, m)


def graph_rank(root, rng):
    m = _base(rng)
    v = rng.choice(list(m.graph.input) + list(m.graph.output))
    dims = v.type.tensor_type.shape.dim
    if dims and rng.random() < 0.5:
        del dims[rng.randrange(len(dims))]
    else:
        dims.add().dim_value = rng.choice((1, 3))
    return _simple("graph", "wrong-rank", root, rng, m)


def graph_dims(root, rng):
    m = _base(rng)
    v = rng.choice(list(m.graph.input) + list(m.graph.output))
    dims = v.type.tensor_type.shape.dim
    d = dims[rng.randrange(len(dims))] if len(dims) else dims.add()
    d.dim_value = rng.choice((0, 2 ** 40, 2 ** 62, -1))
    return _simple("graph", "zero-or-huge-dim", root, rng, m)


def graph_initializer(root, rng):
    m = tiny_model()
    w = m.graph.initializer[0]
    choice = rng.choice(("short", "long", "dims", "dtype", "negative"))
    if choice == "short":
        w.raw_data = w.raw_data[:rng.randrange(len(w.raw_data))]
    elif choice == "long":
        w.raw_data = w.raw_data + b"\0" * rng.randint(1, 9)
    elif choice == "dims":
        w.dims[0] = rng.choice((3, 2 ** 40))
    elif choice == "dtype":
        w.data_type = rng.choice((0, 77, TensorProto.STRING))
    else:
        w.dims[0] = -2
    return _simple("graph", f"initializer-{choice}", root, rng, m, expect=(2,))


def graph_opset(root, rng):
    m = _base(rng)
    choice = rng.choice(("none", "zero", "future", "ir0", "ir99", "no-default"))
    if choice == "none":
        del m.opset_import[:]
    elif choice == "zero":
        m.opset_import[0].version = 0
    elif choice == "future":
        m.opset_import[0].version = 999
    elif choice == "ir0":
        m.ir_version = 0
    elif choice == "ir99":
        m.ir_version = 99
    else:
        m.opset_import[0].domain = "not.default"
    return _simple("graph", f"opset-{choice}", root, rng, m, expect=(2,))


def graph_domain(root, rng):
    m = tiny_model()
    node = m.graph.node[3]
    node.op_type = rng.choice(("Relu", "MyPlugin_TRT", "Frobnicate"))
    node.domain = rng.choice(("", "com.example", "trt.plugins"))
    if node.domain and rng.random() < 0.7:
        m.opset_import.append(helper.make_opsetid(node.domain, 1))
    # declared domain: a valid model, refused by nobody; exit 1 only from the TensorRT verdict (an op
    # no TensorRT importer or known plugin takes)
    expect = (0, 1) if node.domain and node.domain in [o.domain for o in m.opset_import] else (0, 1, 2)
    return _simple("graph", "unknown-domain", root, rng, m, expect=expect)


def graph_nesting(root, rng):
    """If inside If inside If..., the innermost passing x through: depth 5 to 20 (valid), or a
    few hundred levels (deeper than protobuf parses: written byte by byte)."""
    if rng.random() < 0.25:
        return _simple("graph", "too-deep", root, rng, data=_deep_model_bytes(rng.randint(100, 400)))
    depth = rng.randint(5, 20)
    inner = helper.make_graph([helper.make_node("Identity", ["x"], ["o0"])], "leaf", [],
                              [vi("o0", TensorProto.FLOAT, [2])])
    leaf = inner
    for level in range(1, depth):   # nested in the then-branch only: the size grows linearly
        out = f"o{level}"
        node = helper.make_node("If", ["cond"], [out], name=f"if{level}", then_branch=inner, else_branch=leaf)
        inner = helper.make_graph([node], f"g{level}", [], [vi(out, TensorProto.FLOAT, [2])])
    top = helper.make_node("If", ["cond"], ["y"], name="top", then_branch=inner, else_branch=leaf)
    m = make_model([top], [vi("cond", TensorProto.BOOL, []), vi("x", TensorProto.FLOAT, [2])],
                   [vi("y", TensorProto.FLOAT, [2])])
    return _simple("graph", "deep-nesting", root, rng, m, expect=(0,))


def _deep_model_bytes(depth: int) -> bytes:
    """A ModelProto whose graph nests If bodies `depth` levels deep, encoded by hand."""
    def field(number: int, payload: bytes) -> bytes:    # length-delimited field
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload
    graph = field(1, field(4, b"Identity") + field(1, b"x") + field(2, b"y"))    # node: x -> y
    for _ in range(depth):
        attr = field(1, b"then_branch") + field(6, graph) + _varint(20 << 3) + _varint(5)
        graph = field(1, field(1, b"c") + field(2, b"y") + field(4, b"If") + field(5, attr))
    opset = _varint(2 << 3) + _varint(17)
    return _varint(1 << 3) + _varint(10) + field(8, opset) + field(7, graph)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def graph_attribute(root, rng):
    m = tiny_model()
    choice = rng.choice(("wrong-type", "no-type", "ref-attr", "unknown", "cast-to"))
    relu = m.graph.node[3]
    if choice == "wrong-type":
        node = helper.make_node("Softmax", ["a"], ["y"], name="sm")
        node.attribute.extend([helper.make_attribute("axis", rng.choice((1.5, "one", [1, 2])))])
        m.graph.node[3].CopyFrom(node)
    elif choice == "no-type":
        relu.attribute.extend([onnx.AttributeProto(name="alpha", f=0.1)])
    elif choice == "ref-attr":
        relu.attribute.extend([onnx.AttributeProto(name="alpha", ref_attr_name="a",
                                                   type=onnx.AttributeProto.FLOAT)])
    elif choice == "unknown":
        relu.attribute.extend([helper.make_attribute("bogus", 3)])
    else:
        m.graph.node[3].CopyFrom(helper.make_node("Cast", ["a"], ["y"], name="cast", to=rng.choice((77, 0, 1))))
    return _simple("graph", f"attribute-{choice}", root, rng, m)


def graph_names(root, rng):
    """A name that is not UTF-8, or empty/duplicated names."""
    m = tiny_model()
    choice = rng.choice(("non-utf8", "empty-op", "dup-output", "empty-graph", "newline"))
    if choice == "non-utf8":
        data = m.SerializeToString().replace(b"relu", b"r\xffu\xfe", 1)
        return _simple("graph", "name-non-utf8", root, rng, data=data)
    if choice == "newline":     # a dangling name with a line break: the error must stay one line
        m.graph.node[2].input[1] = "gh\nost\r\x1b[2J"
        return _simple("graph", "name-newline", root, rng, m, expect=(2,))
    if choice == "empty-op":
        m.graph.node[3].op_type = ""
    elif choice == "dup-output":
        m.graph.node[2].output[0] = "m"
    else:
        del m.graph.node[:]
    return _simple("graph", f"name-{choice}", root, rng, m)


def graph_mutate(root, rng):
    """One to three random, well-formed mutations of a fixture: rewired inputs, dropped or extreme
    attributes, retyped initializers, other opset versions, reshaped graph inputs."""
    m = _base(rng)
    names = sorted({t.name for t in m.graph.initializer} | {i.name for i in m.graph.input}
                   | {o for n in m.graph.node for o in n.output if o})
    done = []
    for _ in range(rng.randint(1, 3)):
        node = _pick_node(m, rng)
        kind = rng.choice(("rewire", "drop-attr", "extreme-attr", "retype", "opset", "reshape-input"))
        if kind == "rewire" and node.input:
            i = rng.randrange(len(node.input))
            earlier = [o for n in m.graph.node[:list(m.graph.node).index(node)] for o in n.output if o]
            choices = sorted({t.name for t in m.graph.initializer} | {i.name for i in m.graph.input} | set(earlier))
            node.input[i] = rng.choice(choices or names)
        elif kind == "drop-attr" and node.attribute:
            del node.attribute[rng.randrange(len(node.attribute))]
        elif kind == "extreme-attr" and node.attribute:
            attr = node.attribute[rng.randrange(len(node.attribute))]
            value = rng.choice((0, -1, 1, 2 ** 31, -(2 ** 62), 7))
            if attr.type == onnx.AttributeProto.INT:
                attr.i = value
            elif attr.type == onnx.AttributeProto.INTS:
                attr.ints[:] = [value] * rng.randint(0, 4)
            elif attr.type == onnx.AttributeProto.FLOAT:
                attr.f = rng.choice((0.0, -1.0, float("nan"), float("inf"), 1e30))
        elif kind == "retype" and m.graph.initializer:
            t = rng.choice(list(m.graph.initializer))
            values = onnx.numpy_helper.to_array(t)
            dtype = rng.choice((np.int64, np.int32, np.float16, np.bool_, np.float64, np.uint8))
            with np.errstate(all="ignore"):
                t.CopyFrom(onnx.numpy_helper.from_array(values.astype(dtype), t.name))
        elif kind == "opset":
            m.opset_import[0].version = rng.randint(1, onnx.defs.onnx_opset_version())
        elif kind == "reshape-input" and m.graph.input:
            v = rng.choice(list(m.graph.input))
            dims = v.type.tensor_type.shape.dim
            del dims[:]
            for _ in range(rng.randint(0, 5)):
                d = dims.add()
                if rng.random() < 0.3:
                    d.dim_param = rng.choice(("N", "seq", "N"))
                else:
                    d.dim_value = rng.choice((0, 1, 2, 3, 7, 64))
        done.append(kind)
    return _simple("graph", "mutate-" + "+".join(sorted(set(done))), root, rng, m)


# -- external data --------------------------------------------------------------------------------

def set_external(tensor: TensorProto, location: str, offset: int = 0, length: Optional[int] = None) -> None:
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    entries = [("location", location), ("offset", str(offset))]
    if length is not None:
        entries.append(("length", str(length)))
    for k, v in entries:
        e = tensor.external_data.add()
        e.key, e.value = k, v


def _ext_case(root, rng, name, location_for, expect=(2,), where="initializer", prepare=None) -> Case:
    """A tiny model whose chosen tensor (initializer, Constant value, If-body initializer) is external."""
    canary = _canary(root, rng)
    mdir = _model_dir(root)
    m = tiny_model()
    if where == "initializer":
        tensor = m.graph.initializer[0]
    elif where == "constant":
        tensor = m.graph.node[0].attribute[0].t
    else:   # an If whose branches hold the weight as their own initializer
        body_w = onnx.numpy_helper.from_array(np.ones((2, 2), np.float32), "bw")
        branch = helper.make_graph([helper.make_node("Identity", ["bw"], ["bo"])], "b", [],
                                   [vi("bo", TensorProto.FLOAT, [2, 2])], [body_w])
        m.graph.node[0].CopyFrom(helper.make_node("If", ["flag"], ["c"], name="if", then_branch=branch,
                                                  else_branch=branch))
        m.graph.input.append(vi("flag", TensorProto.BOOL, []))
        tensor = m.graph.node[0].attribute[0].g.initializer[0]
    location = location_for(root, mdir)
    set_external(tensor, location, length=16 if rng.random() < 0.5 else None)
    if prepare:
        prepare(root, mdir)
    path = _save(m, os.path.join(mdir, "m.onnx"))
    protected = [path] + [os.path.join(mdir, f) for f in sorted(os.listdir(mdir)) if f != "m.onnx"]
    return Case("external", f"{name}@{where}", root, path, _fix_argv(root, path, rng), canary=canary,
                expect=expect, protected=[p for p in protected if os.path.isfile(p)])


def external_attack(root, rng):
    kind = rng.choice(("absolute", "dotdot", "url", "symlink-out", "cwd-relative", "nul"))
    where = rng.choice(("initializer", "constant", "if-body"))
    prepare, cwd = None, None
    if kind == "absolute":
        def loc(r, d): return os.path.join(r, "canary.bin")
    elif kind == "dotdot":
        def loc(r, d): return "../canary.bin"
    elif kind == "url":
        def loc(r, d): return "file://" + os.path.join(r, "canary.bin")
    elif kind == "symlink-out":
        def loc(r, d): return "weights.bin"

        def prepare(r, d): os.symlink(os.path.join(r, "canary.bin"), os.path.join(d, "weights.bin"))
    elif kind == "nul":
        def loc(r, d): return "weights.bin\x00../../canary.bin"
    else:   # the bytes sit at .ssh/id_rsa relative to the current directory, not the model's
        def loc(r, d): return ".ssh/id_rsa"
        cwd = root
    case = _ext_case(root, rng, kind, loc, where=where, prepare=prepare)
    if kind == "cwd-relative":
        _canary(root, random.Random(0), ".ssh/id_rsa")
        with open(os.path.join(root, ".ssh/id_rsa"), "rb") as f:
            case.canary = f.read()
        case.cwd = cwd
    return case


def external_broken(root, rng):
    kind = rng.choice(("missing", "directory", "fifo", "short", "offset", "negative", "garbage-length"))
    where = rng.choice(("initializer", "constant", "if-body"))

    def loc(r, d): return "weights.bin"

    def prepare(r, d):
        path = os.path.join(d, "weights.bin")
        if kind == "directory":
            os.mkdir(path)
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind != "missing":
            with open(path, "wb") as f:
                f.write(b"\0" * (8 if kind == "short" else 16))
    case = _ext_case(root, rng, kind, loc, where=where, prepare=prepare)
    if kind in ("offset", "negative", "garbage-length"):
        m = onnx.load(case.model, load_external_data=False)
        for t in _all_external(m):
            for e in t.external_data:
                if kind == "offset" and e.key == "offset":
                    e.value = "9"
                elif kind == "negative" and e.key == "offset":
                    e.value = "-4"
                elif kind == "garbage-length" and e.key == "offset":
                    e.value = "zz"
        _save(m, case.model)
    return case


def external_legit(root, rng):
    """Valid external data (beside the model, or in a subdirectory): fix must work and OUT stand alone."""
    where = rng.choice(("initializer", "constant", "if-body"))
    sub = rng.choice(("weights.bin", "data/weights.bin"))

    def loc(r, d): return sub

    def prepare(r, d):
        os.makedirs(os.path.dirname(os.path.join(d, sub)), exist_ok=True)
        with open(os.path.join(d, sub), "wb") as f:
            f.write(np.ones(4, np.float32).tobytes())
    case = _ext_case(root, rng, "legit-" + sub.replace("/", "-"), loc, expect=(0, 1), where=where, prepare=prepare)
    case.protected.append(os.path.join(os.path.dirname(case.model), sub))
    return case


def _all_external(model):
    from graphfix.external_data import external_tensors
    return external_tensors(model)


# -- output side ----------------------------------------------------------------------------------

def _ext_model(root) -> str:
    """A model whose weight lives in weights.bin beside it."""
    mdir = _model_dir(root)
    m = tiny_model()
    with open(os.path.join(mdir, "weights.bin"), "wb") as f:
        f.write(np.arange(4, dtype=np.float32).tobytes())
    set_external(m.graph.initializer[0], "weights.bin")
    return _save(m, os.path.join(mdir, "m.onnx"))


def output_mistake(root, rng):
    model = _ext_model(root)
    mdir = os.path.dirname(model)
    weights = os.path.join(mdir, "weights.bin")
    kind = rng.choice(("input", "weights", "model-hardlink", "weights-symlink", "report-input",
                       "report-weights", "report-same-as-out", "missing-dir", "existing-dir", "dir-slash",
                       "empty", "long-name", "symlink-out", "dangling-symlink", "devnull-symlink",
                       "report-dash", "report-empty", "below-a-file", "report-missing-dir", "devnull",
                       "newline-name", "in-place-weights"))
    out = os.path.join(root, "out", "fixed.onnx")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    extra: List[str] = []
    expect = (2,)
    if kind == "input":
        out = model
    elif kind == "weights":
        out = weights
    elif kind == "model-hardlink":
        out = os.path.join(root, "out", "hard.onnx")
        os.link(model, out)
    elif kind == "weights-symlink":
        out = os.path.join(root, "out", "link.onnx")
        os.symlink(weights, out)
    elif kind == "report-input":
        extra = ["--report", model]
    elif kind == "report-weights":
        extra = ["--report", weights]
    elif kind == "report-same-as-out":
        extra = ["--report", out]
    elif kind == "missing-dir":
        out = os.path.join(root, "nope", "fixed.onnx")
    elif kind == "existing-dir":
        out = os.path.join(root, "out")
    elif kind == "dir-slash":
        out = os.path.join(root, "out", "new") + "/"
    elif kind == "empty":
        out = ""
    elif kind == "long-name":
        out = os.path.join(root, "out", "x" * 300 + ".onnx")
    elif kind == "symlink-out":      # written through: the link stays, its target gets the model
        target = os.path.join(root, "elsewhere", "real.onnx")
        os.makedirs(os.path.dirname(target))
        out = os.path.join(root, "out", "link.onnx")
        os.symlink(target, out)
        expect = (0, 1)
    elif kind == "dangling-symlink":
        out = os.path.join(root, "out", "dangling.onnx")
        os.symlink(os.path.join(root, "out", "created.onnx"), out)
        expect = (0, 1)
    elif kind == "devnull-symlink":
        out = os.path.join(root, "out", "null.onnx")
        os.symlink(os.devnull, out)
        expect = (0, 1)
    elif kind == "report-dash":
        extra = ["--report", "-"]
        expect = (0, 1)
    elif kind == "below-a-file":
        out = os.path.join(model, "fixed.onnx")
    elif kind == "report-missing-dir":
        extra = ["--report", os.path.join(root, "nope", "r.json")]
    elif kind == "devnull":
        out = os.devnull
        expect = (0, 1)
    elif kind == "newline-name":     # a legal file name: written, and named on one line if refused
        out = os.path.join(root, "out", "a\nb.onnx")
        expect = (0, 1)
    elif kind == "in-place-weights":
        out = weights
        extra = ["--in-place"]
    else:
        extra = ["--report", ""]
    argv = ["fix", model, "-o", out, "--trt", "8.6", "--quiet"] + extra
    return Case("output", kind, root, model, argv, check=False, expect=expect, protected=[model, weights],
                post=_output_post(kind, out))


def _output_post(kind: str, out: str) -> Callable[[int, str], List[str]]:
    """What must hold after an output-side case that succeeded: links kept, targets written."""
    def post(code: int, stdout: str) -> List[str]:
        if code not in (0, 1):
            return []
        if kind in ("symlink-out", "dangling-symlink", "devnull-symlink"):
            if not os.path.islink(out):
                return [f"output-dangles: the symlink {out} was replaced instead of written through"]
            if kind != "devnull-symlink":
                return _output_loads(os.path.realpath(out))
        if kind == "report-dash":
            import json
            try:
                json.loads(stdout)
            except ValueError:
                return ["output-dangles: --report - did not print the JSON report alone on standard output"]
        return []
    return post


GENERATORS: Dict[str, List[Callable]] = {
    "bytes": [bytes_truncate, bytes_bitflip, bytes_garbage, bytes_splice],
    "graph": [graph_cycle, graph_dangling, graph_dangling_output, graph_dtype, graph_rank, graph_dims,
              graph_initializer, graph_opset, graph_domain, graph_nesting, graph_attribute, graph_names,
              graph_mutate, graph_mutate, graph_mutate, graph_mutate],
    "external": [external_attack, external_broken, external_legit],
    "output": [output_mistake],
}


def make_case(index: int, seed: int, root: str) -> Case:
    """Case number `index` of the run seeded `seed`, built under `root` (an empty directory)."""
    rng = random.Random(seed * 1_000_003 + index)
    category = sorted(GENERATORS)[index % len(GENERATORS)]
    return rng.choice(GENERATORS[category])(root, rng)


# -- running and judging --------------------------------------------------------------------------

class _Timeout(Exception):
    pass


def run_main(argv: List[str], timeout: float, cwd: Optional[str] = None):
    """(exit code or None, stdout, stderr, escaped exception or None, hung) of graphfix.cli.main."""
    from graphfix.cli import main
    out, err = io.StringIO(), io.StringIO()
    old_cwd = os.getcwd()

    def alarm(signum, frame):
        raise _Timeout()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    code, escaped, hung = None, None, False
    try:
        if cwd:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:   # argparse usage errors
                code = exc.code if isinstance(exc.code, int) else 2
    except _Timeout:
        hung = True
    except Exception as exc:  # noqa: BLE001 - the point: nothing may escape main
        escaped = exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.chdir(old_cwd)
    return code, out.getvalue(), err.getvalue(), escaped, hung


def run_subprocess(argv: List[str], timeout: float, cwd: Optional[str] = None):
    """Like run_main, as ``python -m graphfix`` in a child: what a shell user sees on stderr,
    warnings and native libraries' logs included."""
    import subprocess
    import sys
    try:
        proc = subprocess.run([sys.executable, "-m", "graphfix", *argv], capture_output=True, timeout=timeout,
                              cwd=cwd or os.getcwd(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, "", "", None, True
    decode = lambda b: b.decode("utf-8", "replace")  # noqa: E731
    return proc.returncode, decode(proc.stdout), decode(proc.stderr), None, False


def _hashes(paths: Sequence[str]) -> Dict[str, str]:
    result = {}
    for p in paths:
        with open(p, "rb") as f:
            result[p] = hashlib.sha256(f.read()).hexdigest()
    return result


def _judge_run(what: str, code, out: str, err: str, escaped, hung, names: Sequence[str]) -> List[str]:
    if hung:
        return [f"hang: {what} ran past its time limit"]
    if escaped is not None:
        return [f"traceback: {what} raised {type(escaped).__name__}: {' '.join(str(escaped).split())[:200]}"]
    if "Traceback (most recent call last)" in err:
        return [f"traceback: {what} printed a traceback"]
    if code not in (0, 1, 2):
        return [f"exit-code: {what} exited {code}"]
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("usage:")]
        if len(lines) != 1 or not lines[0].startswith("graphfix: error: "):
            return [f"stderr: {what} exit 2 with {len(lines)} stderr lines: {lines[:3]}"]
        if not any(n and n in lines[0] for n in names) and "empty" not in lines[0]:
            return [f"stderr: {what} error names no file: {lines[0][:200]}"]
    return []


def _outputs(case: Case) -> List[str]:
    """Files the run may have written: everything under the case's directory but the inputs."""
    found = []
    for d, _, files in os.walk(case.root):
        for f in files:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p) and p not in case.protected:
                found.append(p)
    return found


def run_case(case: Case, timeout: float = 60.0, runner: Callable = None) -> Outcome:
    """Run `case` in this process (run_main) or with `runner=run_subprocess`, and judge it."""
    runner = runner or run_main
    started = time.perf_counter()
    before = _hashes(case.protected)
    canary_before = {p for p in _outputs(case) if case.canary and open(p, "rb").read() == case.canary}
    failures: List[str] = []
    fix_exit = check_exit = None
    names = [case.model, os.path.basename(case.model)]
    if case.fix_argv:
        argv = case.fix_argv
        names += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-o", "--report")]
        fix_exit, out, err, escaped, hung = runner(case.fix_argv, timeout, case.cwd)
        failures += _judge_run("fix", fix_exit, out, err, escaped, hung, names)
        if not failures and fix_exit not in case.expect:
            failures.append(f"unexpected-exit: fix exited {fix_exit}, expected one of {list(case.expect)}: "
                            f"{err.strip()[:200]}")
        if case.canary and case.canary in out.encode(errors="replace"):
            failures.append("canary-read: canary bytes on standard output")
        if fix_exit in (0, 1) and case.category != "output":
            failures += _output_loads(case.fix_argv[3])
        if case.post and not failures:
            failures += case.post(fix_exit, out)
    if case.check:
        check_exit, out, err, escaped, hung = runner(["check", case.model], timeout, case.cwd)
        failures += _judge_run("check", check_exit, out, err, escaped, hung, names)
        if fix_exit is not None and not failures and (fix_exit == 2) != (check_exit == 2):
            failures.append(f"check-fix-disagree: fix exited {fix_exit}, check {check_exit}")
    after = _hashes([p for p in case.protected if os.path.exists(p)])
    changed = [p for p in case.protected if before[p] != after.get(p)]
    if changed:
        failures.append(f"input-modified: {changed}")
    if case.canary:
        for p in _outputs(case):
            with open(p, "rb") as f:
                if case.canary in f.read() and p not in canary_before:
                    failures.append(f"canary-read: canary bytes in {p}")
    return Outcome(case.category, case.name, fix_exit, check_exit, failures, time.perf_counter() - started)


def _output_loads(path: str) -> List[str]:
    from graphfix.errors import InputError
    from graphfix.model_io import load_model
    if not os.path.isfile(path):
        return [f"output-dangles: fix succeeded but wrote no {path}"]
    try:
        load_model(path)
    except InputError as exc:
        return [f"output-dangles: {exc}"]
    return []
