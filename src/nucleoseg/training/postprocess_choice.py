"""Choosing a model's post-processing on the validation tiles (step 3 of the training
recipe, also ``nucleoseg tune`` and fine-tuning): the grids tried and the search that picks
thresholds and marker rule for pooled Dice + AJI together, and the minimum size for Dice +
AJI + PQ (Dice and AJI barely see a fragment of a few pixels; PQ counts it as a false
nucleus, as every count and density does)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..evaluation.metrics import Counts, counts
from ..inference.postprocess import PostprocessParams, probabilities_to_labels

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
INTERIOR_THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
#: Minimum object sizes in pixels. The largest, 48 px, is about 3 um^2 at 40x (0.25 um/px)
#: and 12 um^2 at 20x: well below a small lymphocyte's ~35 um^2 at either.
MIN_SIZES = (8, 16, 24, 32, 40, 48)
#: The marker rule's grid: dynamics h (0 = interior above its threshold), the logit's
#: smoothing, and the interior level bounding where the maxima are looked for.
MARKER_DYNAMICS = (1.0, 1.25, 1.5, 1.75, 2.0)
MARKER_SIGMAS = (1.0, 1.5)
MARKER_LEVELS = (0.5, 0.7)


def scores_by_data_set(probs: list[np.ndarray], labels: list[np.ndarray], names: list[str],
                       params: PostprocessParams, datasets: list[str]
                       ) -> dict[str, dict[str, float]]:
    """Pooled scores (rounded to 4 places) of ``params`` per data set; tiles are named
    ``<data set>/<tile>``, or all belong to ``datasets[0]`` when there is one data set."""
    totals = {ds: Counts() for ds in datasets}
    for name, prob, lab in zip(names, probs, labels, strict=True):
        ds = name.split("/")[0] if len(datasets) > 1 else datasets[0]
        totals[ds] = totals[ds] + counts(probabilities_to_labels(prob, params), lab)
    return {ds: {k: round(v, 4) for k, v in c.scores().items()} for ds, c in totals.items()}


def selection_score(scores: dict[str, float]) -> float:
    """What post-processing maximises: pooled Dice + AJI (outlines and separation together)."""
    return scores["dice"] + scores["aji"]


def size_score(scores: dict[str, float]) -> float:
    """What the minimum size maximises: pooled Dice + AJI + PQ (fragments count in PQ)."""
    return scores["dice"] + scores["aji"] + scores["pq"]


def select_postprocess(
    probs: list[np.ndarray], labels: list[np.ndarray], groups: list[str] | None = None,
    start: PostprocessParams | None = None, min_size_only: bool = False,
) -> tuple[PostprocessParams, dict[str, float], list[dict[str, Any]]]:
    """Pick post-processing parameters on ``(probs, labels)``.

    Coordinate search: thresholds jointly for pooled Dice + AJI, then the minimum size
    (:data:`MIN_SIZES`) for pooled Dice + AJI + PQ (:func:`size_score`), then the marker rule
    (:data:`MARKER_DYNAMICS` x :data:`MARKER_SIGMAS` x :data:`MARKER_LEVELS` against markers
    by threshold) for pooled Dice + AJI.

    Parameters
    ----------
    probs, labels : list of numpy.ndarray
        Validation probabilities and their true instance labels.
    groups : list of str, optional
        The data set of each tile: a dynamic marker rule is then taken only when no data
        set's AJI falls below the threshold rule's.
    start : PostprocessParams, optional
        Keep these thresholds and minimum size (a model card's) and choose only the marker
        rule.
    min_size_only : bool
        With ``start``: keep its thresholds and marker rule and choose only the minimum size.

    Returns
    -------
    best : PostprocessParams
    scores : dict
        Pooled metrics at ``best``.
    trials : list of dict
        Every setting tried with its AJI and Dice.
    """
    trials: list[dict[str, Any]] = []
    names = list(groups) if groups is not None else ["all"] * len(probs)

    def score_all(settings: list[PostprocessParams]) -> list[dict[str, Any]]:
        jobs = [(p, pr, lab) for p in settings for pr, lab in zip(probs, labels, strict=True)]
        workers = min(len(jobs), max(1, (os.cpu_count() or 1) - 1))
        if workers > 2:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(workers) as pool:
                per_job = pool.map(_score_job, jobs)
        else:
            per_job = [_score_job(j) for j in jobs]
        out = []
        n = len(probs)
        for i, p in enumerate(settings):
            total, by_group = Counts(), {}
            for c, g in zip(per_job[i * n : (i + 1) * n], names, strict=True):
                total = total + c
                by_group[g] = by_group.get(g, Counts()) + c
            s = total.scores()
            s["aji_by_group"] = {g: c.scores()["aji"] for g, c in by_group.items()}
            trials.append({**p.to_dict(), "aji": s["aji"], "dice": s["dice"], "pq": s["pq"],
                           "precision": s["precision"], "recall": s["recall"],
                           **({"aji_by_data_set": s["aji_by_group"]} if groups else {})})
            out.append(s)
        return out

    def choose_size(best: PostprocessParams, best_s: dict[str, Any]) -> tuple:
        sizes = [best.replace(min_size=m) for m in MIN_SIZES if m != best.min_size]
        for p, s in zip(sizes, score_all(sizes), strict=True):
            if size_score(s) > size_score(best_s):
                best, best_s = p, s
        return best, best_s

    if min_size_only:
        if start is None:
            raise ValueError("min_size_only needs the settings to start from")
        best, best_s = choose_size(start, score_all([start])[0])
        best_s.pop("aji_by_group")
        return best, best_s, trials
    if start is None:
        grid = [PostprocessParams(threshold=t, interior_threshold=it)
                for t in THRESHOLDS for it in INTERIOR_THRESHOLDS]
        scores = score_all(grid)
        k = int(np.argmax([selection_score(s) for s in scores]))
        best, best_s = choose_size(grid[k], scores[k])
    else:
        best = start.replace(marker_dynamic=0.0)
        best_s = score_all([best])[0]
    plain = best_s["aji_by_group"]
    rules = [best.replace(interior_threshold=level, marker_dynamic=h, marker_sigma=sigma)
             for h in MARKER_DYNAMICS for sigma in MARKER_SIGMAS for level in MARKER_LEVELS]
    for p, s in zip(rules, score_all(rules), strict=True):
        no_set_worse = all(s["aji_by_group"][g] >= a for g, a in plain.items())
        if no_set_worse and selection_score(s) > selection_score(best_s):
            best, best_s = p, s
    best_s.pop("aji_by_group")
    return best, best_s, trials


def _score_job(job) -> Counts:
    params, prob, lab = job
    return counts(probabilities_to_labels(prob, params), lab)


#: What the card says of each data set.
