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
