"""The TensorRT child process: parse, build and run one model, reporting as it goes.

Run as ``python -m graphfix.checks.tensorrt.worker REQUEST.json`` by graphfix.checks.tensorrt.trt, never imported
by graphfix itself: TensorRT can abort or segfault on bad graphs (8.6 does), and that must end this
process, not the caller. Everything the parent needs is appended, one JSON object per line, to the
events file named in the request, flushed line by line, so a crash loses nothing already reported:

    {"event": "stage", "stage": "import" | "plugins" | "parse" | "build" | "run"}
    {"event": "start", "trt_version": "8.6.0", "backend": "trt" | "rtx", "label": str}
    {"event": "parsed", "ok": bool, "errors": [raw parser error], "warnings": [str]}
    {"event": "built", "ok": bool, "seconds": float, "engine_bytes": int, "errors": [str], ...}
    {"event": "ran", "iterations": [{"file": npz, "names": [output names]}], "seconds": float}
    {"event": "error", "stage": str, "message": str}   # a Python exception, reported, exit 1
    {"event": "done"}                                  # last line, success or not

Raw parser errors are mapped to ONNX nodes by the parent, which has the model.
Works with the TensorRT 8.6 and 10.x Python APIs; Polygraphy's loaders and runner bridge the two.
The request's "backend" (graphfix.checks.tensorrt.backends, default "trt") picks the TensorRT module;
TensorRT-RTX ("rtx") builds ahead of time without precision flags and stops after the build.
Only the standard library, numpy, tensorrt (or tensorrt_rtx_bindings), polygraphy and the backend
table (graphfix.checks.tensorrt.backends) are imported here.
"""
from __future__ import annotations

import ctypes
import json
import os
import sys
import time
import traceback
from typing import Any, Dict, List, Optional

# Tactic sources graphfix enables: TensorRT's own convolution kernels only. cuBLAS, cuBLASLt and
# cuDNN stay off (validation rigs may ship them as stubs, and TensorRT's own kernels suffice).
TACTIC_SOURCES = ("EDGE_MASK_CONVOLUTIONS", "JIT_CONVOLUTIONS")
MAX_MESSAGES = 50
_ALIVE: List[Any] = []


class Events:
    """Append-only JSON-lines reporter; every line is flushed and fsynced before going on."""

    def __init__(self, path: str):
        self.path = path
        self.stage = "start"

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "t": time.time(), **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def enter(self, stage: str) -> None:
        self.stage = stage
        self.emit("stage", stage=stage)


def _make_logger(trt):
    """A TensorRT logger that records warnings and errors and echoes them to stderr."""

    class RecordingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.records: List[tuple] = []

        def log(self, severity, msg):  # noexcept on the C++ side: never raise here
            try:
                if severity in (trt.Logger.INTERNAL_ERROR, trt.Logger.ERROR):
                    level = "E"
                elif severity == trt.Logger.WARNING:
                    level = "W"
                else:
                    return
                self.records.append((level, str(msg)))
                sys.stderr.write(f"[TRT] [{level}] {msg}\n")
                sys.stderr.flush()
            except Exception:
                pass

        def mark(self) -> int:
            return len(self.records)

        def since(self, mark: int, level: str) -> List[str]:
            seen, out = set(), []
            for lvl, msg in self.records[mark:]:
                if lvl == level and msg not in seen:
                    seen.add(msg)
                    out.append(msg)
            return out[:MAX_MESSAGES]

    logger = RecordingLogger()
    # Polygraphy's loaders and runner use its process-wide logger; make that ours, so TensorRT sees
    # one logger for builder, parser and runtime, and every message is recorded.
    import importlib
    importlib.import_module("polygraphy.backend.trt.util").TRT_LOGGER = logger
    return logger


def _call(obj, method: str):
    """obj.method() where this TensorRT has it (ParserError grew node_name() in 10.x), else None."""
    fn = getattr(obj, method, None)
    if fn is None:
        return None
    try:
        return fn()
    except Exception:
        return None


def contiguous(array):
    """A C-contiguous copy that keeps the shape: np.ascontiguousarray turns a 0-D array into shape
    (1,), which TensorRT refuses for scalar inputs ("Expected BoundedShape([])", seen on the rig)."""
    import numpy as np
    return np.ascontiguousarray(array).reshape(np.shape(array))


def engine_input_source(engine_name: str, arrays) -> Optional[str]:
    """The ONNX input feeding a network input. TensorRT's ONNX parser renames an input that is also
    a graph output to "__<name>" (onnx-tensorrt ModelImporter: TensorRT forbids input == output)."""
    if engine_name in arrays:
        return engine_name
    if engine_name.startswith("__") and engine_name[2:] in arrays:
        return engine_name[2:]
    return None


