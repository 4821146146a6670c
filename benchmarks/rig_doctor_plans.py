"""Early rig run: build tiny TensorRT 8.6 plans and a timing cache, record them and what 8.6 says about
edited plans (for graphfix doctor's header reader). Python 3.9, TensorRT 8.6. usage: plans.py OUTDIR

As run on the GPU rig on 2026-12-06 (TensorRT 8.6.0 wheel, H100): it made the plans and the timing cache
whose headers are tests/data/doctor/rig-8.6.0-h100/, and edits.json there (one byte of the header flipped
at a time, deserialized by TensorRT). Its "sizes" came out as errors (len() of IHostMemory); the files
were written before that. benchmarks/rig_doctor.py is the maintained successor."""
import json, os, subprocess, sys
import numpy as np
import onnx
from onnx import helper, TensorProto, numpy_helper

out = sys.argv[1]
os.makedirs(out, exist_ok=True)

def model():
    w = numpy_helper.from_array(np.random.RandomState(0).randn(8, 3, 3, 3).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]); m.ir_version = 8
    return m.SerializeToString()

def build(name, fp16=False, vc=False, hw=False):
    import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
    b = trt.Builder(logger)
    net = b.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    p = trt.OnnxParser(net, logger); assert p.parse(model())
    c = b.create_builder_config()
    c.set_tactic_sources((1 << int(trt.TacticSource.EDGE_MASK_CONVOLUTIONS)) | (1 << int(trt.TacticSource.JIT_CONVOLUTIONS)))
    c.builder_optimization_level = 0
    cache = c.create_timing_cache(b""); c.set_timing_cache(cache, ignore_mismatch=False)
    if fp16: c.set_flag(trt.BuilderFlag.FP16)
    if vc: c.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if hw: c.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    plan = b.build_serialized_network(net, c)
    open(f"{out}/{name}.plan", "wb").write(bytes(plan))
    open(f"{out}/{name}.timing-cache", "wb").write(bytes(c.get_timing_cache().serialize()))
    return len(plan)

DESER = r'''
import sys, tensorrt as trt
class L(trt.ILogger):
    def __init__(s): trt.ILogger.__init__(s); s.msgs=[]
    def log(s, sev, msg): s.msgs.append(str(msg))
l = L(); rt = trt.Runtime(l)
try: rt.engine_host_code_allowed = True
except Exception: pass
e = rt.deserialize_cuda_engine(open(sys.argv[1], "rb").read())
print("OK" if e is not None else "FAIL"); print("\n".join(l.msgs[-4:]))
'''

def deser(path):
    r = subprocess.run([sys.executable, "-c", DESER, path], capture_output=True, text=True, timeout=60)
    return {"rc": r.returncode, "out": r.stdout[-1500:], "err": r.stderr[-600:]}

import tensorrt as trt
info = {"trt": trt.__version__, "sizes": {}}
for name, kw in [("fp32", {}), ("fp16", {"fp16": True}), ("vc", {"vc": True}), ("hw", {"hw": True})]:
    try:
        info["sizes"][name] = build(name, **kw)
    except Exception as e:
        info["sizes"][name] = f"error {e}"
base = open(f"{out}/fp32.plan", "rb").read()
info["deser_fp32"] = deser(f"{out}/fp32.plan")
edits = {}
for off in range(0, 64):
    b = bytearray(base); b[off] ^= 0x01
    p = f"/tmp/edit_{off}.plan"; open(p, "wb").write(b)
    edits[off] = deser(p)
info["edits"] = edits
b = base[:100]; open("/tmp/trunc.plan", "wb").write(b); info["truncated"] = deser("/tmp/trunc.plan")
for n in ("vc", "hw", "fp16"):
    if os.path.exists(f"{out}/{n}.plan"):
        info[f"deser_{n}"] = deser(f"{out}/{n}.plan")
json.dump(info, open(f"{out}/info.json", "w"), indent=1)
print(json.dumps({k: v for k, v in info.items() if k != "edits"}, indent=1)[:3000])
