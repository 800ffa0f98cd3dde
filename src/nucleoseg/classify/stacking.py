"""Training data of the CoNSeP classifier, tile by tile, and its context forest (stacking).

The context forest (:mod:`~nucleoseg.classify.context`) must learn from first-stage
probabilities like those it will see: probabilities of nuclei the first forest was not
trained on. So the training tiles are split into folds; a forest with the first forest's
settings is fitted on the other folds' nuclei and gives the probabilities of every nucleus
of the held-out fold (out-of-fold). The context forest is then fitted on all training nuclei
with their neighbours' out-of-fold probabilities.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .context import NEIGHBOUR_SIGMAS, context_inputs
from .features import nucleus_features
from .forest import Forest


@dataclass
class NucleusMap:
    """Every nucleus of one label map of a training tile (the true one or a model's)."""

    tile: int
    features: np.ndarray  #: (N, F) features of every nucleus of the map
    centres: np.ndarray  #: (N, 2) their centroids
    rows: np.ndarray  #: indices of the nuclei with a known class (a model's: paired ones)
    targets: np.ndarray  #: their class indices


def describe_tiles(tiles, segment: Callable | None = None, patches: bool = False
                   ) -> tuple[list[NucleusMap], list[np.ndarray]]:
    """Per tile, its true nuclei (class = CoNSeP type - 1) and, with ``segment(image) ->
    labels``, the model's nuclei, those paired to a true one (centroid <= 12 px) taking its
    class. With ``patches``, also the :func:`~nucleoseg.classify.patch_net.nucleus_patches`
    of each map's classed nuclei (in ``rows`` order)."""
    from ..evaluation.classification import centroids, pair_centroids
    from .patch_net import nucleus_patches

    maps, ps = [], []
    for k, t in enumerate(tiles):
        image, labels, types = t.image(), t.labels(), t.types()
        ids, f = nucleus_features(image, labels)
        _, tc = centroids(labels)
        y = np.array([types.get(int(i), 1) - 1 for i in ids], int)
        maps.append(NucleusMap(k, f, tc, np.arange(len(ids)), y))
        if patches:
            ps.append(nucleus_patches(image, labels, ids))
        if segment is not None:
            pred = segment(image)
            pids, pf = nucleus_features(image, pred)
            _, pc = centroids(pred)
            pairs = pair_centroids(tc, pc)
            maps.append(NucleusMap(k, pf, pc, pairs[:, 1], y[pairs[:, 0]]))
            if patches:
                ps.append(nucleus_patches(image, pred, pids[pairs[:, 1]]))
    return maps, ps


def training_set(maps: list[NucleusMap]) -> tuple[np.ndarray, np.ndarray]:
    """``(features, class indices)`` of every classed nucleus of ``maps``."""
    return (np.concatenate([m.features[m.rows] for m in maps]),
            np.concatenate([m.targets for m in maps]))


def fit_context_forest(
    maps: list[NucleusMap], n_classes: int, trees: int = 100, seed: int = 0, folds: int = 5,
    sigmas: tuple[float, ...] = NEIGHBOUR_SIGMAS, max_depth: int | None = 16,
    min_samples_leaf: int = 2, log: Callable[[str], None] = print,
) -> Forest:
    """The context forest of a first forest with these settings, fitted on ``maps``.

    Out-of-fold first-stage probabilities come from ``folds`` folds of the tiles (tile
    ``k`` in fold ``k % folds``).
    """
    tiles = sorted({m.tile for m in maps})
    if len(tiles) < 2:
        raise ValueError("a context forest needs at least two training tiles")
    folds = min(folds, len(tiles))
    fold_of = {t: i % folds for i, t in enumerate(tiles)}
    jobs = min(4, os.cpu_count() or 1)
    oof: list[np.ndarray | None] = [None] * len(maps)
    for f in range(folds):
        x, y = training_set([m for m in maps if fold_of[m.tile] != f])
        stage1 = Forest.fit(x, y, n_classes, trees, max_depth, min_samples_leaf, seed,
                            n_jobs=jobs)
        for i, m in enumerate(maps):
            if fold_of[m.tile] == f:
                oof[i] = stage1.predict_proba(m.features)
        log(f"context forest: fold {f + 1}/{folds}")
    x = np.concatenate([context_inputs(m.features, p, m.centres, sigmas)[m.rows]
                        for m, p in zip(maps, oof, strict=True)])
    y = np.concatenate([m.targets for m in maps])
    return Forest.fit(x, y, n_classes, trees, max_depth, min_samples_leaf, seed, n_jobs=jobs)
