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

collect_ignore: list[str] = []

BUILD_TINY = """
import sys
import keras
from nucleoseg.models.registry import build
from nucleoseg.models.weights import save_model
keras.utils.set_random_seed(0)
model = build("unet", depth=2, base_filters=4, dropout=0.0)
card = {"architecture": "unet", "config": {"depth": 2, "base_filters": 4},
        "inference": {"stride": 4, "tile": 128, "halo": 16, "batch_size": 2},
        "postprocess": {"threshold": 0.5, "interior_threshold": 0.5, "min_size": 4,
                        "min_marker_size": 2}}
print(save_model(model, sys.argv[1], "tiny", card))
"""


@pytest.fixture(scope="session")
def tiny_unet_path(tmp_path_factory) -> Path:
    """A tiny untrained UNet with a card, built in a subprocess (no TensorFlow here)."""
    folder = tmp_path_factory.mktemp("models")
    res = subprocess.run([sys.executable, "-c", BUILD_TINY, str(folder)], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return Path(res.stdout.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def _no_tensorflow_in_the_gui_process():
    yield
    assert "tensorflow" not in sys.modules, "TensorFlow was imported in the napari process"
