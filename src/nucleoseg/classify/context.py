"""What a nucleus's neighbours say about its class, and the class-weight rule.

Lymphocytes come in infiltrates, epithelial nuclei in glands, spindle nuclei in stroma. A
classifier's *context forest* (stacking) classifies each nucleus again from its features,
its own first-stage probabilities and the Gaussian-weighted mean of the other nuclei's
first-stage probabilities at the scales :data:`NEIGHBOUR_SIGMAS`
(``sum_j g_ij p_j / sum_j g_ij``, ``g_ij = exp(-d_ij^2 / 2 s^2)`` over the nuclei within
``3 s``; 0 where there are none).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Neighbourhood scales (centroid distance, pixels at 40x: ~4, 7.5 and 15 micrometres).
NEIGHBOUR_SIGMAS = (15.0, 30.0, 60.0)


def nucleus_centres(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``(N, 2)`` row/col centroids of the nuclei ``ids`` of ``labels`` (sparse ids too)."""
    from ..io.labels import compact_ids

    labels, original = compact_ids(labels)
    if original is not None:
        ids = np.searchsorted(original, ids)
    flat = labels.ravel()
    where = np.flatnonzero(flat)
    lab = flat[where].astype(np.int64, copy=False)
    n = int(max(lab.max(initial=0), np.max(ids, initial=0))) + 1
    r, c = np.divmod(where, labels.shape[1])
    area = np.maximum(np.bincount(lab, minlength=n), 1)
    return np.stack([np.bincount(lab, r, n)[ids] / area[ids],
                     np.bincount(lab, c, n)[ids] / area[ids]], axis=1)


def neighbour_means(proba: np.ndarray, centres: np.ndarray,
                    sigmas: tuple[float, ...] = NEIGHBOUR_SIGMAS) -> np.ndarray:
    """``(N, C * len(sigmas))``: per scale, the Gaussian-weighted mean of the *other* nuclei's
    probabilities (zeros for a nucleus with no neighbour within ``3 * sigma``)."""
    from scipy.spatial import cKDTree

    from .kernels import add_pair_sums

    n = len(proba)
    out = np.zeros((n, proba.shape[1] * len(sigmas)), np.float32)
    if n < 2:
        return out
    tree = cKDTree(centres)
    for k, s in enumerate(sigmas):
        pairs = tree.query_pairs(3 * s, output_type="ndarray")
        if not len(pairs):
            continue
        a, b = pairs[:, 0], pairs[:, 1]
        g = np.exp(-((centres[a] - centres[b]) ** 2).sum(1) / (2 * s * s))
        acc = np.zeros(proba.shape)
        add_pair_sums(acc, a.astype(np.int64), b.astype(np.int64), g,
                      np.ascontiguousarray(proba, np.float32))
        norm = np.bincount(a, g, n) + np.bincount(b, g, n)
        out[:, k * proba.shape[1]:(k + 1) * proba.shape[1]] = \
            acc / np.maximum(norm, 1e-12)[:, None]
    return out


def context_inputs(features: np.ndarray, proba: np.ndarray, centres: np.ndarray,
                   sigmas: tuple[float, ...] = NEIGHBOUR_SIGMAS) -> np.ndarray:
    """The context forest's inputs: ``[features, proba, neighbour_means(proba)]``."""
    return np.hstack([features, proba, neighbour_means(proba, centres, sigmas)]
                     ).astype(np.float32)


def read_class_weights(card: dict[str, Any], n_classes: int) -> list[float] | None:
    """A card's ``class_weights`` (one positive number per class), checked.

    Raises
    ------
    ValueError
        Anything else.
    """
    weights = card.get("class_weights")
    if weights is None:
        return None
    try:
        weights = [float(w) for w in weights]
    except (TypeError, ValueError):
        weights = []
    if len(weights) != n_classes or not all(0 < w < 1e6 for w in weights):
        raise ValueError("class_weights must be one positive number per class")
    return weights


def read_sigmas(card: dict[str, Any]) -> tuple[float, ...]:
    """The neighbourhood scales of a card's context forest, checked (ValueError)."""
    try:
        sigmas = tuple(float(s) for s in card["context_forest"]["sigmas_px"])
    except (TypeError, ValueError, KeyError):
        sigmas = ()
    if not sigmas or len(sigmas) > 8 or not all(0 < s < 1e4 for s in sigmas):
        raise ValueError("context_forest needs 1 to 8 positive sigmas_px")
    return sigmas
