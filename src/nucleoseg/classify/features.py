"""Per-nucleus features from an RGB image and its instance labels (numpy/scipy, with the
pixel loops compiled in :mod:`nucleoseg.classify.kernels`, bit for bit the same).

Every feature is a per-label reduction, so one pass over the pixels serves all nuclei:
~0.03 s for a 1000x1000 tile with ~900 nuclei on one core. Features:

- shape: area, equivalent diameter, major/minor axis and eccentricity (second moments),
  boundary pixel count and a compactness ratio;
- colour inside the nucleus: mean and standard deviation of R, G, B and of the hematoxylin
  and eosin optical densities (Ruifrok & Johnston colour deconvolution);
- context: the same mean colours and densities in a ring of :data:`RING` px around it;
- neighbourhood: nuclei within 25 and 50 px (centroid distance) and their mean area;
- tissue around it: hematoxylin and eosin density (mean and spread) and the nucleus cover in
  Gaussian windows of :data:`CONTEXT_SIGMAS` px around the centroid (computed at 1/4
  resolution).
"""

from __future__ import annotations

import numpy as np

from ..io.labels import compact_ids, inner_boundary
from ..io.stain import HED_FROM_RGB, OPTICAL_DENSITY

#: Width of the context ring around each nucleus (pixels).
RING = 6
#: Neighbourhood radii (pixels, 40x: ~6 and ~12 micrometres).
RADII = (25.0, 50.0)
#: Gaussian context windows (pixels at full resolution).
CONTEXT_SIGMAS = (16, 48)
_STEP = 4

_CHANNELS = ("r", "g", "b", "h", "e")
FEATURE_NAMES: tuple[str, ...] = (
    "area", "diameter", "major_axis", "minor_axis", "eccentricity", "boundary", "compactness",
    *[f"{c}_mean" for c in _CHANNELS], *[f"{c}_std" for c in _CHANNELS],
    *[f"ring_{c}_mean" for c in _CHANNELS], "ring_h_ratio",
    *[f"neighbours_{int(r)}" for r in RADII], "neighbour_area",
    *[f"context{s}_{k}" for s in CONTEXT_SIGMAS
      for k in ("h_mean", "h_std", "e_mean", "e_std", "cover")],
)



def nucleus_features(
    image: np.ndarray, labels: np.ndarray, ids: np.ndarray | None = None,
    with_centres: bool = False,
) -> tuple[np.ndarray, ...]:
    """Features of every nucleus.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, 3) uint8`` RGB.
    labels : numpy.ndarray
        ``(H, W)`` integer instance labels, 0 = background.
    ids : numpy.ndarray, optional
        The ids to describe (default: every id present).
    with_centres : bool
        Also return their ``(N, 2)`` row/col centroids (a third array).

    Returns
    -------
    ids : numpy.ndarray
        ``(N,)`` the described ids.
    features : numpy.ndarray
        ``(N, len(FEATURE_NAMES)) float32``, columns in :data:`FEATURE_NAMES` order.
    """
    from scipy.spatial import cKDTree

    from . import kernels as K  # loaded on first use, not when the classifier is imported

    labels = np.asarray(labels)
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative")
    labels, original = compact_ids(labels)  # a slide block's global ids
    lab = labels.astype(np.int32, copy=False)
    n = int(lab.max()) + 1 if lab.size else 1
    grown = K.dilate_square(np.ascontiguousarray(lab), RING)  # scipy's grey_dilation
    # every per-pixel step below runs only on nucleus and ring pixels
    near = np.flatnonzero(grown)
    own = lab.ravel()[near]
    flat = image.reshape(-1, 3)
    # one gather per channel: ~5x faster than gathering 3-byte rows
    rgb = np.stack([flat[:, k][near] for k in range(3)], axis=1)
    hed = OPTICAL_DENSITY[rgb] @ HED_FROM_RGB  # a table lookup instead of a log per pixel
    acc = np.zeros((n, K.SUM_COLUMNS))
    K.pixel_sums(near, own, grown.ravel(), inner_boundary(lab).ravel(), rgb, hed,
                 labels.shape[1], acc)
    area = acc[:, K.AREA]

    asked = None if ids is None else np.asarray(ids)
    ids = np.flatnonzero(area) if ids is None else _local_ids(asked, original)
    if ids.size == 0:
        empty = (ids if asked is None else asked), np.zeros((0, len(FEATURE_NAMES)), np.float32)
        return (*empty, np.zeros((0, 2))) if with_centres else empty
    safe = np.maximum(area, 1)
    cy = acc[:, K.ROWS] / safe
    cx = acc[:, K.COLS] / safe
    myy = acc[:, K.MOMENTS] / safe + 1 / 12
    mxx = acc[:, K.MOMENTS + 1] / safe + 1 / 12
    mxy = acc[:, K.MOMENTS + 2] / safe
    root = np.sqrt(((myy - mxx) / 2) ** 2 + mxy**2)
    l1, l2 = (myy + mxx) / 2 + root, np.maximum((myy + mxx) / 2 - root, 0)
    major, minor = 4 * np.sqrt(l1), 4 * np.sqrt(l2)
    ecc = np.sqrt(np.clip(1 - l2 / np.maximum(l1, 1e-9), 0, 1))
    boundary = acc[:, K.BOUNDARY]
    compact = 4 * np.pi * area / np.maximum(boundary, 1) ** 2

    ring_area = np.maximum(acc[:, K.RING_N], 1)
    means = [acc[:, K.SUM + ch] / safe for ch in range(5)]
    stds = [np.sqrt(np.maximum(acc[:, K.SQUARES + ch] / safe - m * m, 0))
            for ch, m in enumerate(means)]
    ring_means = [acc[:, K.RING_SUM + ch] / ring_area for ch in range(5)]
    h_ratio = means[3] / (np.abs(ring_means[3]) + 0.05)

    centres = np.stack([cy[ids], cx[ids]], axis=1)
    tree = cKDTree(centres)
    neigh = [np.asarray(tree.query_ball_point(centres, rad, return_length=True)) - 1
             for rad in RADII]
    # mean area over each nucleus and its neighbours within the largest radius
    a_ids = area[ids]
    pairs = tree.query_pairs(RADII[-1], output_type="ndarray")
    first, second = (pairs[:, 0], pairs[:, 1]) if pairs.size else (np.zeros(0, int),) * 2
    total = a_ids + np.bincount(first, a_ids[second], ids.size) + \
        np.bincount(second, a_ids[first], ids.size)
    neigh_area = total / (neigh[-1] + 1)

    context = _context(image, labels > 0, centres)
    cols_ = [area[ids], np.sqrt(4 * area[ids] / np.pi), major[ids], minor[ids], ecc[ids],
             boundary[ids], compact[ids],
             *[m[ids] for m in means], *[s[ids] for s in stds],
             *[m[ids] for m in ring_means], h_ratio[ids], *neigh, neigh_area, *context]
    described = ids if original is None else original[ids]
    out = described, np.stack(cols_, axis=1).astype(np.float32)
    return (*out, centres) if with_centres else out


