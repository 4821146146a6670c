"""Guards for the package layout: passes/ is graphfix.passes, once, and never a top-level 'passes'."""
import os
import subprocess
import sys

import graphfix
import graphfix.fixtures
import graphfix.passes
from graphfix.registry import PIPELINE_ORDER, registered

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _expected_dir(top_level: str) -> set:
    # editable install: the repo's own folder; regular install: graphfix/<sub> in site-packages
    return {os.path.join(ROOT, top_level), os.path.join(os.path.dirname(graphfix.__file__), top_level)}


def test_passes_subpackage_maps_to_the_passes_directory():
    assert os.path.dirname(graphfix.passes.__file__) in _expected_dir("passes")
    assert os.path.dirname(graphfix.fixtures.__file__) in _expected_dir("fixtures")
    assert os.path.exists(os.path.join(os.path.dirname(graphfix.passes.__file__), "normalize.py"))


def test_importing_passes_as_a_top_level_package_fails_loudly():
    code = "import sys; sys.path.insert(0, %r); import passes" % ROOT
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "import graphfix.passes instead" in proc.stderr


def test_every_registered_pass_is_in_the_written_order_once():
    reg = registered()
    assert set(reg) <= set(PIPELINE_ORDER)
    assert len(PIPELINE_ORDER) == len(set(PIPELINE_ORDER))
    for name, cls in reg.items():
        assert cls.info.name == name
        assert cls.__module__ == "graphfix.passes." + name.replace("-", "_")


def test_installed_package_resolves_from_a_neutral_directory(tmp_path):
    code = "import graphfix.passes, os; print(os.path.dirname(graphfix.passes.__file__))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in _expected_dir("passes")
