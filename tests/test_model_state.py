"""The pipeline's one model state: the graph stays in memory from pass to pass, so a pass that
reports no change must leave it byte-identical; each new state runs in ONNX Runtime once; the
report records what differs beyond the passes' changes; the import graph has no cycles."""
from __future__ import annotations

import ast
import os

import onnx
import pytest

import graphfix
from graphfix import pipeline, registry
from graphfix.fixtures import all_fixtures, build
from graphfix.graph_utils import to_model
from graphfix.pass_api import Pass, PassContext, PassInfo, PassResult
from graphfix.target import TrtVersion

OPTIONS = {"precision": {"precision": "fp16"}}   # opt-in passes: the option that makes them work


EXPORTED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "exported")


def _exported_models():
    """The exported models (torch.onnx): their opset_import entries leave the domain unset, which
    the fixtures built with onnx.helper do not."""
    return {f: (lambda f=f: onnx.load(os.path.join(EXPORTED, f))) for f in sorted(os.listdir(EXPORTED))
            if f.endswith("ts17.onnx")}


@pytest.mark.parametrize("trt,models", [("8.6", all_fixtures), ("10.0", all_fixtures), ("10.0", _exported_models)],
                         ids=["fixtures-8.6", "fixtures-10.0", "exported-10.0"])
def test_a_pass_that_reports_no_change_leaves_the_graph_byte_identical(trt, models):
    """The contract the in-memory state rests on, for every registered pass on every fixture."""
    offenders = []
    for fixture, make in models().items():
        model = make()
        for cls in registry.ordered_passes():
            if not cls.info.trt.contains(TrtVersion.parse(trt)):
                continue
            state = pipeline.ModelState(model)
            try:
                graph = state.take_graph()
                before = to_model(graph, model).SerializeToString()
            except Exception:   # fixtures graphsurgeon cannot round-trip: the pipeline reports those
                break
            ctx = PassContext(target=TrtVersion.parse(trt), model=model, options=OPTIONS.get(cls.info.name, {}))
            try:
                result = cls(ctx).run(graph)
            except Exception:   # a failing pass drops the graph (tested below)
                continue
            state.unread()      # constants it read export as imported (values unchanged, encoding kept)
            if not result.modified and to_model(graph, model).SerializeToString() != before:
                offenders.append(f"{cls.info.name} on {fixture}")
    assert not offenders, offenders


class _Counting(Pass):
    info = PassInfo(name="test-noop", summary="changes nothing", fixes="nothing")
    graphs = []

    def run(self, graph):
        type(self).graphs.append(graph)
        return PassResult()


class _Raises(Pass):
    info = PassInfo(name="test-raiser", summary="raises after a change to the graph", fixes="nothing")

    def run(self, graph):
        graph.nodes[0].op = "Abs"
        raise RuntimeError("boom")


@pytest.fixture
def extra_passes(monkeypatch):
    order = list(registry.PIPELINE_ORDER)
    order[1:1] = ["test-noop", "test-raiser"]
    order.insert(order.index("plugins"), "test-noop-2")   # checkable passes go before plugins
    monkeypatch.setattr(registry, "PIPELINE_ORDER", order)
    registry.registered()
    late = type("_Late", (_Counting,), {"info": PassInfo(name="test-noop-2", summary="", fixes="")})
    for name, cls in (("test-noop", _Counting), ("test-raiser", _Raises), ("test-noop-2", late)):
        monkeypatch.setitem(registry._REGISTRY, name, cls)
    _Counting.graphs = []