def _enum_name(value) -> Optional[str]:
    """An enum member's name; TensorRT 8.6's bindings expose `name` as a method, 10.x as a property."""
    if value is None:
        return None
    name = getattr(value, "name", None)
    if callable(name):
        name = name()
    return name if isinstance(name, str) else str(value).rsplit(".", 1)[-1]


def raw_parser_errors(parser) -> List[Dict[str, Any]]:
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        code = _call(err, "code")
        index = _call(err, "node")
        errors.append({
            "index": index if isinstance(index, int) and index >= 0 else None,
            "node_name": _call(err, "node_name") or None,   # TensorRT >= 10
            "node_operator": _call(err, "node_operator") or None,
            "code": _enum_name(code),
            "desc": _call(err, "desc") or str(err),
            "text": str(err),
        })
    return errors


def load_plugins(trt, logger, libraries: List[str]) -> None:
    for lib in libraries:
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)  # plugins register their creators on load
    trt.init_libnvinfer_plugins(logger, "")       # TensorRT's own plugins (ROIAlign_TRT, ...)


def parse(trt, logger, model_path: str):
    from polygraphy.backend.trt import CreateNetwork

    builder, network = CreateNetwork()()           # explicit batch on 8.6, default on 10.x
    parser = trt.OnnxParser(network, logger)
    mark = logger.mark()
    ok = bool(parser.parse_from_file(os.path.abspath(model_path)))  # keeps external data working
    errors = raw_parser_errors(parser)
    return builder, network, parser, {"ok": ok and not errors, "errors": errors,
                                      "warnings": logger.since(mark, "W")}


def default_timing_cache(trt, prefix: str = "trt") -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "graphfix", f"{prefix}-{trt.__version__}.timing-cache")


def _usable_timing_cache(builder, path: str) -> None:
    """Set aside a cache file this TensorRT cannot read, rather than fail the build on it."""
    if not os.path.exists(path):
        return
    try:
        with open(path, "rb") as f:
            cache = builder.create_builder_config().create_timing_cache(f.read())
        ok = cache is not None
    except Exception:
        ok = False
    if not ok:
        os.replace(path, path + ".unreadable")


def tactic_sources(trt) -> List[Any]:
    return [getattr(trt.TacticSource, name) for name in TACTIC_SOURCES if hasattr(trt.TacticSource, name)]


def explicitly_quantized(trt, network) -> bool:
    """Whether the network holds Q/DQ layers: TensorRT then refuses to build unless INT8 is enabled
    ("Int8 precision has been set for a layer ... but int8 is not configured", seen on the rig);
    no calibration is involved, the Q/DQ scales say everything."""
    qdq = {trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE}
    return any(network.get_layer(i).type in qdq for i in range(network.num_layers))


def build(trt, logger, builder, network, parser, req: Dict[str, Any], events: Events,
          backend=None) -> Optional[bytes]:
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, Profile
    precision_flags = backend is None or backend.precision_flags

    inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    profiles = None
    wanted = {k: v for k, v in sorted((req.get("profile") or {}).items()) if k in inputs}
    if wanted:
        profile = Profile()
        for name, dims in wanted.items():
            profile.add(name, min=dims["min"], opt=dims["opt"], max=dims["max"])
        profiles = [profile]
    cache = req.get("timing_cache") or default_timing_cache(trt, backend.timing_cache_prefix if backend else "trt")
    os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
    _usable_timing_cache(builder, cache)
    kwargs: Dict[str, Any] = dict(profiles=profiles, tactic_sources=tactic_sources(trt), load_timing_cache=cache)
    if precision_flags:   # strongly typed networks (TensorRT-RTX) have no precision flags: types come from the ONNX
        kwargs.update(fp16=bool(req.get("fp16")), tf32=bool(req.get("tf32")))
    int8 = precision_flags and explicitly_quantized(trt, network)
    if int8:
        kwargs["int8"] = True
    config_class = backend.config_loader() if backend is not None else CreateConfig
    level = req.get("optimization_level")
    if level is not None and hasattr(trt.IBuilderConfig, "builder_optimization_level"):  # >= 8.6
        kwargs["builder_optimization_level"] = int(level)
    if req.get("workspace"):
        kwargs["memory_pool_limits"] = {trt.MemoryPoolType.WORKSPACE: int(req["workspace"])}
    mark = logger.mark()
    started = time.perf_counter()
    engine_bytes, failure = None, None
    try:
        serialized = EngineBytesFromNetwork((builder, network, parser), config=config_class(**kwargs),
                                            save_timing_cache=cache)()
        # trt.IHostMemory on 8.6/10.x: copy it out through the buffer protocol
        engine_bytes = bytes(memoryview(serialized)) if serialized is not None else None
    except Exception as exc:  # Polygraphy raises on a failed build; TensorRT's reasons are in the log
        failure = " ".join(str(exc).split())[:500]
    seconds = time.perf_counter() - started
    size = len(engine_bytes) if engine_bytes else 0
    benign = backend.benign_errors if backend is not None else ()
    errors = [e for e in logger.since(mark, "E") if not any(b in e for b in benign)]
    events.emit("built", ok=bool(engine_bytes), seconds=seconds, engine_bytes=size, errors=errors, failure=failure,
                timing_cache=cache,
                optimization_level=kwargs.get("builder_optimization_level"), int8_explicit=int8,
                tactic_sources=[s for s in TACTIC_SOURCES if hasattr(trt.TacticSource, s)],
                profile=wanted)
    return engine_bytes or None


