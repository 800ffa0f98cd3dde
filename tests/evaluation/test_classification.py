"""HoVer-Net classification metrics on cases worked out by hand."""

import numpy as np
import pytest

from nucleoseg.evaluation.classification import (
    TypeCounts,
    centroids,
    pair_centroids,
    type_counts,
)

CLASSES = {1: "a", 2: "b"}


def test_pairing_is_one_to_one_and_within_the_radius():
    a = np.array([[0.0, 0.0], [0.0, 10.0], [50.0, 50.0]])
    b = np.array([[0.0, 9.0], [1.0, 1.0], [80.0, 80.0]])
    pairs = {tuple(p) for p in pair_centroids(a, b, radius=12)}
    # least total distance: a0-b1 (1.4) and a1-b0 (1.0); a2/b2 are 42 px apart: unpaired
    assert pairs == {(0, 1), (1, 0)}
    assert pair_centroids(a, b[:0]).shape == (0, 2)


def test_f_d_f_c_and_accuracy_by_hand():
    # 4 truths (classes a, a, b, b), 4 predictions: 3 paired (a->a, a->b, b->b),
    # one unpaired truth (b), one unpaired prediction (a)
    t = TypeCounts()
    true_c = np.array([[10, 10], [10, 40], [40, 10], [80, 80]], float)
    pred_c = np.array([[11, 10], [10, 41], [40, 12], [150, 150]], float)
    t.add(true_c, np.array([1, 1, 2, 2]), pred_c, np.array([1, 2, 2, 1]))
    s = t.scores(CLASSES)
    assert s["paired"] == 3 and s["unpaired_pred"] == 1 and s["unpaired_true"] == 1
    assert s["f_d"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert s["accuracy"] == pytest.approx(2 / 3)
    # class a: pairs with a on either side: (a,a), (a,b) -> TP 1, FN 1; unpaired pred a: 1
    assert s["f_a"] == pytest.approx(2 * 1 / (2 * 1 + 2 * 0 + 2 * 1 + 1 + 0))
    # class b: (a,b), (b,b) -> TP 1, FP 1; unpaired truth b: 1
    assert s["f_b"] == pytest.approx(2 * 1 / (2 * 1 + 2 * 1 + 2 * 0 + 0 + 1))
    # pooling two images is adding their counts: the same set split in two scores the same
    first, second = TypeCounts(), TypeCounts()
    first.add(true_c[:2], np.array([1, 1]), pred_c[:2], np.array([1, 2]))
    second.add(true_c[2:], np.array([2, 2]), pred_c[2:], np.array([2, 1]))
    assert (first + second).scores(CLASSES) == s
    assert first.scores(CLASSES)["paired"] == 2  # adding left the parts as they were


def test_type_counts_from_label_images():
    truth = np.zeros((60, 60), np.int32)
    truth[5:15, 5:15] = 1
    truth[30:40, 30:40] = 2
    pred = np.zeros_like(truth)
    pred[6:16, 5:15] = 7  # same nucleus, 1 px off
    pred[45:55, 45:55] = 8  # nothing there
    ids, c = centroids(truth)
    assert list(ids) == [1, 2] and np.allclose(c[0], [9.5, 9.5])
    s = type_counts(truth, {1: 1, 2: 2}, pred, {7: 1, 8: 2}).scores(CLASSES)
    assert s["paired"] == 1 and s["accuracy"] == 1.0 and s["f_d"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="differ in shape"):
        type_counts(truth, {}, pred[:50], {})
