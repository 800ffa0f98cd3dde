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


def _core_modules() -> list[str]:
    """Every module of the core packages and the CLI, discovered (not listed by hand)."""
    import pkgutil

    import nucleoseg

    root = nucleoseg.__path__[0]
    core = ("models", "io", "inference", "training", "evaluation", "classify")
    found = ["nucleoseg.cli", "nucleoseg.backend"]
    for info in pkgutil.walk_packages([root], prefix="nucleoseg."):
        if info.name.split(".")[1] in core or info.name.startswith("nucleoseg.cli_"):
            found.append(info.name)
    return sorted(found)


def test_core_imports_with_qt_and_napari_blocked():
    modules = _core_modules()
    assert len(modules) > 30 and "nucleoseg.classify.classifier" in modules
    assert "nucleoseg.cli_segment" in modules
    code = BLOCK.format(blocked="{'qtpy', 'napari', 'magicgui', 'PyQt5', 'PyQt6', 'PySide2', "
                                "'PySide6'}") + "".join(f"import {m}\n" for m in modules) \
        + "print('ok')\n"
    res = _run(code)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ok" in res.stdout


def test_package_import_is_light():
    res = _run("import sys, nucleoseg, nucleoseg.io, nucleoseg.models, nucleoseg.inference.tiling;"
               "print(sorted(m for m in ('tensorflow', 'keras', 'qtpy', 'napari') "
               "if m in sys.modules))")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
