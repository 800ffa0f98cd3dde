"""Choosing a model's post-processing on the validation tiles (step 3 of the training
recipe, also ``nucleoseg tune`` and fine-tuning): the grids tried and the search that picks
thresholds, minimum size and marker rule for pooled Dice + AJI together."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..evaluation.metrics import Counts, counts
from ..inference.postprocess import PostprocessParams, probabilities_to_labels

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
INTERIOR_THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
MIN_SIZES = (8, 16, 32)
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


def select_postprocess(
    probs: list[np.ndarray], labels: list[np.ndarray], groups: list[str] | None = None,
    start: PostprocessParams | None = None,
) -> tuple[PostprocessParams, dict[str, float], list[dict[str, Any]]]:
    """Pick post-processing parameters that maximise pooled Dice + AJI on ``(probs, labels)``.

    Coordinate search: thresholds jointly, then the minimum size, then the marker rule
    (:data:`MARKER_DYNAMICS` x :data:`MARKER_SIGMAS` x :data:`MARKER_LEVELS` against markers
    by threshold).

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
            trials.append({**p.to_dict(), "aji": s["aji"], "dice": s["dice"],
                           "precision": s["precision"], "recall": s["recall"],
                           **({"aji_by_data_set": s["aji_by_group"]} if groups else {})})
            out.append(s)
        return out

    if start is None:
        grid = [PostprocessParams(threshold=t, interior_threshold=it)
                for t in THRESHOLDS for it in INTERIOR_THRESHOLDS]
        scores = score_all(grid)
        k = int(np.argmax([selection_score(s) for s in scores]))
        best, best_s = grid[k], scores[k]
        sizes = [best.replace(min_size=m) for m in MIN_SIZES if m != best.min_size]
        for p, s in zip(sizes, score_all(sizes), strict=True):
            if selection_score(s) > selection_score(best_s):
                best, best_s = p, s
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
