"""Layers, read from the source (ast): no import cycles among graphfix's modules (imports inside
functions count: they are dependencies too), argparse only in the command line's modules, and no
module importing another module's private names across packages."""
from __future__ import annotations

import ast
import os
from typing import Dict, List, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# package -> folder (setuptools package-dir: passes/ and fixtures/ are installed inside graphfix)
PACKAGES = {"graphfix": os.path.join(ROOT, "graphfix"), "graphfix.passes": os.path.join(ROOT, "passes"),
            "graphfix.fixtures": os.path.join(ROOT, "fixtures")}
# Cycles through modules another branch is restructuring (the pipeline's model state: checks/ort.py,
# report.py). Listed so that any *other* cycle fails now; each entry must still exist (remove it
# when the cycle is broken).
KNOWN_CYCLES = {
    frozenset({"graphfix.checks.ort", "graphfix.checks.exact_reference", "graphfix.checks.input_search"}):
        "ort runs the exact reference and the input search, which run ONNX Runtime sessions from ort",
    frozenset({"graphfix.report", "graphfix.render"}):
        "report.summary() renders with render.py, which reads report's status names",
}
CLI_MODULES = ("graphfix.cli", "graphfix.commandline", "graphfix.fixtures.__main__")
# (module, source, name) private imports across packages kept for now, with why (as KNOWN_CYCLES)
KNOWN_PRIVATE = {("graphfix.passes._precision_rules", "graphfix.checks.ort", "_quiet_polygraphy"):
                 "checks/ort.py is being restructured on another branch",
                 ("graphfix.checks.tensorrt.trt", "graphfix.checks.ort", "_quiet_polygraphy"): "the same",
                 ("graphfix.checks.input_search", "graphfix.checks.ort", "_session"): "the same"}


def _modules() -> Dict[str, Tuple[str, bool]]:
    """module name -> (file, is a package __init__)."""
    out = {}
    for package, folder in PACKAGES.items():
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "exported")]
            rel = os.path.relpath(dirpath, folder)
            parts = [] if rel == "." else rel.split(os.sep)
            if package == "graphfix" and parts and parts[0] in ("passes", "fixtures"):
                continue   # symlinks or leftovers: those packages come from their own folders
            for f in filenames:
                if f.endswith(".py"):
                    name = ".".join([package] + parts + ([] if f == "__init__.py" else [f[:-3]]))
                    out[name] = (os.path.join(dirpath, f), f == "__init__.py")
    return out


MODULES = _modules()


def _absolute(module: str, is_package: bool, level: int, target) -> str:
    if level == 0:
        return target
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _imports(module: str) -> List[Tuple[str, List[str], int]]:
    """(imported module, names taken from it, line) for every import, functions included, except
    those under `if TYPE_CHECKING:`."""
    path, is_package = MODULES[module]
    tree = ast.parse(open(path).read(), path)
    found = []

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
                continue
            if isinstance(node, ast.Import):
                found.extend((a.name, [], node.lineno) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                found.append((_absolute(module, is_package, node.level, node.module),
                              [a.name for a in node.names], node.lineno))
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt) or isinstance(child, ast.excepthandler):
                    visit([child])
    visit(tree.body)
    return found


def _graph() -> Dict[str, Set[str]]:
    edges: Dict[str, Set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, names, _ in _imports(module):
            hit = {target} if target in MODULES else set()
            hit |= {f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES}
            for t in set(hit):   # importing a.b.c runs a.b's __init__ first (unless a.b is m's own parent)
                parts = t.split(".")
                hit |= {".".join(parts[:i]) for i in range(1, len(parts))
                        if ".".join(parts[:i]) in MODULES and not module.startswith(".".join(parts[:i]) + ".")}
            edges[module] |= hit - {module}
    return edges


def _cycles(edges: Dict[str, Set[str]]) -> List[Set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out: List[Set[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(component)
    return out


def test_the_graph_sees_the_modules_and_their_imports():
    edges = _graph()
    assert len(MODULES) > 100 and "graphfix.passes.fold_constants" in MODULES
    assert "graphfix.remedies" in edges["graphfix.diagnosis.checker"]        # a module-level import
    assert "graphfix.checks.tensorrt.trt" in edges["graphfix.commandline.trt"]         # one inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycles():
    cycles = [frozenset(c) for c in _cycles(_graph())]
    new = [sorted(c) for c in cycles if c not in KNOWN_CYCLES]
    assert not new, f"import cycles: {new}"
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in cycles]
    assert not gone, f"no longer cycles, remove them from KNOWN_CYCLES: {gone}"


def test_argparse_only_in_the_command_line():
    for module in MODULES:
        if module.startswith(CLI_MODULES):
            continue
        for target, _, line in _imports(module):
            assert target != "argparse", f"{module}:{line} imports argparse (command line code belongs in " \
                                         "graphfix/cli.py or graphfix/commandline/)"


def test_no_private_names_imported():
    """`from x import _name` only from a private module (passes/_type_islands.py for int64_to_int32):
    `check` uses what the passes make public, the fix loop what the pipeline does, and so on."""
    seen = set()
    for module in MODULES:
        for target, names, line in _imports(module):
            if not target.startswith("graphfix") or target.rsplit(".", 1)[-1].startswith("_"):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                known = {(module, target, n) for n in private} & set(KNOWN_PRIVATE)
                seen |= known
                assert len(known) == len(private), f"{module}:{line} imports private {private} from {target}"
    assert seen == set(KNOWN_PRIVATE), f"no longer imported, remove from KNOWN_PRIVATE: {set(KNOWN_PRIVATE) - seen}"
