"""Helpers shared by the test folders (imported as ``_helpers``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _data_root() -> Path | None:
    from nucleoseg.io.monuseg import data_root

    root = data_root()
    return root if (root / "monuseg" / "test" / "images").is_dir() else None


DATA_ROOT = _data_root()
needs_data = pytest.mark.skipif(
    DATA_ROOT is None,
    reason="MoNuSeg data not found: set NUCLEOSEG_DATA or place it at ../shared/data",
)



def synthetic_nuclei(shape=(96, 96), n=6, seed=0):
    """An RGB image with dark purple discs on pink and its instance labels."""
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    img = np.empty(shape + (3,), np.uint8)
    img[:] = (230, 170, 200)
    labels = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        r, c = rng.integers(10, shape[0] - 10), rng.integers(10, shape[1] - 10)
        rr, cc = disk((r, c), rng.integers(4, 8), shape=shape)
        free = labels[rr, cc] == 0
        labels[rr[free], cc[free]] = k
        img[rr[free], cc[free]] = (90, 50, 140)
    return img, labels


def make_tiny_model(folder: Path) -> Path:
    """Save a tiny untrained UNet (depth 2, 4 filters) with a model card into ``folder``."""
    import keras

    from nucleoseg.models.registry import build
    from nucleoseg.models.weights import save_model

    keras.utils.set_random_seed(0)
    model = build("unet", depth=2, base_filters=4, dropout=0.0)
    card = {"architecture": "unet", "config": {"depth": 2, "base_filters": 4},
            "inference": {"stride": 4, "tile": 128, "halo": 16, "batch_size": 2},
            "postprocess": {"threshold": 0.5, "interior_threshold": 0.5, "min_size": 4,
                            "min_marker_size": 2}}
    return save_model(model, folder, "tiny", card)


def make_threshold_model(folder: Path, offset: int = 0) -> Path:
    """A real Keras model with fixed weights that finds dark discs: channel 0 is a sigmoid of
    the pixel's darkness, channel 1 of the 5x5 mean's (an eroded interior). Gives
    meaningful, nucleus-sized objects (e.g. on :func:`synthetic_nuclei`) without training.
    ``offset`` (0 to 2) reads channel 0's pixel that many rows and columns down-right, so
    the model's flips differ."""
    import keras

    from nucleoseg.models.weights import save_model

    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(2, 5, padding="same", activation="sigmoid", name="dark")
    model = keras.Model(inputs, conv(inputs))
    kernel = np.zeros((5, 5, 3, 2), np.float32)
    kernel[2 + offset, 2 + offset, :, 0] = -20.0 / 3  # -20 * mean of one pixel's channels
    kernel[:, :, :, 1] = -20.0 / 75  # -20 * mean of the 5x5 window
    conv.set_weights([kernel, np.array([20 * 0.575, 20 * 0.45], np.float32)])
    card = {"architecture": "threshold", "config": {},
            "inference": {"stride": 4, "tile": 128, "halo": 16, "batch_size": 2},
            "postprocess": {"threshold": 0.5, "interior_threshold": 0.5, "min_size": 4,
                            "min_marker_size": 2}}
    return save_model(model, folder, "threshold", card)


def typed_pair():
    """Two true nuclei (ids 1, 2; both "tumour") and their two predictions (ids 4, 9; classed
    "tumour" and "immune"), each 1 px off: F_d 1, accuracy 0.5, F_tumour 0.5, F_immune 0."""
    truth = np.zeros((60, 60), np.int32)
    truth[5:15, 5:15] = 1
    truth[30:40, 30:40] = 2
    pred = np.zeros_like(truth)
    pred[5:15, 6:16] = 4
    pred[31:41, 30:40] = 9
    return truth, {1: "tumour", 2: "tumour"}, pred, {4: "tumour", 9: "immune"}
