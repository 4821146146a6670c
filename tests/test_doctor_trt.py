"""graphfix doctor against real TensorRT 8.6 on a GPU (`pytest -m trt`; skipped elsewhere).

Runs benchmarks/rig_doctor.py, which builds small engines and a timing cache, edits one header
field at a time and lets TensorRT deserialize each copy: what graphfix doctor says about a file
must agree with what TensorRT does with it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from graphfix.doctor.plan_header import parse_header

pytestmark = pytest.mark.trt
SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "rig_doctor.py")


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    out = tmp_path_factory.mktemp("rig_doctor")
    proc = subprocess.run([sys.executable, SCRIPT, str(out)], capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return str(out), json.load(open(os.path.join(out, "manifest.json")))


def _read(out, manifest, name):
    with open(os.path.join(out, name), "rb") as f:
        return parse_header(f.read(), path=name, file_size=manifest["files"][name]["file_size"])


def test_header_version_and_device_are_tensorrts_and_the_gpus(rig):
    out, manifest = rig
    info = _read(out, manifest, "trt-default.plan.head")
    import tensorrt as trt
    assert info.version_text.startswith(trt.__version__.split("post")[0].rstrip("."))
    if manifest["library_versions"]:
        assert info.version_text in manifest["library_versions"]
    assert info.compute_capabilities == [manifest["gpu"]["compute_capability"]]
    assert info.device["sm_count"] == manifest["gpu"]["sm_count"]
    assert manifest["files"]["trt-default.plan.head"]["deserializes"]["ok"]
    cache = _read(out, manifest, "trt.timing-cache.head")
    assert cache.kind == "timing-cache" and cache.serialization_version == info.serialization_version


@pytest.mark.parametrize("edit", ["version-patch-plus-1.plan", "inner-version-patch-plus-1.plan",
                                  "serialization-version-plus-1.plan", "cc-minor-plus-1.plan",
                                  "sm-count-minus-2.plan"])
def test_doctor_agrees_with_tensorrt_on_edited_plans(rig, edit):
    """One header field changed: doctor says "does not run here" exactly when TensorRT refuses the plan,
    and quotes TensorRT's message (version / device), or its warning for another model of device."""
    entry = rig[1]["edits"].get(edit)
    if entry is None:
        pytest.skip(f"{edit}: the field was not found in this plan")
    tensorrt, files = entry["tensorrt"], entry["doctor"]
    said = files[0]["verdict"]
    assert said["runs_here"] is (True if tensorrt["ok"] else False), (tensorrt, said)
    trt_text = " ".join(tensorrt["messages"])
    for phrase in ("expecting library version", "incompatible device", "different models of devices"):
        if phrase in trt_text:
            assert phrase in said["reason"] + " ".join(said["warnings"]), (phrase, said)


def test_cut_plan_is_exit_2(rig):
    entry = rig[1]["edits"]["cut-in-half.plan"]
    assert entry["doctor_exit_code"] == 2 and "truncated" in " ".join(entry["doctor"])
    assert entry["tensorrt"]["ok"] is False


def test_doctor_here_sees_tensorrt_and_the_gpu(rig):
    out, manifest = rig
    here = json.load(open(os.path.join(out, "doctor.json")))
    env = here["result"]["environment"]
    assert env["tensorrt"]["probe"]["builder"] is True
    assert env["gpus"][0]["compute_capability"] == manifest["gpu"]["compute_capability"]
    assert env["cuda"]["driver"] is not None
    assert not [p for p in here["result"]["problems"] if p["severity"] == "error"]
