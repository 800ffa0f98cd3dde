"""Post-processing of a large probability map in horizontal strips on several threads.

Every step of :func:`~nucleoseg.inference.postprocess.probabilities_to_labels` is local to
one piece of the hole-filled nucleus mask (its seeds, markers, basins and flood), except
the Gaussian smoothing of the interior logit, which reads ``radius`` rows beyond it. So a
strip computed with some rows of context above and below (its *window*) labels exactly as
the whole image does every piece that stays clear of the window's cut rows by more than
that radius. Each strip keeps the nuclei whose first pixel lies in its own rows; where a
piece reaching into those rows comes too close to a cut, the strip is computed again with
twice the context. Ids are the raster order of each nucleus's first pixel, as in one pass,
so the labels are identical (tested). Most of the work (scipy, scikit-image, numpy) runs
without Python's lock, so the strips use several cores.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..io.labels import drop_small_and_relabel, first_pixels
from ..models.card import PostprocessParams
from .postprocess import object_labels

#: Strips are at least this many rows (their context would cost more than they save).
MIN_STRIP_ROWS = 1024
#: Rows of context above and below a strip, doubled where a piece needs more.
CONTEXT_ROWS = 128


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def strip_count(rows: int, workers: int | None = None) -> int:
    """Strips for a map of ``rows`` rows: one per worker (default: every core), each at
    least :data:`MIN_STRIP_ROWS` rows."""
    workers = available_cores() if workers is None else max(int(workers), 1)
    return max(1, min(workers, rows // MIN_STRIP_ROWS))


def labels_by_strips(probs: np.ndarray, params: PostprocessParams,
                     workers: int | None = None, context: int = CONTEXT_ROWS) -> np.ndarray:
    """``probabilities_to_labels(probs, params, workers=1)``, computed strip by strip on
    ``workers`` threads.

    Parameters
    ----------
    probs : numpy.ndarray
        ``(H, W, C)`` float32 probabilities, ``C >= 2``.
    params : PostprocessParams
        Thresholds and size limits.
    workers : int, optional
        Threads (default: every core); see :func:`strip_count`.
    context : int
        Rows of context first read above and below each strip.

    Returns
    -------
    numpy.ndarray
        ``(H, W) int32`` labels, numbered in raster order of each nucleus's first pixel.
    """
    rows, cols = probs.shape[:2]
    n = strip_count(rows, workers)
    cuts = np.linspace(0, rows, n + 1).round().astype(int)
    smooth = params.marker_dynamic > 0 and params.marker_sigma > 0
    # rows next to a cut that the window's smoothing sees differently (scipy's radius)
    band = max(int(4.0 * params.marker_sigma + 0.5) if smooth else 0, 1)

    def strip(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b = int(cuts[k]), int(cuts[k + 1])
        reach = context
        while True:
            top, bottom = max(a - reach, 0), min(b + reach, rows)
            labels, pieces = object_labels(probs[top:bottom], params)
            near_cut = np.zeros(int(pieces.max(initial=0)) + 1, bool)
            if top > 0:
                near_cut[pieces[:band]] = True
            if bottom < rows:
                near_cut[pieces[-band:]] = True
            near_cut[0] = False
            if (top == 0 and bottom == rows) or not near_cut[pieces[a - top:b - top]].any():
                break
            reach *= 2
        labels = drop_small_and_relabel(labels, params.min_size)
        key = first_pixels(labels) + top * cols  # windows span every column
        key[0] = -1
        return labels[a - top:b - top], key, (key >= a * cols) & (key < b * cols)

    with ThreadPoolExecutor(n) as pool:
        parts = list(pool.map(strip, range(n)))
        owned = np.sort(np.concatenate([key[own] for _, key, own in parts]))

        def place(part: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray | None:
            core, key, _ = part
            rank = np.searchsorted(owned, key).astype(np.int32)
            present = np.bincount(core.ravel(), minlength=key.size) > 0
            present[0] = False
            found = rank[present]
            if found.size and (found.max() >= owned.size
                               or not np.array_equal(owned[found], key[present])):
                return None  # a nucleus no strip owns: cannot happen by the argument above
            rank += 1
            rank[0] = 0
            return rank[core]

        placed = list(pool.map(place, parts))
    if any(p is None for p in placed):
        import warnings

        from .postprocess import probabilities_to_labels

        warnings.warn("post-processing by strips disagreed at a seam; labelled in one pass "
                      "instead", RuntimeWarning, stacklevel=2)
        return probabilities_to_labels(probs, params, workers=1)
    return np.concatenate(placed, axis=0)
