"""Segmentation metrics, one definition each (README "Metrics").

Pixel metrics treat nucleus pixels (label > 0) as positives; TP/FP/FN/TN are counted over
all pixels of an image, or summed over all images of a set for the "overall" row:

- Dice = 2TP / (2TP + FP + FN) -- the same number as pixel F1 (reported under both names);
- IoU (Jaccard) = TP / (TP + FP + FN); accuracy = (TP + TN) / all pixels;
- precision = TP / (TP + FP); recall = TP / (TP + FN).

Object metrics compare instances:

- object F1: predicted and true nuclei match one-to-one when IoU > 0.5 (such matches are
  unique); F1 = 2TP / (2TP + FP + FN); PQ = F1 x mean IoU of the matches (Kirillov 2019);
- AJI (Kumar et al. 2017): every true nucleus G is paired with the predicted nucleus S of
  highest IoU (none if it overlaps nothing); AJI = sum |G n S| / (sum |G u S| + sum of areas
  of predicted nuclei never paired). Over a set, the sums run over all images;
- merged: the share of predicted nuclei holding two or more true nuclei (each with more than
  half of its area inside the predicted one) -- under-segmentation, which AJI punishes most;
  split: the share of true nuclei cut into two or more predicted nuclei (each with more than
  half of its area inside the true one) -- over-segmentation.

Empty cases: when both masks are empty every score is 1 (a perfect "nothing there") and
the merged/split shares 0; a ratio whose denominator is 0 otherwise is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PIXEL_KEYS = ("dice", "f1", "iou", "accuracy", "precision", "recall")
OBJECT_KEYS = ("object_f1", "pq", "aji", "merged", "split")
ALL_KEYS = PIXEL_KEYS + OBJECT_KEYS


def _ratio(num: float, den: float, empty: float = 1.0) -> float:
    return float(num) / float(den) if den else empty


@dataclass
class Counts:
    """Additive counts behind every metric (sum them to pool a set)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    obj_tp: int = 0
    obj_fp: int = 0
    obj_fn: int = 0
    iou_sum: float = 0.0
    aji_inter: int = 0
    aji_union: int = 0
    n_pred: int = 0
    n_true: int = 0
    merged: int = 0
    split: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__))

    def scores(self) -> dict[str, float]:
        """All metrics from these counts (see the module docstring)."""
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        dice = _ratio(2 * tp, 2 * tp + fp + fn, 1.0)
        both_empty = tp + fp + fn == 0
        out = {
            "dice": dice,
            "f1": dice,
            "iou": _ratio(tp, tp + fp + fn, 1.0),
            "accuracy": _ratio(tp + tn, tp + fp + fn + tn, 1.0),
            "precision": _ratio(tp, tp + fp, 1.0 if both_empty else 0.0),
            "recall": _ratio(tp, tp + fn, 1.0 if both_empty else 0.0),
        }
        otp, ofp, ofn = self.obj_tp, self.obj_fp, self.obj_fn
        out["object_f1"] = _ratio(2 * otp, 2 * otp + ofp + ofn, 1.0)
        out["pq"] = out["object_f1"] * (self.iou_sum / otp if otp else 0.0) if (
            otp + ofp + ofn
        ) else 1.0
        out["aji"] = _ratio(self.aji_inter, self.aji_union, 1.0)
        out["merged"] = _ratio(self.merged, self.n_pred, 0.0)
        out["split"] = _ratio(self.split, self.n_true, 0.0)
        return out


def _check_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(
            f"prediction shape {pred.shape} differs from ground-truth shape {truth.shape}"
        )
    if pred.ndim != 2:
        raise ValueError(f"labels must be 2D (H, W), got shape {pred.shape}")
    for name, a in (("prediction", pred), ("ground truth", truth)):
        if a.dtype.kind not in "iub":
            raise ValueError(f"{name} must hold integer labels, got {a.dtype}")
        if a.dtype.kind == "i" and a.size and a.min() < 0:
            raise ValueError(f"{name} has negative labels")
    return pred.astype(np.int64), truth.astype(np.int64)


def _relabel(a: np.ndarray) -> tuple[np.ndarray, int]:
    """Map labels to 0..n consecutively (0 stays background)."""
    ids, inv = np.unique(a, return_inverse=True)
    inv = inv.reshape(a.shape)
    if ids[0] != 0:
        return inv + 1, len(ids)
    return inv, len(ids) - 1


def _overlaps(pred: np.ndarray, truth: np.ndarray):
    """Both maps renumbered 1..n: ``(n_p, n_t, area_p, area_t, ti, pi, inter)`` with one entry
    of ``ti``/``pi``/``inter`` per overlapping (true, predicted) pair and its pixel count."""
    p, n_p = _relabel(pred)
    t, n_t = _relabel(truth)
    area_p = np.bincount(p.ravel(), minlength=n_p + 1)
    area_t = np.bincount(t.ravel(), minlength=n_t + 1)
    both = (pred > 0) & (truth > 0)
    keys, inter = np.unique(t[both] * (n_p + 1) + p[both], return_counts=True)
    return n_p, n_t, area_p, area_t, keys // (n_p + 1), keys % (n_p + 1), inter