def test_the_graph_stays_in_memory_and_a_failed_pass_is_dropped_with_its_traceback(extra_passes, monkeypatch):
    from graphfix import graph_utils
    imports = []
    real = graph_utils.to_graph
    monkeypatch.setattr(graph_utils, "to_graph", lambda m: imports.append(m) or real(m))
    fixed, report = graphfix.fix(build("identity_chain"), trt="10.0",
                                 passes="test-noop,test-raiser,test-noop-2,cleanup")
    by_name = {p.name: p for p in report.passes}
    assert by_name["test-raiser"].status == "failed"
    trace = by_name["test-raiser"].to_json()["traceback"]
    assert trace.startswith("Traceback") and "RuntimeError: boom" in trace and "test_model_state.py" in trace
    assert by_name["cleanup"].status == "applied"
    # imported once at the start, and once more after the failed pass (its graph was dropped)
    assert len(imports) == 2
    assert "Abs" not in [n.op_type for n in fixed.graph.node]
    assert report.ok is False


def test_each_state_runs_in_onnx_runtime_once(monkeypatch):
    """identity_chain: normalize and cleanup change it; every other pass changes nothing."""
    from polygraphy.comparator import Comparator
    runs = []
    real = Comparator.run
    monkeypatch.setattr(Comparator, "run", lambda runners, **kw: runs.append([r.name for r in runners])
                        or real(runners, **kw))
    from graphfix.checks import structural
    exports, validations = [], []
    real_export, real_validate = pipeline.to_model, structural.validity_problems
    monkeypatch.setattr(pipeline, "to_model", lambda *a, **k: exports.append(1) or real_export(*a, **k))
    monkeypatch.setattr(structural, "validity_problems", lambda m: validations.append(1) or real_validate(m))
    checkers, real_checker = [], onnx.checker.check_model
    monkeypatch.setattr(onnx.checker, "check_model", lambda m, *a, **k: checkers.append(1) or real_checker(m, *a, **k))
    fixed, report = graphfix.fix(build("identity_chain"), trt="10.0")
    applied = [p.name for p in report.passes if p.status == "applied"]
    ran = [p.name for p in report.passes if p.status != "skipped"]
    assert len(applied) >= 1 and len(ran) > len(applied) and report.ok
    # a pass that changed nothing cost no export and no validation; the final checker reused the last one
    assert len(exports) == len(applied) and len(validations) == len(applied) == len(checkers)
    assert next(c for c in report.checks if c["kind"] == "onnx-checker")["passed"] is True
    # each new state once; the original ran in the input search, and the whole check runs nothing new
    assert sum(len(r) for r in runs) == len(applied), runs
    assert all(r == ["candidate"] for r in runs), runs
    whole = next(c for c in report.checks if c["kind"] == "ort")
    assert whole["passed"] is True


def test_reused_outputs_give_the_same_figures_as_running_again():
    from graphfix.checks.input_search import choose_inputs
    from graphfix.checks.ort import compare_models
    from gf_testing import apply_pass
    model = build("identity_chain")
    after, _ = apply_pass("cleanup", model, "10.0")
    feeds = choose_inputs(model).feeds
    fresh = compare_models(model, after, feeds=feeds)
    assert set(fresh.runs) == {"reference", "candidate"}
    reused = compare_models(model, after, feeds=feeds, known=fresh.runs)
    assert fresh.passed and fresh.to_json() == reused.to_json()
    # outputs that differ are seen as such: the reuse compares, it does not copy the verdict
    swapped = compare_models(model, after, feeds=feeds, known={"reference": fresh.runs["candidate"],
                                                                 "candidate": fresh.runs["reference"]})
    assert swapped.passed and swapped.to_json() == fresh.to_json()


def test_the_report_records_the_ir_version_and_dropped_initializers():
    model = build("identity_chain")
    model.ir_version = 11
    unused = onnx.numpy_helper.from_array(__import__("numpy").zeros([3], "float32"), "gf_unused_weight")
    model.graph.initializer.append(unused)
    fixed, report = graphfix.fix(model, trt="10.0", passes="cleanup", check="none")
    assert fixed.ir_version == 10
    doc = report.to_json()
    assert doc["differences"]["ir_version"] == {"from": 11, "to": 10}
    # cleanup records only its Identity removals; the export dropped the unused weight: the report says so
    assert {c["action"] for p in report.passes for c in p.changes} == {"remove-identity"}
    assert "gf_unused_weight" not in {t.name for t in fixed.graph.initializer}
    assert doc["differences"]["dropped_unused_initializers"] == ["gf_unused_weight"]
    assert "IR version 11 -> 10" in report.summary()
    # nothing changed: nothing differs
    _, report = graphfix.fix(build("identity_chain"), trt="10.0", passes="int64-to-int32", check="none")
    assert report.to_json()["differences"] == {}