def _local_ids(ids: np.ndarray, original: np.ndarray | None) -> np.ndarray:
    """``ids`` in the numbering of :func:`~nucleoseg.io.labels.compact_ids`."""
    if original is None:
        return ids
    local = np.searchsorted(original, ids)
    found = (local < original.size) & (original[np.minimum(local, original.size - 1)] == ids)
    if not found.all():
        raise ValueError(f"ids not in the labels: {ids[~found][:5].tolist()}")
    return local


def _context(image: np.ndarray, foreground: np.ndarray, centres: np.ndarray
             ) -> list[np.ndarray]:
    """Gaussian-window H/E density (mean, spread) and nucleus cover at each centre."""
    small = OPTICAL_DENSITY[image[::_STEP, ::_STEP]] @ HED_FROM_RGB[:, :2]
    fg = foreground[::_STEP, ::_STEP].astype(np.float32)
    rc = np.clip((centres / _STEP).astype(int), 0, np.array(fg.shape) - 1)
    r, c = rc[:, 0], rc[:, 1]
    out = []
    for sigma in CONTEXT_SIGMAS:
        s = sigma / _STEP
        for ch in range(2):
            v = np.ascontiguousarray(small[..., ch])
            m = _smooth_at(v, s, r, c)
            sd = np.sqrt(np.maximum(_smooth_at(v * v, s, r, c) - m * m, 0))
            out += [m, sd]
        out.append(_smooth_at(fg, s, r, c))
    return out


def _smooth_at(values: np.ndarray, sigma: float, rows: np.ndarray, cols: np.ndarray
               ) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(values, sigma)[rows, cols]`` for float32 ``values``:
    the first (row-wise) pass over the whole map as scipy computes it
    (:func:`~nucleoseg.classify.kernels.smooth_rows`), the second only at the points asked
    for (half the work)."""
    from . import kernels as K

    radius = int(4.0 * sigma + 0.5)  # scipy's default truncation
    x = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 / (sigma * sigma) * x**2)
    weights /= weights.sum()
    # np.pad's "symmetric" is scipy's "reflect", repeated where the radius exceeds the map
    first = K.smooth_rows(np.pad(values, ((radius, radius), (0, 0)), mode="symmetric"),
                          weights, radius, values.shape[0])
    padded = np.pad(first, ((0, 0), (radius, radius)), mode="symmetric")
    windows = np.lib.stride_tricks.sliding_window_view(padded, x.size, axis=1)[rows, cols]
    return (windows.astype(np.float64) @ weights).astype(np.float32)
