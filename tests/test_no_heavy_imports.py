"""graphfix imports, and runs its CPU pipeline, with tensorrt hidden; nothing heavy loads at import."""
import subprocess
import sys

HIDE_TRT = """
import sys
class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorrt" or name.startswith("tensorrt."):
            raise ImportError("tensorrt hidden by the test")
        return None
sys.meta_path.insert(0, _Hide())
"""


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HIDE_TRT + code], capture_output=True, text=True, timeout=300)


def test_import_graphfix_loads_neither_tensorrt_nor_onnxruntime():
    proc = run("import graphfix, graphfix.cli, graphfix.passes, graphfix.pipeline\n"
               "print(sorted(m for m in ('tensorrt', 'onnxruntime', 'polygraphy') if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_cpu_pipeline_runs_with_tensorrt_hidden():
    proc = run("import graphfix\n"
               "from graphfix.fixtures import build\n"
               "fixed, report = graphfix.fix(build('example_encoder_block'), trt='8.6', check='ort')\n"
               "assert report.ok, report.summary()\n"
               "assert 'tensorrt' not in sys.modules\n"
               "print('ok', report.changed)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("ok")
