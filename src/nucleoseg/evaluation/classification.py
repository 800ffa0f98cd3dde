"""Nucleus classification metrics as HoVer-Net defines them (Graham et al. 2019, sec. 5.2).

Predicted and true nuclei are paired one-to-one by centroid distance (optimal assignment,
pairs farther than :data:`PAIR_RADIUS` px dropped), pooled over all images of a set:

- detection ``F_d = 2 TP / (2 TP + FP + FN)`` with TP the pairs, FP the unpaired predictions,
  FN the unpaired truths;
- per class ``c``, over the pairs where truth or prediction is ``c``:
  ``F_c = 2 TP_c / (2 TP_c + 2 FP_c + 2 FN_c + FP_d,c + FN_d,c)`` where ``TP_c`` pairs agree
  on ``c``, ``FP_c`` pairs say ``c`` against another truth, ``FN_c`` pairs miss a true ``c``,
  and ``FP_d,c`` / ``FN_d,c`` are the unpaired predictions / truths of class ``c``
  (HoVer-Net's ``compute_stats.py`` with weights 2, 2, 1, 1; its ``TN_c`` term is always 0
  after that restriction);
- classification accuracy: the share of pairs whose classes agree.

A class that occurs in neither truth nor prediction has ``F_c = nan``; with no nucleus at all
``F_d = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: HoVer-Net's pairing radius (pixels at 40x).
PAIR_RADIUS = 12.0


def centroids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (N,), centroids (N, 2) row/col)`` of every nucleus of ``labels``."""
    from ..io.labels import compact_ids

    labels, original = compact_ids(labels)
    lab = labels.astype(np.int64, copy=False).ravel()
    n = int(lab.max()) + 1 if lab.size else 1
    area = np.bincount(lab, minlength=n)
    ids = np.nonzero(area)[0]
    ids = ids[ids > 0]
    rows, cols = np.divmod(np.arange(lab.size), labels.shape[1])
    cy = np.bincount(lab, weights=rows, minlength=n)[ids] / area[ids]
    cx = np.bincount(lab, weights=cols, minlength=n)[ids] / area[ids]
    return ids if original is None else original[ids], np.stack([cy, cx], axis=1)


def pair_centroids(a: np.ndarray, b: np.ndarray, radius: float = PAIR_RADIUS
                   ) -> np.ndarray:
    """One-to-one pairs ``(K, 2)`` of row indices into ``a`` and ``b`` (``(N, 2)`` points):
    the assignment of least total distance, keeping pairs within ``radius``."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    if len(a) == 0 or len(b) == 0:
        return np.zeros((0, 2), int)
    d = cdist(a, b)
    # only near pairs matter: far ones get a cost that no near pair can beat
    cost = np.where(d <= radius, d, radius * 1e3)
    ia, ib = linear_sum_assignment(cost)
    keep = d[ia, ib] <= radius
    return np.stack([ia[keep], ib[keep]], axis=1)


@dataclass
class TypeCounts:
    """Paired and unpaired class indices accumulated over images (``-1`` never occurs)."""

    paired_true: list[int] = field(default_factory=list)
    paired_pred: list[int] = field(default_factory=list)
    unpaired_true: list[int] = field(default_factory=list)
    unpaired_pred: list[int] = field(default_factory=list)

    def add(self, true_centres: np.ndarray, true_types: np.ndarray, pred_centres: np.ndarray,
            pred_types: np.ndarray, radius: float = PAIR_RADIUS) -> TypeCounts:
        """Pair one image's nuclei and add them; returns self."""
        pairs = pair_centroids(true_centres, pred_centres, radius)
        used_t = np.zeros(len(true_centres), bool)
        used_p = np.zeros(len(pred_centres), bool)
        used_t[pairs[:, 0]] = True
        used_p[pairs[:, 1]] = True
        self.paired_true += list(np.asarray(true_types)[pairs[:, 0]])
        self.paired_pred += list(np.asarray(pred_types)[pairs[:, 1]])
        self.unpaired_true += list(np.asarray(true_types)[~used_t])
        self.unpaired_pred += list(np.asarray(pred_types)[~used_p])
        return self

    def __add__(self, other: TypeCounts) -> TypeCounts:
        """The counts of both sets of images together."""
        return TypeCounts(self.paired_true + other.paired_true,
                          self.paired_pred + other.paired_pred,
                          self.unpaired_true + other.unpaired_true,
                          self.unpaired_pred + other.unpaired_pred)

    def scores(self, classes: dict[int, str]) -> dict[str, float]:
        """``{"f_d", "accuracy", "f_<name>" per class, "paired", ...}``."""
        pt, pp = np.asarray(self.paired_true, int), np.asarray(self.paired_pred, int)
        ut, up = np.asarray(self.unpaired_true, int), np.asarray(self.unpaired_pred, int)
        tp, fp, fn = pt.size, up.size, ut.size
        out = {"f_d": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
               "accuracy": float((pt == pp).mean()) if tp else 0.0,
               "paired": tp, "unpaired_pred": fp, "unpaired_true": fn}
        for c, name in classes.items():
            sel = (pt == c) | (pp == c)
            t, p = pt[sel], pp[sel]
            tp_c = int(((t == c) & (p == c)).sum())
            fp_c = int(((t != c) & (p == c)).sum())
            fn_c = int(((t == c) & (p != c)).sum())
            fp_d, fn_d = int((up == c).sum()), int((ut == c).sum())
            denom = 2 * tp_c + 2 * fp_c + 2 * fn_c + fp_d + fn_d
            out[f"f_{name}"] = 2 * tp_c / denom if denom else float("nan")  # class absent
        return out


def type_counts(
    true_labels: np.ndarray,
    true_types: dict[int, int],
    pred_labels: np.ndarray,
    pred_types: dict[int, int],
    radius: float = PAIR_RADIUS,
    into: TypeCounts | None = None,
) -> TypeCounts:
    """Pair one image's true and predicted nuclei and count their classes.

    ``true_types``/``pred_types`` map instance id to class number (ids absent from the map
    count as class 0).
    """
    if np.asarray(true_labels).shape != np.asarray(pred_labels).shape:
        raise ValueError(f"prediction {np.shape(pred_labels)} and ground truth "
                         f"{np.shape(true_labels)} differ in shape")
    tid, tc = centroids(true_labels)
    pid, pc = centroids(pred_labels)
    tt = np.array([true_types.get(int(i), 0) for i in tid], int)
    pt = np.array([pred_types.get(int(i), 0) for i in pid], int)
    return (into or TypeCounts()).add(tc, tt, pc, pt, radius)


def named_type_scores(truth: np.ndarray, true_classes: dict[int, str], pred: np.ndarray,
                      pred_classes: dict[int, str]) -> tuple[dict, list[str]]:
    """HoVer-Net scores of one image whose nuclei carry class *names* (``{id: name}``);
    returns ``(scores, class names)`` with ``scores["f_<name>"]`` per class."""
    names = sorted(set(pred_classes.values()) | set(true_classes.values()))
    number = {n: k + 1 for k, n in enumerate(names)}
    counted = type_counts(truth, {i: number[n] for i, n in true_classes.items()}, pred,
                          {i: number[n] for i, n in pred_classes.items()})
    return counted.scores({k: n for n, k in number.items()}), names
