"""A fitted tree ensemble stored as flat node arrays: plain numpy to save, load and apply
(no pickle, nothing runs on load), fitted with scikit-learn."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
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
        from .kernels import forest_mean

        feature, threshold, child, depth, value = self._walk
        return forest_mean(np.ascontiguousarray(x, np.float32), self.roots.astype(np.int64),
                           feature, threshold, child, depth, value).astype(self.value.dtype)

    @cached_property
    def _walk(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
        """The node arrays for the descent (:func:`~nucleoseg.classify.kernels.forest_mean`):
        leaves test feature 0 against +inf and lead to themselves; ``child[2 * node +
        went_left]``; the deepest leaf's depth (which also refuses cycles); the leaves' values
        in float32."""
        leaf = self.feature < 0
        nodes = np.arange(leaf.size)
        child = np.empty(2 * leaf.size, np.int64)
        child[0::2] = np.where(leaf, nodes, self.right)
        child[1::2] = np.where(leaf, nodes, self.left)
        depth, level = 0, self.roots.astype(np.int64)
        while True:
            level = level[~leaf[level]]
            if level.size == 0:
                break
            depth += 1
            if depth > leaf.size:  # deeper than there are nodes: a cycle
                raise ValueError("the forest's node arrays do not form trees")
            level = np.concatenate([self.left[level], self.right[level]]).astype(np.int64)
        return (np.where(leaf, 0, self.feature).astype(np.int64),
                np.where(leaf, np.inf, self.threshold).astype(np.float32), child, depth,
                np.ascontiguousarray(self.value, np.float32))

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, n_classes: int, trees: int = 100,
            max_depth: int | None = 16, min_samples_leaf: int = 2, seed: int = 0,
            class_weight: str | None = None, n_jobs: int = 1) -> Forest:
        """A scikit-learn random forest (``max_features="sqrt"``) fitted to ``(N, F)`` inputs
        and ``(N,)`` class indices ``< n_classes``, exported."""
        from sklearn.ensemble import RandomForestClassifier

        rf = RandomForestClassifier(
            n_estimators=trees, max_depth=max_depth, min_samples_leaf=min_samples_leaf,
            class_weight=class_weight, random_state=seed, n_jobs=n_jobs, max_features="sqrt")
        return cls.from_sklearn(rf.fit(x, y), n_classes)

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

    def check(self, n_features: int, n_classes: int) -> None:
        """Raise ValueError unless the arrays form trees over ``n_features`` inputs and
        ``n_classes`` classes (what a file read from disk must pass before use)."""
        n = self.feature.size
        if not all(getattr(self, k).shape[:1] == (n,) for k in
                   ("threshold", "left", "right", "value")) or self.value.ndim != 2:
            raise ValueError("the forest's node arrays differ in length")
        if self.value.shape[1] != n_classes:
            raise ValueError(f"the forest has {self.value.shape[1]} classes, not {n_classes}")
        inner = self.feature >= 0
        if n == 0 or self.roots.size == 0 or self.roots.min() < 0 or self.roots.max() >= n:
            raise ValueError("the forest's roots lie outside its nodes")
        if (self.feature[inner] >= n_features).any():
            raise ValueError(f"the forest reads more than {n_features} inputs")
        for child in (self.left[inner], self.right[inner]):
            if child.size and (child.min() < 0 or child.max() >= n):
                raise ValueError("the forest's children lie outside its nodes")
        self._walk  # noqa: B018 -- refuses cycles

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in
                ("feature", "threshold", "left", "right", "value", "roots")}


def forest_margin(proba: np.ndarray) -> np.ndarray:
    """``(N,)``: each row's best probability minus its second best."""
    top = np.partition(proba, proba.shape[1] - 2, axis=1)[:, -2:]
    return top[:, 1] - top[:, 0]
