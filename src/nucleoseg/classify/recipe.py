"""The shipped CoNSeP type classifier: trained on the CoNSeP fit tiles' true nuclei and on a
segmentation model's nuclei paired to them (centroid <= 12 px, the true type), so it knows
both the annotators' outlines and the ones it will be given; chosen and reported on the
validation tiles (true nuclei, and the model's nuclei paired as the metric does). Adding the
model's nuclei raised validation accuracy on them from 0.727 to 0.742 and F_inflammatory from
0.339 to 0.386 (unet_lite's nuclei added, shipped MoNuSeg-only UNet evaluated). Class
weights on the probabilities (:data:`CLASS_WEIGHT_GRID`) are chosen last, on the same
validation nuclei. The test tiles are never read here.
"""

from __future__ import annotations

import itertools
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.classification import TypeCounts, type_counts
from ..io.consep import CLASS_NAMES, list_tiles
from .classifier import NucleusClassifier
from .features import nucleus_features

#: CoNSeP class names (type numbers 1..4) and their colours.
CONSEP_CLASSES = list(CLASS_NAMES[1:])
CONSEP_COLORS = ["#ffd400", "#00c8ff", "#ff3030", "#30ff60"]
#: Class weights tried on the validation tiles (:attr:`NucleusClassifier.class_weights`) for
#: the classes the trees under-predict; the others stay 1. "other" is 1.6 % of the training
#: nuclei. Weighting inflammatory too overfitted the five validation tiles
#: (``benchmarks/type_priors.py``).
CLASS_WEIGHT_GRID = {"other": (1, 2, 4, 8, 16, 32), "spindle": (0.5, 0.75, 1, 1.5, 2, 3, 4)}


def tile_features(tiles, segment: Callable | None = None, patches: bool = False):
    """Features of every true nucleus of ``tiles`` and its class index (type - 1); with
    ``segment(image) -> labels``, also of the predicted nuclei paired to a true one. With
    ``patches``, also their :func:`~nucleoseg.classify.patch_net.nucleus_patches` (a third
    array)."""
    from ..evaluation.classification import centroids, pair_centroids
    from .patch_net import nucleus_patches

    xs, ys, ps = [], [], []
    for t in tiles:
        image, labels, types = t.image(), t.labels(), t.types()
        ids, f = nucleus_features(image, labels)
        xs.append(f)
        ys.append(np.array([types.get(int(i), 1) - 1 for i in ids], int))
        if patches:
            ps.append(nucleus_patches(image, labels, ids))
        if segment is not None:
            pred = segment(image)
            pids, pf = nucleus_features(image, pred)
            _, pc = centroids(pred)
            pairs = pair_centroids(centroids(labels)[1], pc)
            xs.append(pf[pairs[:, 1]])
            ys.append(np.array([types.get(int(ids[i]), 1) - 1 for i in pairs[:, 0]], int))
            if patches:
                ps.append(nucleus_patches(image, pred, pids[pairs[:, 1]]))
    x, y = np.concatenate(xs), np.concatenate(ys)
    return (x, y, np.concatenate(ps)) if patches else (x, y)


def evaluate_classifier(clf: NucleusClassifier, tiles, segment: Callable | None = None,
                        weights: tuple[float, ...] | None = None) -> Any:
    """HoVer-Net metrics of ``clf`` on ``tiles``: on their true nuclei, or on the nuclei of
    ``segment(image) -> labels`` when given. With ``weights``, ``{weight: metrics}`` for
    each patch-net weight (one pass over the tiles)."""
    totals = {w: TypeCounts() for w in (weights or (clf.patch_weight,))}
    for t in tiles:
        image, truth, types = t.image(), t.labels(), t.types()
        labels = truth if segment is None else segment(image)
        for w, total in totals.items():
            clf.patch_weight = w
            ids, proba = clf.predict_proba(image, labels)
            pred_types = {int(i): int(c) + 1 for i, c in zip(ids, proba.argmax(1), strict=True)}
            type_counts(truth, types, labels, pred_types, into=total)
    names = {k + 1: n for k, n in enumerate(CONSEP_CLASSES)}
    scores = {w: _named(total.scores(names)) for w, total in totals.items()}
    return scores if weights else next(iter(scores.values()))


def class_weight_candidates(classes: list[str], grid: dict[str, tuple] = CLASS_WEIGHT_GRID
                            ) -> list[np.ndarray]:
    """Every combination of :data:`CLASS_WEIGHT_GRID` weights, one per class (1 elsewhere)."""
    axes = [grid.get(c, (1.0,)) for c in classes]
    return [np.array(w, float) for w in itertools.product(*axes)]


def counts_by_class_weights(clf: NucleusClassifier, tiles, candidates: list[np.ndarray],
                            segment: Callable | None = None) -> list[list[TypeCounts]]:
    """``[tile][candidate]`` HoVer-Net counts of ``clf`` with each candidate as its class
    weights, on the true nuclei of ``tiles`` or on those of ``segment(image) -> labels``
    (each tile classified once)."""
    from ..evaluation.classification import centroids

    saved, clf.class_weights = clf.class_weights, None
    try:
        out = []
        for t in tiles:
            image, truth, types = t.image(), t.labels(), t.types()
            labels = truth if segment is None else segment(image)
            _, proba = clf.predict_proba(image, labels)
            tid, tc = centroids(truth)
            _, pc = centroids(labels)  # the same ids, in the same order, as predict_proba's
            tt = np.array([types.get(int(i), 0) for i in tid], int)
            out.append([TypeCounts().add(tc, tt, pc, (proba * w).argmax(1) + 1)
                        for w in candidates])
        return out
    finally:
        clf.class_weights = saved


