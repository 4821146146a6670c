"""A fast, seeded subset of the fuzz harness (tests/fuzz_cases.py; benchmarks/fuzz.py runs 1,000+),
and checks that the harness's judge does catch each kind of failure it claims to catch."""
from __future__ import annotations

import os
import time

import pytest

import fuzz_cases
from fuzz_cases import Case, make_case, run_case

FAST_CASES = 52          # 13 per category
SEED = 20261206


@pytest.mark.parametrize("index", range(FAST_CASES))
def test_fuzz_case_keeps_the_contract(tmp_path, index):
    case = make_case(index, SEED, str(tmp_path))
    started = time.perf_counter()
    outcome = run_case(case, timeout=60)
    assert not outcome.failures, f"{case.category}/{case.name}: {outcome.failures}"
    assert time.perf_counter() - started < 60


def test_every_category_is_covered_by_the_fast_subset(tmp_path):
    seen = {make_case(i, SEED, str(tmp_path / str(i))).category for i in range(4)}
    assert seen == set(fuzz_cases.GENERATORS)


def _case(tmp_path, **kw) -> Case:
    model = tmp_path / "model" / "m.onnx"
    model.parent.mkdir()
    model.write_bytes(fuzz_cases.tiny_model().SerializeToString())
    defaults = dict(category="graph", name="self-test", root=str(tmp_path), model=str(model),
                    fix_argv=["fix", str(model), "-o", str(tmp_path / "o.onnx"), "--trt", "8.6", "--quiet"],
                    protected=[str(model)])
    defaults.update(kw)
    return Case(**defaults)


def _fake_main(monkeypatch, behaviour):
    import graphfix.cli
    monkeypatch.setattr(graphfix.cli, "main", behaviour)


@pytest.mark.parametrize("behaviour, verdict", [
    ("raise", "traceback"), ("exit3", "exit-code"), ("two-lines", "stderr"), ("unnamed", "stderr"),
    ("hang", "hang"), ("touch-input", "input-modified"), ("leak-canary", "canary-read"),
])
def test_the_judge_catches_each_failure_kind(tmp_path, monkeypatch, behaviour, verdict):
    import sys
    case = _case(tmp_path, canary=b"GFCANARY-self-test", check=False)

    def fake(argv):
        if behaviour == "raise":
            raise KeyError("boom")
        if behaviour == "exit3":
            return 3
        if behaviour == "two-lines":
            print("graphfix: error: m.onnx: one\nand two", file=sys.stderr)
            return 2
        if behaviour == "unnamed":
            print("graphfix: error: something went wrong", file=sys.stderr)
            return 2
        if behaviour == "hang":
            while True:
                time.sleep(0.05)
        if behaviour == "touch-input":
            with open(case.model, "ab") as f:
                f.write(b"\0")
            return 0
        with open(tmp_path / "o.onnx", "wb") as f:     # leak-canary
            f.write(case.canary)
        return 0
    _fake_main(monkeypatch, fake)
    outcome = run_case(case, timeout=1)
    assert any(f.startswith(verdict + ":") for f in outcome.failures), outcome.failures


def test_the_judge_catches_check_and_fix_disagreeing(tmp_path, monkeypatch):
    case = _case(tmp_path)
    _fake_main(monkeypatch, lambda argv: 0 if argv[0] == "check" else _refuse(case.model))
    assert run_case(case, timeout=5).verdict == "check-fix-disagree"


def _refuse(model):
    import sys
    print(f"graphfix: error: {model}: refused", file=sys.stderr)
    return 2


def test_the_judge_catches_a_dangling_output(tmp_path, monkeypatch):
    case = _case(tmp_path, category="bytes", check=False)
    out = case.fix_argv[3]

    def dangling(argv):
        model = fuzz_cases.tiny_model()
        fuzz_cases.set_external(model.graph.initializer[0], "../model/w.bin")
        with open(out, "wb") as f:
            f.write(model.SerializeToString())
        return 0
    _fake_main(monkeypatch, dangling)
    assert run_case(case, timeout=5).verdict == "output-dangles"
    assert os.path.exists(out)
