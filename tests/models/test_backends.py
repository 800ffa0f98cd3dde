"""The same .keras files on TensorFlow, JAX, PyTorch and OpenVINO: probabilities, labels,
fine-tuning, save/load.

Each backend runs in its own process (a process keeps the backend it imported Keras with);
the reference is Keras on TensorFlow (``NUCLEOSEG_ENGINE=keras``). ``scripts/install.sh
testing`` installs JAX and PyTorch's CPU build; OpenVINO is a dependency. Name others with
``NUCLEOSEG_TEST_BACKENDS`` (default ``jax,torch,openvino``); one not installed is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nucleoseg.backend import BackendError, choose, installed
from nucleoseg.models.weights import shipped_models

CHILD = Path(__file__).parents[1] / "backend_child.py"
OTHER = [b for b in os.environ.get("NUCLEOSEG_TEST_BACKENDS", "jax,torch,openvino").split(",")
         if b]
#: TensorFlow's probabilities file per test tile, computed by the first backend's test.
_REFERENCE: dict[str, Path] = {}
#: Backends that train (OpenVINO runs inference only).
TRAINING = [b for b in OTHER if b != "openvino"]


def _env(backend: str) -> dict[str, str]:
    """The environment of a process running ``backend`` (``openvino``: Keras on TensorFlow,
    inference through OpenVINO)."""
    return {**os.environ, "KERAS_BACKEND": "tensorflow" if backend == "openvino" else backend,
            "NUCLEOSEG_ENGINE": "openvino" if backend == "openvino" else "keras",
            "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _child(backend: str, *args: str) -> None:
    env = _env(backend)
    res = subprocess.run([sys.executable, str(CHILD), *map(str, args)], env=env,
                         capture_output=True, text=True, timeout=2400)
    assert res.returncode == 0, res.stderr[-3000:]


def _need(backend: str) -> None:
    if not installed(backend):
        pytest.skip(f"{backend} is not installed (pip install \"napari-nucleoseg[{backend}]\")")


def test_choose_backend_and_device(monkeypatch):
    monkeypatch.delenv("NUCLEOSEG_BACKEND", raising=False)
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    c = choose("auto", "cpu")
    cpu_engine = "openvino" if installed("openvino") else "tensorflow"
    assert (c.backend, c.device, c.keras_backend) == (cpu_engine, "cpu", "tensorflow")
    assert choose("tensorflow", "cpu").engine == "keras"
    ov = choose("openvino", "cpu")
    assert (ov.keras_backend, ov.engine) == ("tensorflow", "openvino")
    with pytest.raises(BackendError, match="CPU only"):
        choose("openvino", "gpu")
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")  # Keras's default: still auto
    assert choose(None, "cpu").backend == cpu_engine
    monkeypatch.setenv("NUCLEOSEG_BACKEND", "jax")
    if installed("jax"):
        assert choose(None, "cpu").backend == "jax"
    with pytest.raises(BackendError, match="unknown backend"):
        choose("mxnet")
    with pytest.raises(BackendError, match="sees no GPU|no installed backend"):
        choose("tensorflow", "gpu")  # this machine (and CI) has no GPU


def test_jax_keeps_its_compiled_programs_in_the_project_cache(tmp_path, monkeypatch):
    from nucleoseg.backend import jax_cache_settings

    monkeypatch.setenv("NUCLEOSEG_CACHE", str(tmp_path))
    assert jax_cache_settings({}) == {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax"),
                                      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    mine = {"JAX_COMPILATION_CACHE_DIR": "/elsewhere"}  # the user's own setting wins
    assert "JAX_COMPILATION_CACHE_DIR" not in jax_cache_settings(mine)
    assert jax_cache_settings({"NUCLEOSEG_JAX_CACHE": "0"}) == {}


@pytest.mark.parametrize("present, picked", [
    ({"tensorflow", "openvino", "jax"}, "openvino"),
    ({"tensorflow", "jax"}, "tensorflow"),
    ({"openvino", "jax", "torch"}, "jax"),  # OpenVINO converts through TensorFlow
    ({"torch"}, "torch"),
])
def test_auto_on_a_cpu_picks_an_installed_backend(monkeypatch, present, picked):
    """Without a GPU, ``auto`` never names a backend that is missing (a machine without
    TensorFlow, like the GPU image's, then failed at ``import keras``)."""
    import nucleoseg.backend as backend

    monkeypatch.delenv("NUCLEOSEG_BACKEND", raising=False)
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setattr(backend, "installed", lambda name: name in present)
    assert choose("auto", "cpu").backend == picked
    monkeypatch.setattr(backend, "installed", lambda name: False)
    with pytest.raises(BackendError, match="no Keras backend is installed"):
        choose("auto", "cpu")


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("backend", OTHER)
def test_shipped_models_agree_across_backends(backend, tmp_path, test_tile):
    """Every shipped model's float32 probabilities on a MoNuSeg test tile within mean
    |delta| <= 1e-4 of TensorFlow's; labels Dice >= 0.999."""
    _need(backend)
    from PIL import Image

    name, image, _ = test_tile
    png = tmp_path / "tile.png"
    Image.fromarray(image).save(png)
    models = shipped_models()
    if name not in _REFERENCE:  # TensorFlow's run, once for every backend compared with it
        _child("tensorflow", "probs", tmp_path / "tensorflow.npz", png, *models)
        _REFERENCE[name] = tmp_path / "tensorflow.npz"
    _child(backend, "probs", tmp_path / f"{backend}.npz", png, *models)
    ref, other = np.load(_REFERENCE[name]), np.load(tmp_path / f"{backend}.npz")
    assert str(other["backend"]) == backend
    for m in models:
        delta = np.abs(ref[f"{m}_probs"] - other[f"{m}_probs"])
        assert delta.mean() <= 1e-4, (m, float(delta.mean()))
        a, b = ref[f"{m}_labels"] > 0, other[f"{m}_labels"] > 0
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.999, m


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("backend", TRAINING)
def test_finetune_and_cross_backend_save_load(backend, tmp_path, test_tile, tiny_unet_path):
    """A few fine-tune steps under the other backend lower the loss; the model it saves
    loads and segments under TensorFlow, and a TensorFlow-saved model under it."""
    _need(backend)
    from PIL import Image

    _, image, labels = test_tile
    png = tmp_path / "crop.png"
    Image.fromarray(image[:256, :256]).save(png)
    np.save(tmp_path / "labels.npy", labels[:256, :256])
    _child(backend, "finetune", tmp_path / "ft.json", png, tmp_path / "labels.npy",
           tiny_unet_path, tmp_path / "models")
    ft = json.loads((tmp_path / "ft.json").read_text())
    assert ft["backend"] == backend and ft["losses"][-1] < ft["losses"][0]
    _child("tensorflow", "load", tmp_path / "tf_load.json", ft["path"], png)
    _child(backend, "load", tmp_path / "other_load.json", tiny_unet_path, png)
    for f in ("tf_load.json", "other_load.json"):
        assert json.loads((tmp_path / f).read_text())["nuclei"] >= 0
    assert json.loads((tmp_path / "tf_load.json").read_text())["backend"] == "tensorflow"


@pytest.mark.parametrize("backend", OTHER)
def test_cli_backend_flag_gives_the_tensorflow_labels(backend, tmp_path, threshold_model_path):
    """`nucleoseg segment --backend X` (a fresh process each) gives TensorFlow's labels, for
    an image in memory and block-wise through the whole-slide path."""
    _need(backend)
    import tifffile

    from _helpers import synthetic_nuclei
    from nucleoseg.io.labels_store import read_labels_store

    img, _ = synthetic_nuclei((300, 260), n=20)
    tifffile.imwrite(tmp_path / "x.tif", img)
    outs = {}
    for b in ("tensorflow", backend):
        for kind, extra in (("npy", []), ("zarr", ["--block", "96", "--tile", "128"])):
            outs[b, kind] = tmp_path / f"{b}.{kind}"
            res = subprocess.run(
                [sys.executable, "-m", "nucleoseg.cli", "segment", str(tmp_path / "x.tif"),
                 "-o", str(outs[b, kind]), "--model", str(threshold_model_path), "--backend",
                 b, "--device", "cpu", "--precision", "float32", "-q", *extra],
                env=_env(b), capture_output=True, text=True, timeout=600)
            assert res.returncode == 0, res.stderr[-2000:]
    a, b = np.load(outs["tensorflow", "npy"]), np.load(outs[backend, "npy"])
    assert a.max() > 5 and (a > 0).sum() == (b > 0).sum() and ((a > 0) == (b > 0)).all()
    blocks = [np.asarray(read_labels_store(outs[k, "zarr"])["levels"][0])
              for k in ("tensorflow", backend)]
    assert blocks[0].max() > 5 and np.array_equal(blocks[0] > 0, blocks[1] > 0)
    if backend == "jax":  # its runs kept their compiled programs (backend.jax_cache_settings)
        from nucleoseg.models.precision import cache_root

        assert len(list((cache_root() / "jax").glob("*-cache"))) >= 3