def pooled_type_scores(parts: list[TypeCounts]) -> dict[str, Any]:
    """HoVer-Net scores of the pooled ``parts`` (CoNSeP classes) with their ``mean_f_c``."""
    total = sum(parts, TypeCounts())
    scores = total.scores({k + 1: n for k, n in enumerate(CONSEP_CLASSES)})
    return {**scores, "mean_f_c": _mean_f_c(scores)}


def best_class_weights(counts: list[list[TypeCounts]], tiles: list[int]) -> int:
    """The candidate index with the best pooled mean F_c over the given tile indices."""
    return max(range(len(counts[0])),
               key=lambda c: pooled_type_scores([counts[k][c] for k in tiles])["mean_f_c"])


def _mean_f_c(scores: dict[str, Any]) -> float:
    return float(np.mean([scores[f"f_{c}"] for c in CONSEP_CLASSES]))


def _named(scores: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in scores.items()}


def train_consep_classifier(
    out_dir: str | Path,
    name: str = "consep_types",
    data: str | Path | None = None,
    segmentation_model: str | None = "unet",
    trees: int = 100,
    seed: int = 0,
    patch_epochs: int = 25,
    log: Callable[[str], None] = print,
) -> Path:
    """Train, validate and save the CoNSeP four-class classifier; returns its ``.npz`` path.

    ``segmentation_model``'s nuclei join the training nuclei and are scored on validation.
    With ``patch_epochs`` > 0 a patch net (:mod:`~nucleoseg.classify.patch_net`) is trained
    on the same nuclei and its weight against the forest is chosen on the validation tiles
    (best mean per-class F_c on the model's nuclei; 0 keeps the forest alone).
    """
    from ..inference.predict import run
    from ..inference.segment import Segmenter

    t0 = time.perf_counter()
    fit, val = list_tiles("fit", data), list_tiles("val", data)
    seg = Segmenter.load(segmentation_model, precision="float32") if segmentation_model \
        else None
    segment = (lambda im: run(seg.segment(im))) if seg is not None else None
    x, y, patches = tile_features(fit, segment, patches=True)
    log(f"features of {len(y)} nuclei from {len(fit)} fit tiles ({time.perf_counter() - t0:.0f}s)")
    t1 = time.perf_counter()
    clf = NucleusClassifier.fit(x, y, CONSEP_CLASSES, CONSEP_COLORS, trees=trees, seed=seed,
                                class_weight=None)
    fit_s = time.perf_counter() - t1
    patch_s = 0.0
    if patch_epochs > 0:
        from .patch_net import train_patch_net

        t1 = time.perf_counter()
        clf.patch_net = train_patch_net(patches, y, len(CONSEP_CLASSES), epochs=patch_epochs,
                                        seed=seed, log=log)
        patch_s = time.perf_counter() - t1
    weights = (0.0, 0.25, 0.5, 0.75, 1.0) if clf.patch_net is not None else (0.0,)
    on = f"{segmentation_model}_nuclei" if segment is not None else "true_nuclei"
    by_weight = evaluate_classifier(clf, val, segment, weights=weights)
    for w, scores in by_weight.items():
        log(f"validation, {on}, patch-net weight {w}: {scores}")
    clf.patch_weight = max(weights, key=lambda w: _mean_f_c(by_weight[w]))
    if clf.patch_weight == 0.0:
        clf.patch_net = None
    validation = {on: by_weight[clf.patch_weight],
                  "by_patch_weight": {str(w): v for w, v in by_weight.items()}}
    log(f"chosen patch-net weight {clf.patch_weight}; validation: {validation[on]}")
    candidates = class_weight_candidates(CONSEP_CLASSES)
    counts = counts_by_class_weights(clf, val, candidates, segment)
    best = best_class_weights(counts, list(range(len(val))))
    chosen = candidates[best]
    if not (chosen == 1).all():
        clf.class_weights = chosen.tolist()
        # the chosen candidate's counts are its validation scores: no second pass
        names = {k + 1: n for k, n in enumerate(CONSEP_CLASSES)}
        validation[on] = _named(sum((c[best] for c in counts), TypeCounts()).scores(names))
        validation["class_weights"] = {"chosen": clf.class_weights,
                                       "grid": {c: list(v) for c, v in CLASS_WEIGHT_GRID.items()}}
        log(f"class weights {clf.class_weights}; validation: {validation[on]}")
    if segment is not None:
        validation["true_nuclei"] = evaluate_classifier(clf, val)
    clf.card.update({
        "description": "CoNSeP nucleus types (other, inflammatory, epithelial, spindle): a "
                       "random forest over per-nucleus shape, colour and context features" +
                       (f", averaged with a patch CNN (weight {clf.patch_weight})"
                        if clf.patch_net is not None else "") +
                       (f"; class probabilities weighted {clf.class_weights}"
                        if clf.class_weights is not None else ""),
        "training": {**clf.card.get("training", {}),
                     "data": "CoNSeP training set, fit tiles: true nuclei and types, and "
                             f"the {segmentation_model} model's nuclei paired to them "
                             "(centroid <= 12 px) with the true type",
                     "fit_tiles": [t.name for t in fit],
                     "validation_tiles": [t.name for t in val],
                     "hardware": f"{platform.processor() or platform.machine()} CPU",
                     "seconds_fit": round(fit_s, 1),
                     "seconds_patch_net": round(patch_s, 1), "patch_epochs": patch_epochs},
        "validation": validation,
        "metrics": "HoVer-Net: centroid pairing <= 12 px, F_d, per-class F_c, accuracy",
        "license": "Derived from CoNSeP (Apache 2.0)",
    })
    path = clf.save(out_dir, name)
    log(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.0f}s")
    return path
