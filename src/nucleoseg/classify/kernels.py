"""Compiled inner loops of classifying (numba), each giving exactly what the numpy or scipy
code it replaced gave (same comparisons, same order and precision of additions): the trees'
descent, the neighbours' weighted sums, the features' per-pixel sums, the context maps'
first Gaussian pass and the ring's dilation. Compiled ahead for fixed signatures and cached
like :mod:`nucleoseg.inference.flood_kernels`."""

from __future__ import annotations

import numpy as np

from .._compiled import kernel as _kernel

#: Rows that descend a tree together: independent chains of loads the CPU overlaps.
_LANES = 16


@_kernel("float32[:, ::1](float32[:, ::1], int64[::1], int64[::1], float32[::1], int64[::1], "
         "int64, float32[:, ::1])")
def forest_mean(x, roots, feature, threshold, child, depth, value):
    """``(N, classes)``: the mean over trees of ``value`` at the leaf each row of ``x``
    reaches, summed tree after tree in float32 as ``numpy.mean`` sums float16 leaves. The
    descent is ``depth`` steps of ``node = child[2 * node + (x[feature] <= threshold)]``
    from each root, as :attr:`Forest._walk` lays the nodes out (leaves test feature 0
    against ``+inf`` and lead to themselves)."""
    n, trees = x.shape[0], roots.size
    out = np.zeros((n, value.shape[1]), np.float32)
    node = np.empty(_LANES, np.int64)
    for t in range(trees):  # tree by tree: one tree's nodes stay in the cache
        for start in range(0, n, _LANES):
            lanes = min(_LANES, n - start)
            for j in range(lanes):
                node[j] = roots[t]
            for _ in range(depth):
                for j in range(lanes):
                    k = node[j]
                    node[j] = child[2 * k + (x[start + j, feature[k]] <= threshold[k])]
            for j in range(lanes):
                for c in range(value.shape[1]):
                    out[start + j, c] += value[node[j], c]
    out /= np.float32(trees)
    return out


@_kernel("void(float64[:, ::1], int64[::1], int64[::1], float64[::1], float32[:, ::1])")
def add_pair_sums(acc, a, b, g, proba):
    """``acc[a_k] += g_k * proba[b_k]`` for every pair k, then ``acc[b_k] += g_k *
    proba[a_k]``: ``numpy.add.at`` twice, in its order."""
    for k in range(a.size):
        for c in range(proba.shape[1]):
            acc[a[k], c] += g[k] * proba[b[k], c]
    for k in range(a.size):
        for c in range(proba.shape[1]):
            acc[b[k], c] += g[k] * proba[a[k], c]


#: Columns of :func:`pixel_sums`'s accumulator: pixel count, sums of row and column, inner
#: boundary pixels, ring pixels; per channel (R, G, B, H, E) the sum and the sum of squares
#: inside and the sum in the ring; the centred second moments (rows, columns, cross).
AREA, ROWS, COLS, BOUNDARY, RING_N = 0, 1, 2, 3, 4
SUM, SQUARES, RING_SUM = 5, 10, 15
MOMENTS = 20
SUM_COLUMNS = 23


@_kernel("void(int64[::1], int32[::1], int32[::1], boolean[::1], uint8[:, ::1], "
         "float32[:, ::1], int64, float64[:, ::1])")
def pixel_sums(near, own, grown, edge, rgb, hed, width, acc):
    """Per-label sums over the pixels ``near`` (flat indices, ascending) into ``acc`` (see
    the column constants), as ``numpy.bincount`` adds them: in pixel order, in float64, a
    channel's values as float32 (their squares too) inside a nucleus (``own`` > 0), as
    they are in its ring (``grown``, the dilated labels, at the others); then the second
    moments about each nucleus's centroid, the same way."""
    for k in range(near.size):
        p = near[k]
        lab = own[k]
        if lab > 0:
            acc[lab, AREA] += 1.0
            acc[lab, ROWS] += p // width
            acc[lab, COLS] += p % width
            if edge[p]:
                acc[lab, BOUNDARY] += 1.0
            for ch in range(3):
                x = np.float32(rgb[k, ch])
                acc[lab, SUM + ch] += x
                acc[lab, SQUARES + ch] += x * x
            for ch in range(2):
                x = hed[k, ch]
                acc[lab, SUM + 3 + ch] += x
                acc[lab, SQUARES + 3 + ch] += x * x
        else:
            ring = grown[p]
            acc[ring, RING_N] += 1.0
            for ch in range(3):
                acc[ring, RING_SUM + ch] += rgb[k, ch]
            for ch in range(2):
                acc[ring, RING_SUM + 3 + ch] += hed[k, ch]
    for k in range(near.size):
        lab = own[k]
        if lab > 0:
            safe = max(acc[lab, AREA], 1.0)
            dy = (near[k] // width) - acc[lab, ROWS] / safe
            dx = (near[k] % width) - acc[lab, COLS] / safe
            acc[lab, MOMENTS] += dy * dy
            acc[lab, MOMENTS + 1] += dx * dx
            acc[lab, MOMENTS + 2] += dx * dy


@_kernel("float32[:, ::1](float32[:, ::1], float64[::1], int64, int64)")
def smooth_rows(padded, weights, radius, rows):
    """``scipy.ndimage.correlate1d`` along axis 0 with symmetric ``weights`` (``2 * radius
    + 1``) of a map already padded by ``radius`` rows, as scipy computes it: per output
    pixel, the centre times the middle weight, then each pair of pixels ``j`` rows away,
    outermost first, added in float64 and times its weight; rounded to float32. Whole rows
    at a time, so the columns run in SIMD lanes."""
    width = padded.shape[1]
    out = np.empty((rows, width), np.float32)
    acc = np.empty(width, np.float64)
    for i in range(rows):
        centre = i + radius
        for c in range(width):
            acc[c] = np.float64(padded[centre, c]) * weights[radius]
        for j in range(radius, 0, -1):
            w = weights[radius - j]
            for c in range(width):
                acc[c] += (np.float64(padded[centre - j, c])
                           + np.float64(padded[centre + j, c])) * w
        for c in range(width):
            out[i, c] = np.float32(acc[c])
    return out


@_kernel("int64(int64, int64)", inline="always")
def _reflect(i, n):
    """Index ``i`` of a line of ``n`` extended by scipy's "reflect" (d c b a | a b c d |
    d c b a), repeated as often as it takes."""
    m = i % (2 * n)
    return 2 * n - 1 - m if m >= n else m


@_kernel("int32[:, ::1](int32[:, ::1], int64)")
def dilate_square(labels, half):
    """``scipy.ndimage.grey_dilation(labels, size=(2 * half + 1,) * 2)`` (its default
    "reflect" border): the maximum over a square, one axis after the other, whole rows at
    a time."""
    h, w = labels.shape
    size = 2 * half + 1
    first = np.empty((h, w), np.int32)
    for i in range(h):
        for c in range(w):
            first[i, c] = labels[_reflect(i - half, h), c]
        for k in range(1, size):
            src = _reflect(i - half + k, h)
            for c in range(w):
                first[i, c] = max(first[i, c], labels[src, c])
    cols = np.empty(w + 2 * half, np.int64)
    for c in range(w + 2 * half):
        cols[c] = _reflect(c - half, w)
    row = np.empty(w + 2 * half, np.int32)
    out = np.empty((h, w), np.int32)
    for i in range(h):
        for c in range(w + 2 * half):
            row[c] = first[i, cols[c]]
        for c in range(w):
            out[i, c] = row[c]
        for k in range(1, size):
            for c in range(w):
                out[i, c] = max(out[i, c], row[c + k])
    return out
