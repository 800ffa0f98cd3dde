"""Tiled, batched inference as a generator of progress.

:func:`predict_tiled` yields ``(done, total, message)`` after every batch and *returns* the
stitched probability map (``StopIteration.value``); :func:`run` drives it to the end. The same
generator feeds the napari worker, the CLI progress bar and the tests.
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from ..io.images import to_rgb_uint8
from .tiling import FitGrid, TileGrid, fit_grid, pad_image

Progress = tuple[int, int, str]


class Cancelled(Exception):
    """Raised inside a generator when its ``should_stop`` callable returned True."""


def normalize(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``uint8`` RGB to the models' input: ``float32`` in [0, 1] (the same rule for every pixel
    of an image or slide, never per tile), written into ``out`` when given."""
    return np.multiply(image, np.float32(1.0 / 255.0), out=out, dtype=np.float32)


# per model, one Keras predict function per input shape (see predict_batch)
_PREDICT_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_KEEP_SHAPES = 8


class _QuietRetracing(logging.Filter):
    """Drop TensorFlow's "triggered tf.function retracing" advice: one trace per input shape
    is intended here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


_QUIET = _QuietRetracing()


def predict_batch(model: Any, x: np.ndarray) -> np.ndarray:
    """``model.predict_on_batch(x)`` (a Keras model) with a predict function traced for
    ``x.shape`` alone; returns a numpy array.

    Keras' TensorFlow predict function relaxes its input signature to partly unknown sizes
    once it has seen two shapes, and TensorFlow's dilated convolutions (DeepLabV3+'s ASPP)
    then fail for some sizes ("padded_shape ... is not divisible by block_shape"), e.g. a
    second image of another width. Keeping one function per shape keeps every trace static.
    """
    if not hasattr(model, "make_predict_function"):  # e.g. an OpenVINOModel
        return np.asarray(model(x))
    functions = _PREDICT_FUNCTIONS.setdefault(model, OrderedDict())
    key = tuple(x.shape)
    if key not in functions:
        logging.getLogger("tensorflow").addFilter(_QUIET)
        model.make_predict_function(force=True)
        functions[key] = model.predict_function
        while len(functions) > _KEEP_SHAPES:
            functions.popitem(last=False)
    functions.move_to_end(key)
    model.predict_function = functions[key]
    return np.asarray(model.predict_on_batch(x))


def traced_shapes(model: Any) -> list[tuple[int, ...]]:
    """Input shapes :func:`predict_batch` holds a traced predict function for (oldest
    first)."""
    if hasattr(model, "compiled_shapes"):
        return model.compiled_shapes
    return list(_PREDICT_FUNCTIONS.get(model, {}))


def _batch_predictor(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    if hasattr(model, "make_predict_function"):  # a Keras model
        return lambda x: predict_batch(model, x)
    if callable(model):
        return lambda x: np.asarray(model(x))
    raise TypeError("model must be a keras.Model or a callable on (B, H, W, 3) float32 arrays")


def predict_tiled(
    model: Any,
    image: np.ndarray,
    tile: int = 512,
    halo: int = 32,
    stride: int = 16,
    batch_size: int = 4,
    should_stop: Callable[[], bool] | None = None,
    flips: int = 1,
) -> Generator[Progress, None, np.ndarray]:
    """Run ``model`` over ``image`` tile by tile.

    Parameters
    ----------
    model : keras.Model or callable
        Maps ``(B, th, tw, 3) float32`` in [0, 1] to ``(B, th, tw, C)`` probabilities.
    image : numpy.ndarray
        ``(H, W, 3) uint8`` RGB (other layouts are converted by
        :func:`nucleoseg.io.images.to_rgb_uint8`).
    tile, halo, stride : int
        Largest tile side, context where tiles meet and the model's total stride (see
        :func:`nucleoseg.inference.tiling.fit_grid`).
    batch_size : int
        Tiles per forward pass; the last batch is padded to keep one compiled shape.
    should_stop : callable, optional
        Polled before each batch; when it returns True, :class:`Cancelled` is raised.
    flips : {1, 4}
        4: test-time augmentation, each tile's probabilities the mean of the model on the
        tile and its three flips (flipped back), in that order.

    Yields
    ------
    (done, total, message) : tuple of (int, int, str)
        Tiles finished, tiles in all, a short status line.

    Returns
    -------
    numpy.ndarray
        ``(H, W, C) float32`` probabilities.
    """
    image = to_rgb_uint8(image)
    grid = fit_grid(image.shape[:2], tile=tile, halo=halo, stride=stride)
    return (yield from predict_padded(model, pad_image(image, grid), grid, batch_size,
                                      should_stop, flips))


def predict_padded(
    model: Any,
    padded: np.ndarray,
    grid: TileGrid | FitGrid,
    batch_size: int = 4,
    should_stop: Callable[[], bool] | None = None,
    flips: int = 1,
) -> Generator[Progress, None, np.ndarray]:
    """:func:`predict_tiled` on an image already padded as ``grid.padding`` says.

    The whole-slide path reads each block with its real neighbouring pixels as context and
    calls this directly with a :class:`~nucleoseg.inference.tiling.TileGrid`, so blocks see
    the same tiles as one run over the whole slide on that grid.

    Returns
    -------
    numpy.ndarray
        ``(*grid.shape, C) float32`` probabilities of the unpadded area.
    """
    (top, bottom), (left, right) = grid.padding
    expected = (grid.shape[0] + top + bottom, grid.shape[1] + left + right)
    if padded.shape[:2] != expected:
        raise ValueError(f"padded image is {padded.shape[:2]}, the grid needs {expected}")
    if flips not in (1, len(FLIPS)):
        raise ValueError(f"flips must be 1 or {len(FLIPS)}, not {flips}")
    predict = _batch_predictor(model)
    if flips > 1:
        predict = _flip_averaged(predict)
    jobs = list(grid.tiles())
    total = len(jobs)
    out: np.ndarray | None = None
    th, tw = grid.tile
    batch = np.empty((max(1, min(batch_size, total)), th, tw, 3), np.float32)
    yield 0, total, f"{total} tile(s) of {th}x{tw}"
    for start in range(0, total, batch.shape[0]):
        if should_stop is not None and should_stop():
            raise Cancelled("stopped by request")
        chunk = jobs[start : start + batch.shape[0]]
        for k, (read, _) in enumerate(chunk):
            normalize(padded[read], out=batch[k])
        pred = predict(batch)
        if out is None:
            out = np.empty(grid.shape + (pred.shape[-1],), np.float32)
        _write_cores(out, pred, chunk, (top, left))
        done = start + len(chunk)
        yield done, total, f"tile {done}/{total}"
    assert out is not None
    return out


#: Test-time flips ``(rows, columns)``: none, left-right, up-down, both.
FLIPS = ((False, False), (False, True), (True, False), (True, True))


def _flip_averaged(predict: Callable[[np.ndarray], np.ndarray]
                   ) -> Callable[[np.ndarray], np.ndarray]:
    """``predict`` averaged over :data:`FLIPS` of each tile (the same tiles, so whole-slide
    blocks still compute every pixel as one run over the slide does)."""

    def averaged(batch: np.ndarray) -> np.ndarray:
        total = None
        for flip_r, flip_c in FLIPS:
            rows, cols = slice(None, None, -1 if flip_r else 1), \
                slice(None, None, -1 if flip_c else 1)
            pred = np.asarray(predict(np.ascontiguousarray(batch[:, rows, cols])))
            pred = pred[:, rows, cols]
            total = pred.astype(np.float32, copy=True) if total is None else total + pred
        return total / len(FLIPS)

    return averaged


def _write_cores(out: np.ndarray, pred: np.ndarray, chunk, origin: tuple[int, int]) -> None:
    """Copy each tile's core (``write`` in image coordinates; ``origin`` = top/left padding)
    from its prediction into ``out``."""
    for k, (read, write) in enumerate(chunk):
        keep = tuple(slice(w.start + o - r.start, w.stop + o - r.start)
                     for r, w, o in zip(read, write, origin, strict=True))
        out[write] = pred[(k, *keep)]


def run(
    gen: Generator[Progress, None, Any],
    progress: Callable[[int, int, str], None] | None = None,
):
    """Drive a progress generator to its end and return its value."""
    while True:
        try:
            done, total, msg = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total, msg)


def predict_whole(model: Any, image: np.ndarray, stride: int = 16) -> np.ndarray:
    """Reference path: the model on the whole image at once (reflect-padded to ``stride``).

    Used to check tiling; memory grows with the image, so use :func:`predict_tiled` for work.
    """
    image = to_rgb_uint8(image)
    grid = fit_grid(image.shape[:2], tile=10**9, halo=0, stride=stride)
    padded = normalize(pad_image(image, grid))[None]
    pred = _batch_predictor(model)(padded)[0]
    return pred[: image.shape[0], : image.shape[1]].astype(np.float32)
