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
from typing import Any

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


def describe_tiles(tiles, segment: Callable | None = None, patches: bool = False,
                   context: bool = False) -> tuple[list[NucleusMap], list[np.ndarray]]:
    """Per tile, its true nuclei (class = CoNSeP type - 1) and, with ``segment(image) ->
    labels``, the model's nuclei, those paired to a true one (centroid <= 12 px) taking its
    class. With ``patches``, also the :func:`~nucleoseg.classify.patch_net.nucleus_patches`
    of each map's nuclei, all of them, in ``features`` order (two-scale ones with
    ``context``): ``patches[i][maps[i].rows]`` are the classed ones."""
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
            ps.append(nucleus_patches(image, labels, ids, context=context))
        if segment is not None:
            pred = segment(image)
            pids, pf = nucleus_features(image, pred)
            _, pc = centroids(pred)
            pairs = pair_centroids(tc, pc)
            maps.append(NucleusMap(k, pf, pc, pairs[:, 1], y[pairs[:, 0]]))
            if patches:
                ps.append(nucleus_patches(image, pred, pids, context=context))
    return maps, ps


def training_set(maps: list[NucleusMap]) -> tuple[np.ndarray, np.ndarray]:
    """``(features, class indices)`` of every classed nucleus of ``maps``."""
    return (np.concatenate([m.features[m.rows] for m in maps]),
            np.concatenate([m.targets for m in maps]))


def fold_of_tiles(maps: list[NucleusMap], folds: int) -> dict[int, int]:
    """``{tile: fold}``: the ``k``-th of the maps' sorted tiles in fold ``k % folds`` (at most
    one fold per tile)."""
    tiles = sorted({m.tile for m in maps})
    if len(tiles) < 2:
        raise ValueError("stacking needs at least two training tiles")
    folds = min(folds, len(tiles))
    return {t: i % folds for i, t in enumerate(tiles)}


def fit_context_forest(
    maps: list[NucleusMap], n_classes: int, trees: int = 100, seed: int = 0, folds: int = 5,
    sigmas: tuple[float, ...] = NEIGHBOUR_SIGMAS, max_depth: int | None = 16,
    min_samples_leaf: int = 2, log: Callable[[str], None] = print,
    patch_proba: list[np.ndarray] | None = None,
) -> Forest:
    """The context forest of a first forest with these settings, fitted on ``maps``.

    Out-of-fold first-stage probabilities come from ``folds`` folds of the tiles (tile
    ``k`` in fold ``k % folds``). ``patch_proba`` (per map, every nucleus) are a patch net's
    out-of-fold probabilities (:func:`oof_patch_proba`, the same folds): the forest then
    takes them beside the first forest's, and their neighbour means too.
    """
    fold_of = fold_of_tiles(maps, folds)
    folds = max(fold_of.values()) + 1
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
    if patch_proba is not None:
        oof = [np.hstack([p, q]) for p, q in zip(oof, patch_proba, strict=True)]
    x = np.concatenate([context_inputs(m.features, p, m.centres, sigmas)[m.rows]
                        for m, p in zip(maps, oof, strict=True)])
    y = np.concatenate([m.targets for m in maps])
    return Forest.fit(x, y, n_classes, trees, max_depth, min_samples_leaf, seed, n_jobs=jobs)


def oof_patch_proba(maps: list[NucleusMap], patches: list[np.ndarray], n_classes: int,
                    train: Callable[[np.ndarray, np.ndarray], Any], folds: int = 5,
                    log: Callable[[str], None] = print) -> list[np.ndarray]:
    """Out-of-fold patch-net probabilities of every nucleus of ``maps`` (``patches`` from
    :func:`describe_tiles`): per fold, ``train(patches, targets) -> net`` on the other
    folds' classed nuclei, then the net's probabilities of the held-out fold's nuclei (the
    folds of :func:`fit_context_forest`)."""
    from .patch_net import PatchRunner

    fold_of = fold_of_tiles(maps, folds)
    out: list[np.ndarray | None] = [None] * len(maps)
    for f in range(max(fold_of.values()) + 1):
        rest = [i for i, m in enumerate(maps) if fold_of[m.tile] != f]
        net = train(np.concatenate([patches[i][maps[i].rows] for i in rest]),
                    np.concatenate([maps[i].targets for i in rest]))
        run = PatchRunner(net)
        for i, m in enumerate(maps):
            if fold_of[m.tile] == f:
                out[i] = run(patches[i]) if len(patches[i]) else \
                    np.zeros((0, n_classes), np.float32)
        log(f"patch net, out-of-fold: fold {f + 1}/{max(fold_of.values()) + 1}")
    return out
