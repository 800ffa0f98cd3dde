"""GPU memory sizing and the out-of-memory retries (the retries run on this CPU with a model
that raises TensorFlow's real out-of-memory error above a pixel budget, as a small GPU
would)."""

from __future__ import annotations

import numpy as np
import pytest

from _helpers import synthetic_nuclei
from nucleoseg.inference.device_memory import (
    MAX_BATCH,
    activation_bytes_per_pixel,
    gpu_tiling,
    is_out_of_memory,
)
from nucleoseg.inference.predict import predict_batch, run
from nucleoseg.inference.segment import Segmenter


def test_out_of_memory_errors_are_recognised():
    import tensorflow as tf

    assert is_out_of_memory(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating"))
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to "
                                         "allocate 17179869184 bytes"))  # XLA's wording
    assert not is_out_of_memory(ValueError("tile must be a multiple of 16"))
    torch = pytest.importorskip("torch")
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))


def test_activation_bound_and_gpu_tiling(threshold_model_path):
    from nucleoseg.models.weights import load_model

    model, _ = load_model(str(threshold_model_path))
    # one 2-channel convolution: 2 float32 values per pixel
    assert activation_bytes_per_pixel(model) == 8
    assert activation_bytes_per_pixel(model, "bfloat16") == 4
    # 0.9 * 1 GB / (8 B * 1024^2 px) = 107 tiles: capped
    assert gpu_tiling(model, 1024, 4, 10**9) == (1024, MAX_BATCH)
    assert gpu_tiling(model, 1024, 4, 3 * 8 * 1024**2) == (1024, 2)
    side, batch = gpu_tiling(model, 1024, 4, 4 * 10**6)  # not even one tile fits
    assert batch == 1 and side % 4 == 0 and 8 * side**2 <= 0.9 * 4 * 10**6


def _small_device(inner, budget_px: int, calls: list):
    import tensorflow as tf

    def model(x):
        calls.append(x.shape)
        if x.shape[0] * x.shape[1] * x.shape[2] > budget_px:
            raise tf.errors.ResourceExhaustedError(
                None, None, f"OOM when allocating tensor with shape {list(x.shape)}")
        return predict_batch(inner, x)
    return model


def test_out_of_memory_retries_with_smaller_batches_then_tiles(threshold_model_path):
    """Batch 2 of 512-px tiles does not fit; the run halves the batch, then the tile, and
    gives the labels of a run that fitted, keeping the smaller settings."""
    from nucleoseg.models.weights import load_model

    image, _ = synthetic_nuclei((600, 600), n=40)
    inner, card = load_model(str(threshold_model_path))
    seg = Segmenter.from_card(inner, card, tile=512, batch_size=2, halo=16)
    expected = run(seg.segment(image))
    calls: list = []
    seg.model = _small_device(inner, 300 * 300, calls)
    with pytest.warns(RuntimeWarning) as caught:
        labels = run(seg.segment(image))
    assert [str(w.message) for w in caught] == [
        "out of memory: retrying with 512-px tiles, batch 1",
        "out of memory: retrying with 256-px tiles, batch 1"]
    assert np.array_equal(labels, expected) and labels.max() > 10
    assert (seg.tile, seg.batch_size) == (256, 1)
    assert calls[0][0] == 2 and calls[1][0] == 1 and calls[-1][1] <= 300


def test_out_of_memory_at_the_smallest_tile_is_one_clear_error(threshold_model_path):
    from nucleoseg.models.weights import load_model

    image, _ = synthetic_nuclei((300, 300), n=5)
    inner, card = load_model(str(threshold_model_path))
    seg = Segmenter.from_card(inner, card, tile=256, batch_size=1, halo=16)
    seg.model = _small_device(inner, 100, [])
    with pytest.raises(MemoryError, match="out of memory even with 256-px tiles"):
        run(seg.segment(image))
