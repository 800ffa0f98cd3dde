"""napari tests run in their own pytest process, apart from the Keras tests.

TensorFlow and an OpenGL context from Mesa (llvmpipe under Xvfb, radeonsi on AMD GPUs)
cannot share a process: both carry LLVM and the first GL call segfaults. The plugin
therefore runs Keras in a child process (``nucleoseg._compute``), and these tests must not
import TensorFlow either: fixtures that need Keras build their models in a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BUILD = """
import sys
sys.path.insert(0, sys.argv[3])
import _helpers
print(getattr(_helpers, sys.argv[1])(__import__("pathlib").Path(sys.argv[2])))
"""


def _build_in_subprocess(maker: str, folder: Path) -> Path:
    """Run ``_helpers.<maker>(folder)`` in a subprocess (Keras stays out of this process)."""
    res = subprocess.run([sys.executable, "-c", BUILD, maker, str(folder),
                          str(Path(__file__).parents[1])], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return Path(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def tiny_unet_path(tmp_path_factory) -> Path:
    """A tiny untrained UNet with a card, built in a subprocess (no TensorFlow here)."""
    return _build_in_subprocess("make_tiny_model", tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def threshold_model_path(tmp_path_factory) -> Path:
    """The fixed-weight dark-disc model of ``_helpers``, built in a subprocess."""
    return _build_in_subprocess("make_threshold_model",
                                tmp_path_factory.mktemp("threshold_model"))


@pytest.fixture(autouse=True)
def _no_tensorflow_in_the_gui_process():
    yield
    assert "tensorflow" not in sys.modules, "TensorFlow was imported in the napari process"