def _numpy_dtype(dtype):
    import numpy as np
    try:
        return np.dtype(dtype)
    except TypeError:  # a Polygraphy DataType
        from polygraphy.datatype import DataType
        return DataType.to_dtype(DataType.from_dtype(dtype), "numpy")


def run(engine_bytes: bytes, req: Dict[str, Any], events: Events) -> None:
    import numpy as np
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    workdir = req["workdir"]
    started = time.perf_counter()
    iterations = []
    with TrtRunner(EngineFromBytes(engine_bytes)) as runner:
        meta = runner.get_input_metadata()
        for i, spec in enumerate(req["feeds"]):
            stored = np.load(os.path.join(workdir, spec["file"]))
            arrays = {name: stored[f"arr_{k}"] for k, name in enumerate(spec["names"])}
            sources = {name: engine_input_source(name, arrays) for name in meta.keys()}
            missing = [name for name, src in sources.items() if src is None]
            if missing:
                raise RuntimeError(f"engine inputs {missing} have no data (the original model has no such input)")
            # TensorRT 8.6 turns INT64 inputs into INT32 ones: feed each input in the engine's dtype.
            feed = {name: contiguous(arrays[sources[name]].astype(_numpy_dtype(meta[name].dtype), copy=False))
                    for name in meta.keys()}
            outputs = runner.infer(feed)
            names = list(outputs.keys())
            out_file = f"trt_outputs_{i}.npz"
            np.savez(os.path.join(workdir, out_file), *[np.array(outputs[n], copy=True) for n in names])
            iterations.append({"file": out_file, "names": names})
    events.emit("ran", iterations=iterations, seconds=time.perf_counter() - started)


def work(req: Dict[str, Any], events: Events) -> List[Any]:
    """Do the request; return the TensorRT objects, which must outlive the final "done" event."""
    from graphfix.checks.tensorrt.backends import get_backend
    alive: List[Any] = []
    backend = get_backend(req.get("backend"))
    events.enter("import")
    trt = backend.import_module()
    events.emit("start", trt_version=trt.__version__, python=sys.version.split()[0], backend=backend.name,
                label=backend.label(trt.__version__))
    logger = _make_logger(trt)
    from polygraphy.logger import G_LOGGER
    G_LOGGER.module_severity = G_LOGGER.ERROR  # Polygraphy's own chatter stays out of the log tail

    events.enter("plugins")
    load_plugins(trt, logger, list(req.get("plugins") or []))

    events.enter("parse")
    builder, network, parser, parsed = parse(trt, logger, req["model"])
    alive.extend([logger, builder, network, parser])
    events.emit("parsed", **parsed)
    if req["mode"] == "parse" or not parsed["ok"]:
        return alive

    events.enter("build")
    engine_bytes = build(trt, logger, builder, network, parser, req, events, backend)
    if engine_bytes is None:
        return alive
    if req.get("engine_path"):
        with open(req["engine_path"], "wb") as f:
            f.write(engine_bytes)
    if not backend.runs_engines or req["mode"] == "build-only":
        return alive

    events.enter("run")
    run(engine_bytes, req, events)
    return alive


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m graphfix.checks.tensorrt.worker REQUEST.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        req = json.load(f)
    events = Events(req["events"])
    code = 0
    try:
        _ALIVE.extend(work(req, events))  # kept alive until the process exits
    except BaseException as exc:  # reported as data; the parent decides what it means
        tb = traceback.extract_tb(exc.__traceback__)
        where = f"{tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else "?"
        events.emit("error", stage=events.stage, kind=type(exc).__name__,
                    message=" ".join(str(exc).split())[:800], where=where)
        traceback.print_exc()
        code = 1
    events.emit("done")
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: TensorRT 8.6 objects can crash in their destructors at exit, and
    # everything worth keeping has been written.
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
