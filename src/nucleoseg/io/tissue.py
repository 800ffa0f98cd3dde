"""Where the tissue is on a slide: a coarse mask from a low pyramid level, so background
blocks are skipped."""

from __future__ import annotations

import math

import numpy as np

from .wsi import Slide


def tissue_mask(slide: Slide, max_side: int = 2048) -> tuple[np.ndarray, float]:
    """A coarse tissue mask from a low pyramid level.

    Tissue is where colour saturation exceeds ``min(Otsu, 0.1)`` or the pixel is darker than
    200 (white glass background is bright and grey), except black scanner fill (every
    channel at most 15); the mask is dilated by two pixels.
    Returns ``(mask, downsample)``: mask pixel ``(i, j)`` covers level-0 pixels
    ``[i * d, (i + 1) * d)``.
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    level = len(slide.levels) - 1
    for k in range(len(slide.levels)):
        if max(slide.level_shape(k)) <= max_side:
            level = k
            break
    h, w = slide.level_shape(level)
    step = max(1, math.ceil(max(h, w) / max_side))
    rgb = _strided(slide, level, step)
    d = slide.downsample(level) * step
    rgbf = rgb.astype(np.float32)
    mx, mn = rgbf.max(-1), rgbf.min(-1)
    sat = (mx - mn) / np.maximum(mx, 1)
    try:
        thr = min(float(threshold_otsu(sat)), 0.1)
    except ValueError:
        thr = 0.1
    mask = ((sat > thr) | (rgbf.mean(-1) < 200)) & (mx > 15)
    mask = ndi.binary_dilation(mask, iterations=2)
    return mask, d


def _strided(slide: Slide, level: int, step: int) -> np.ndarray:
    """Every ``step``-th pixel of a level, read in row bands to bound memory."""
    h, w = slide.level_shape(level)
    band = max(step, (4096 // step) * step)
    parts = []
    for r in range(0, h, band):
        parts.append(slide.read(level, (r, min(r + band, h)), (0, w))[::step, ::step])
    return np.concatenate(parts, axis=0)
