"""graphfix's built-in passes, one module per pass (installed as ``graphfix.passes``).

Importing this package imports every module in it, in sorted order, which registers the passes.
Never import it as a top-level ``passes``: that would make a second registry.
"""
import importlib
import pkgutil

if __name__ != "graphfix.passes":  # pragma: no cover - a layout error, guarded by tests/test_layout.py
    raise ImportError(f"graphfix passes imported as '{__name__}'; import graphfix.passes instead")

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")