def test_fix_with_the_trt_check_refuses_clearly_without_tensorrt(monkeypatch):
    from graphfix.checks.tensorrt import env as trt_env
    from graphfix.errors import UsageError
    monkeypatch.setattr(trt_env, "trt_unavailable_reason", lambda: "no tensorrt here (test)")
    with pytest.raises(UsageError, match=r"fix\(check='trt'\) needs TensorRT: no tensorrt here"):
        graphfix.fix(build("identity_chain"), trt="10.0", check="trt")


def _module_imports(path: str, package: str) -> set:
    """graphfix modules a module imports when it is imported (top level, not inside functions)."""
    tree = ast.parse(open(path).read())
    found = set()
    body = list(tree.body)
    while body:
        node = body.pop(0)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):   # never runs
            body.extend(node.orelse)
        elif isinstance(node, (ast.If, ast.Try)):   # imports under a top-level if/try still run at import
            body.extend(node.body + node.orelse + getattr(node, "finalbody", [])
                        + [s for h in getattr(node, "handlers", []) for s in h.body])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                found.update([mod] + [f"{mod}.{a.name}" for a in node.names])
            elif node.module and node.module.startswith("graphfix"):
                found.update([node.module] + [f"{node.module}.{a.name}" for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("graphfix"))
    return found


def test_no_import_cycles_between_graphfix_modules():
    import graphfix.passes
    modules = {}
    for top, root in (("graphfix", os.path.dirname(graphfix.__file__)),
                      ("graphfix.passes", os.path.dirname(graphfix.passes.__file__))):
        for dirpath, _, files in os.walk(root):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, f), root)[:-3].replace(os.sep, ".")
                    name = top + ("" if rel == "__init__" else "." + rel.replace(".__init__", ""))
                    package = name if f == "__init__.py" else name.rsplit(".", 1)[0]
                    modules.setdefault(name, (os.path.join(dirpath, f), package))
    deps = {m: {d for d in _module_imports(p, pkg) if d in modules and d != m} for m, (p, pkg) in modules.items()}
    state, cycles = {}, []

    def visit(m, path):
        state[m] = 1
        for d in sorted(deps[m]):
            if state.get(d) == 1:
                cycles.append(path[path.index(d):] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2
    for m in sorted(modules):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_fix_with_the_trt_check_runs_the_tensorrt_check(monkeypatch):
    """Where TensorRT is present, fix(check="trt") builds and compares (here: the call it makes)."""
    from graphfix.checks.tensorrt import env as trt_env, trt as trt_check
    monkeypatch.setattr(trt_env, "trt_unavailable_reason", lambda: None)
    calls = []

    class FakeResult:
        def to_json(self):
            return {"passed": True}

    def fake_build(original, fixed, **options):
        calls.append((onnx.load(original), onnx.load(fixed)))
        return FakeResult()
    monkeypatch.setattr(trt_check, "build_and_compare", fake_build)
    fixed, report = graphfix.fix(build("identity_chain"), trt="10.0", check="trt")
    assert len(calls) == 1 and [c["kind"] for c in report.checks][-1] == "trt"
    original, built = calls[0]
    assert len(original.graph.node) == len(build("identity_chain").graph.node)
    assert built.SerializeToString() == fixed.SerializeToString()
    assert [c["kind"] for c in report.checks].count("ort") == 1   # ONNX Runtime ran too
