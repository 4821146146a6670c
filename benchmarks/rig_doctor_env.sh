#!/bin/bash
# As run on the GPU rig on 2026-12-06 by the lead (environment facts for graphfix doctor); its output
# is summarised in tests/data/doctor/rig-8.6.0-h100/ (pyenv.txt, manifest.json).
o=$1; mkdir -p $o
{ nvidia-smi; nvidia-smi -q; nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version,clocks.sm,clocks.mem,clocks.max.sm,pstate,power.draw --format=csv; } > $o/nvidia-smi.txt 2>&1
{ ldconfig -p | grep -i -E "nvinfer|cuda|cudnn|cublas"; ls /usr/local/nvidia/lib64 2>/dev/null; cat /proc/driver/nvidia/version 2>/dev/null; } > $o/libs.txt 2>&1
/opt/gpukit/bin/python3.9 - > $o/pyenv.txt 2>&1 <<'PY'
import tensorrt, os, glob, ctypes
print(tensorrt.__version__, tensorrt.__file__)
d = os.path.dirname(tensorrt.__file__); print(sorted(os.listdir(d)))
for lib in ("libnvinfer_plugin.so.8", "libnvinfer_vc_plugin.so.8", "libnvinfer.so.8", "libcudart.so.12", "libcuda.so.1", "libnvidia-ml.so.1", "libnvonnxparser.so.8"):
    try: ctypes.CDLL(lib); print("load ok", lib)
    except OSError as e: print("load fail", lib, e)
try:
    c = ctypes.CDLL("libcuda.so.1"); v = ctypes.c_int(); print("cuInit", c.cuInit(0)); c.cuDriverGetVersion(ctypes.byref(v)); print("driver", v.value)
except Exception as e: print("cuda", e)
import onnxruntime as ort; print("ort", ort.__version__, ort.get_available_providers())
PY
