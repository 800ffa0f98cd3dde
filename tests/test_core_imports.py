"""The core never imports Qt or napari, and importing nucleoseg imports no TensorFlow."""

import subprocess
import sys

BLOCK = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {blocked}:
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


def test_core_imports_with_qt_and_napari_blocked():
    code = BLOCK.format(blocked="{'qtpy', 'napari', 'magicgui', 'PyQt5', 'PyQt6', 'PySide2', "
                                "'PySide6'}") + """
import nucleoseg.models.registry, nucleoseg.models.weights, nucleoseg.models.unet
import nucleoseg.models.segnet, nucleoseg.models.deeplab
import nucleoseg.io.images, nucleoseg.io.monuseg, nucleoseg.io.dsb2018, nucleoseg.io.labels
import nucleoseg.inference.tiling, nucleoseg.inference.predict, nucleoseg.inference.postprocess
import nucleoseg.inference.segment
import nucleoseg.training.data, nucleoseg.training.train, nucleoseg.training.recipe
import nucleoseg.evaluation.metrics, nucleoseg.evaluation.benchmark, nucleoseg.cli
print('ok')
"""
    res = _run(code)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ok" in res.stdout


def test_package_import_is_light():
    res = _run("import sys, nucleoseg, nucleoseg.io, nucleoseg.models, nucleoseg.inference.tiling;"
               "print(sorted(m for m in ('tensorflow', 'keras', 'qtpy', 'napari') "
               "if m in sys.modules))")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