def _holding_two(outer, inner, inter, inner_area, n_outer: int) -> np.ndarray:
    """``(n_outer + 1,) bool``: the outer nuclei holding two or more inner ones, each with
    more than half of its area inside (so every inner nucleus has at most one holder)."""
    held = np.bincount(outer[2 * inter > inner_area[inner]], minlength=n_outer + 1)
    return held >= 2


def counts(pred: np.ndarray, truth: np.ndarray) -> Counts:
    """Counts for one image pair of ``(H, W)`` instance labels (0 = background)."""
    pred, truth = _check_pair(pred, truth)
    p_fg, t_fg = pred > 0, truth > 0
    tp = int(np.count_nonzero(p_fg & t_fg))
    fp = int(np.count_nonzero(p_fg & ~t_fg))
    fn = int(np.count_nonzero(~p_fg & t_fg))
    tn = int(pred.size - tp - fp - fn)
    c = Counts(tp, fp, fn, tn)

    n_p, n_t, area_p, area_t, ti, pi, inter = _overlaps(pred, truth)
    union = area_t[ti] + area_p[pi] - inter
    iou = inter / union

    matched = iou > 0.5
    c.obj_tp = int(matched.sum())
    c.obj_fp = n_p - c.obj_tp
    c.obj_fn = n_t - c.obj_tp
    c.iou_sum = float(iou[matched].sum())
    c.n_pred, c.n_true = n_p, n_t
    c.merged = int(_holding_two(pi, ti, inter, area_t, n_p).sum())
    c.split = int(_holding_two(ti, pi, inter, area_p, n_t).sum())

    # AJI: best-IoU predicted partner of every true nucleus
    aji_inter = 0
    aji_union = 0
    used = np.zeros(n_p + 1, bool)
    if len(ti):
        order = np.lexsort((-iou, ti))  # per true id, highest IoU first
        first = np.ones(len(order), bool)
        first[1:] = ti[order][1:] != ti[order][:-1]
        best = order[first]
        aji_inter += int(inter[best].sum())
        aji_union += int(union[best].sum())
        used[pi[best]] = True
        paired_t = np.zeros(n_t + 1, bool)
        paired_t[ti[best]] = True
    else:
        paired_t = np.zeros(n_t + 1, bool)
    unpaired_t = ~paired_t
    unpaired_t[0] = False
    aji_union += int(area_t[unpaired_t].sum())
    unused_p = ~used
    unused_p[0] = False
    aji_union += int(area_p[unused_p].sum())
    c.aji_inter, c.aji_union = aji_inter, aji_union
    return c


def evaluate_pair(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """All metrics for one image pair (see the module docstring)."""
    return counts(pred, truth).scores()


def evaluate_set(
    pairs, names: list[str] | None = None
) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Metrics per image and overall (pooled counts) for an iterable of ``(pred, truth)``.

    Returns
    -------
    per_image : list of dict
        One dict per pair (with a ``"name"`` key when ``names`` is given).
    overall : dict
        Metrics from the summed counts, plus ``"aji_mean"`` / ``"dice_mean"``: the plain
        means of the per-image values.
    """
    total = Counts()
    rows = []
    for k, (pred, truth) in enumerate(pairs):
        c = counts(pred, truth)
        total = total + c
        row = c.scores()
        if names is not None:
            row = {"name": names[k], **row}
        rows.append(row)
    overall = total.scores()
    if rows:
        overall["dice_mean"] = float(np.mean([r["dice"] for r in rows]))
        overall["aji_mean"] = float(np.mean([r["aji"] for r in rows]))
    return rows, overall


def merged_nuclei(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Ids of the predicted nuclei that hold two or more true nuclei (more than half of each
    inside; the *merged* share's nuclei)."""
    pred, truth = _check_pair(pred, truth)
    n_p, _, _, area_t, ti, pi, inter = _overlaps(pred, truth)
    ids = np.unique(pred[pred > 0])  # renumbered index k is ids[k - 1]
    return ids[np.flatnonzero(_holding_two(pi, ti, inter, area_t, n_p)) - 1]


def error_overlay(pred: np.ndarray, truth: np.ndarray, mark_merged: bool = False
                  ) -> np.ndarray:
    """``(H, W) uint8``: 0 true negative, 1 true positive, 2 false positive, 3 false negative;
    with ``mark_merged``, 4 on every pixel of a predicted nucleus that merges two or more
    true ones (:func:`merged_nuclei`)."""
    pred, truth = _check_pair(pred, truth)
    p, t = pred > 0, truth > 0
    out = np.zeros(p.shape, np.uint8)
    out[p & t] = 1
    out[p & ~t] = 2
    out[~p & t] = 3
    if mark_merged:
        out[np.isin(pred, merged_nuclei(pred, truth))] = 4
    return out
