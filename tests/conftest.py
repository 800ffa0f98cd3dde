"""Shared fixtures: isolated Keras/XDG/user-model folders, data paths, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _helpers import DATA_ROOT, needs_data, synthetic_nuclei  # noqa: F401

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """Keras cache, XDG folders and the user model folder point at temporary folders.

    The process environment is put back as it was after each test: a dask Nanny sets
    ``OMP_NUM_THREADS=1`` and others in its parent ("pre-spawn-environ"), and the backend
    choice sets ``KERAS_BACKEND``; neither may reach later tests or their child processes.
    """
    saved = dict(os.environ)
    base = tmp_path_factory.mktemp("home")
    for var in ("KERAS_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(base / var.lower()))
    monkeypatch.setenv("NUCLEOSEG_USER_MODELS", str(base / "user_models"))
    monkeypatch.delenv("NUCLEOSEG_WRITE_SHIPPED", raising=False)
    yield
    for name in set(os.environ) - set(saved):
        del os.environ[name]
    for name, value in saved.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


@pytest.fixture(scope="session")
def data_root() -> Path:
    if DATA_ROOT is None:
        pytest.skip("MoNuSeg data not found: set NUCLEOSEG_DATA or place it at ../shared/data")
    return DATA_ROOT


@pytest.fixture(scope="session")
def test_tile(data_root):
    """The first official MoNuSeg test tile: (name, image, labels)."""
    from nucleoseg.io.monuseg import list_tiles

    tile = list_tiles("test", data_root)[0]
    return tile.name, tile.image(), tile.labels()


@pytest.fixture(scope="session")
def tiny_unet_path(tmp_path_factory) -> Path:
    """A tiny UNet saved with a model card (untrained): fast real Keras for pipeline tests."""
    from _helpers import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models"))




@pytest.fixture(scope="session")
def threshold_model_path(tmp_path_factory) -> Path:
    """A fixed-weight Keras model that segments the dark discs of ``synthetic_nuclei``."""
    from _helpers import make_threshold_model

    return make_threshold_model(tmp_path_factory.mktemp("threshold_model"))
