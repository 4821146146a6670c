"""Write the recorded plan/timing-cache headers that tests/test_doctor.py reads (run from the repository root).

    pip install tensorrt-rtx-cu12-libs==1.7.1.116 tensorrt-rtx-cu12-bindings==1.7.1.116
    python tests/data/doctor/make_headers.py tests/data/doctor

TensorRT-RTX builds ahead of time on the CPU, so this needs no GPU. Each plan is a one-layer
network (x[1,4] -> ReLU -> y) built for the compute capabilities in its name; the first HEAD_BYTES
bytes of each plan/cache are kept (the header and the start of the engine stream; the whole plans
are ~130 KB of kernels that the tests do not need), and manifest.json records each file's real size
and how it was made. The entries for the public TensorRT 8.6.1.6 plan and TensorRT 10 timing
cache were added by hand (see their "source"); the GPU rig's own headers come from
benchmarks/rig_doctor.py into tests/data/doctor/rig/.
"""
from __future__ import annotations

import json
import os
import sys

HEAD_BYTES = 2048
TARGETS = {"rtx-1.7-sm80": ["SM80"], "rtx-1.7-sm86-sm89": ["SM86", "SM89"], "rtx-1.7-sm120": ["SM120"],
           "rtx-1.7-sm75": ["SM75"], "rtx-1.7-all": ["SM75", "SM80", "SM86", "SM89", "SM120", "SM121"]}


def build(trt, targets):
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    x = network.add_input("x", trt.float32, (1, 4))
    y = network.add_activation(x, trt.ActivationType.RELU).get_output(0)
    y.name = "y"
    network.mark_output(y)
    config = builder.create_builder_config()
    config.num_compute_capabilities = len(targets)
    for i, name in enumerate(targets):
        config.set_compute_capability(getattr(trt.ComputeCapability, name), i)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, targets
    cache = config.create_timing_cache(b"")
    return bytes(plan), bytes(cache.serialize())


def main(out_dir: str) -> None:
    import warnings
    warnings.simplefilter("ignore", DeprecationWarning)   # timing caches are no-ops in TensorRT-RTX
    import tensorrt_rtx_bindings as trt

    manifest_path = os.path.join(out_dir, "manifest.json")
    manifest = json.load(open(manifest_path)) if os.path.exists(manifest_path) else {}
    cache = None
    for name, targets in TARGETS.items():
        plan, cache = build(trt, targets)
        with open(os.path.join(out_dir, name + ".plan.head"), "wb") as f:
            f.write(plan[:HEAD_BYTES])
        manifest[name + ".plan.head"] = {
            "source": f"tensorrt_rtx_bindings {trt.__version__}, make_headers.py, targets {targets}",
            "file_size": len(plan), "kind": "plan", "product": "TensorRT-RTX", "version": trt.__version__,
            "compute_capabilities": [t[2:-1] + "." + t[-1] for t in targets]}
    with open(os.path.join(out_dir, "rtx-1.7.timing-cache.head"), "wb") as f:
        f.write(cache[:HEAD_BYTES])
    manifest["rtx-1.7.timing-cache.head"] = {
        "source": f"tensorrt_rtx_bindings {trt.__version__}, make_headers.py (empty cache, serialized)",
        "file_size": len(cache), "kind": "timing-cache", "product": "TensorRT-RTX", "version": None,
        "compute_capabilities": []}
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
