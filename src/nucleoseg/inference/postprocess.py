"""Probability maps to instance labels, run once on the stitched map of a whole image.

Channel 0 is the nucleus probability, channel 1 the interior probability (nuclei eroded by
two pixels, so touching nuclei have separate interiors). Interiors above
``interior_threshold`` become watershed markers, flooded over ``-interior`` inside the
nucleus mask (``nucleus >= threshold``). Foreground pieces that got no marker keep their
own id; objects smaller than ``min_size`` pixels are dropped; holes are filled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class PostprocessParams:
    """Parameters of :func:`probabilities_to_labels` (stored in each model card)."""

    threshold: float = 0.5
    interior_threshold: float = 0.5
    min_size: int = 16
    min_marker_size: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


def probabilities_to_labels(
    probs: np.ndarray, params: PostprocessParams | None = None
) -> np.ndarray:
    """Turn ``(H, W, 2)`` (or ``(H, W, 1)`` / ``(H, W)``) probabilities into instance labels.

    Parameters
    ----------
    probs : numpy.ndarray
        ``float`` probabilities; channel 0 nucleus, channel 1 interior (optional: without it,
        markers come from the distance transform of the nucleus mask).
    params : PostprocessParams, optional
        Thresholds and size limits.

    Returns
    -------
    numpy.ndarray
        ``(H, W) int32``, 0 = background, ids 1..N consecutive.
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import relabel_sequential, watershed

    p = params or PostprocessParams()
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim == 2:
        probs = probs[..., None]
    fg = probs[..., 0] >= p.threshold
    fg = ndi.binary_fill_holes(fg)
    if probs.shape[-1] > 1:
        interior = probs[..., 1]
        seeds = (interior >= p.interior_threshold) & fg
        elevation = -interior
    else:
        dist = ndi.distance_transform_edt(fg)
        interior = dist
        seeds = dist >= 2.5
        elevation = -dist
    markers, n = ndi.label(seeds)
    if p.min_marker_size > 1 and n:
        sizes = np.bincount(markers.ravel())
        small = sizes < p.min_marker_size
        small[0] = False
        markers[small[markers]] = 0
    labels = watershed(elevation, markers, mask=fg)
    # foreground pieces without a marker become objects of their own
    rest, n_rest = ndi.label(fg & (labels == 0))
    if n_rest:
        labels = np.where(rest > 0, rest + labels.max(), labels)
    if p.min_size > 1:
        sizes = np.bincount(labels.ravel())
        small = sizes < p.min_size
        small[0] = False
        labels[small[labels]] = 0
    labels, _, _ = relabel_sequential(labels.astype(np.int32))
    return labels.astype(np.int32)

