"""A fitted tree ensemble stored as flat node arrays: plain numpy to save, load and apply
(no pickle, nothing runs on load), fitted with scikit-learn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Forest:
    """A tree ensemble as flat node arrays (every tree's nodes concatenated).

    ``feature`` is -1 at leaves; ``left``/``right`` are absolute node indices; ``value`` is
    ``(nodes, classes)`` class probabilities at the leaves; ``roots`` the first node of each
    tree.
    """

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    roots: np.ndarray

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``(N, F)`` features to ``(N, classes)`` probabilities (mean over trees)."""
        n = x.shape[0]
        if n == 0:
            return np.zeros((0, self.value.shape[1]), np.float32)
        node = np.broadcast_to(self.roots, (n, self.roots.size)).copy()
        rows = np.arange(n)[:, None]
        while True:
            f = self.feature[node]
            inner = f >= 0
            if not inner.any():
                break
            go_left = x[rows, np.maximum(f, 0)] <= self.threshold[node]
            nxt = np.where(go_left, self.left[node], self.right[node])
            node = np.where(inner, nxt, node)
        return self.value[node].mean(axis=1)

    @classmethod
    def from_sklearn(cls, estimator: Any, n_classes: int) -> Forest:
        """Export a fitted ``RandomForestClassifier``/``ExtraTreesClassifier``.

        ``estimator.classes_`` must be class indices ``< n_classes``.
        """
        feats, thr, left, right, vals, roots = [], [], [], [], [], []
        offset = 0
        cols = np.asarray(estimator.classes_, int)
        for tree in estimator.estimators_:
            t = tree.tree_
            leaf = t.children_left < 0
            roots.append(offset)
            feats.append(np.where(leaf, -1, t.feature).astype(np.int16))
            thr.append(t.threshold.astype(np.float32))
            left.append(np.where(leaf, 0, t.children_left + offset).astype(np.int32))
            right.append(np.where(leaf, 0, t.children_right + offset).astype(np.int32))
            v = t.value[:, 0, :].astype(np.float64)
            v = v / np.maximum(v.sum(axis=1, keepdims=True), 1e-12)
            full = np.zeros((t.node_count, n_classes), np.float32)
            full[:, cols] = v
            vals.append(full)
            offset += t.node_count
        return cls(np.concatenate(feats), np.concatenate(thr), np.concatenate(left),
                   np.concatenate(right), np.concatenate(vals).astype(np.float16),
                   np.asarray(roots, np.int32))

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in
                ("feature", "threshold", "left", "right", "value", "roots")}
