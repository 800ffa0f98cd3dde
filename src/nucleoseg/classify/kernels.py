"""Compiled inner loops of classifying (numba), each giving exactly what the numpy code it
replaced gave (same comparisons, same order of additions): the trees' descent and the
neighbours' weighted sums. Compiled ahead for fixed signatures and cached like
:mod:`nucleoseg.inference.flood_kernels`."""

from __future__ import annotations

import numpy as np

from ..inference.flood_kernels import _kernel

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
