"""Metric definitions checked on cases computed by hand (README "Metrics")."""

import numpy as np
import pytest

from nucleoseg.evaluation.metrics import error_overlay, evaluate_pair, evaluate_set


def _case():
    truth = np.zeros((10, 10), np.int32)
    truth[0:4, 0:4] = 1  # A, 16 px
    truth[6:8, 6:8] = 2  # B, 4 px
    pred = np.zeros((10, 10), np.int32)
    pred[0:4, 1:5] = 5  # A': 12 px overlap with A, union 20, IoU 0.6
    pred[6:8, 9:10] = 9  # C: 2 px, overlaps nothing
    return pred, truth


def test_hand_computed_case():
    m = evaluate_pair(*_case())
    # TP 12, FP 6, FN 8, TN 74
    assert m["dice"] == pytest.approx(24 / 38) and m["f1"] == m["dice"]
    assert m["iou"] == pytest.approx(12 / 26)
    assert m["accuracy"] == pytest.approx(0.86)
    assert m["precision"] == pytest.approx(12 / 18) and m["recall"] == pytest.approx(12 / 20)
    # objects: A-A' matched (IoU 0.6), C false positive, B false negative
    assert m["object_f1"] == pytest.approx(0.5)
    assert m["pq"] == pytest.approx(0.3)
    # AJI = 12 / (20 + |B| 4 + |C| 2)
    assert m["aji"] == pytest.approx(12 / 26)


def test_aji_pairs_one_prediction_with_several_truths():
    truth = np.zeros((4, 4), np.int32)
    truth[0:2] = 1
    truth[2:4] = 2
    pred = np.ones((4, 4), np.int32)
    m = evaluate_pair(pred, truth)
    assert m["aji"] == pytest.approx(16 / 32)  # Kumar et al.: the union counts P twice
    assert m["object_f1"] == 0.0  # IoU 0.5 is not > 0.5
    assert m["dice"] == 1.0


def test_merged_and_split_shares():
    truth = np.zeros((8, 12), np.int32)
    truth[0:4, 0:4] = 1  # T1 and T2 side by side, both inside P1: a merge
    truth[0:4, 4:8] = 2
    truth[5:8, 0:8] = 3  # T3 cut into P2 and P3: a split
    truth[0:4, 9:12] = 4  # T4 holds only P4: neither merged nor split
    pred = np.zeros_like(truth)
    pred[0:4, 0:8] = 1
    pred[5:8, 0:4] = 2
    pred[5:8, 4:8] = 3
    pred[0:2, 10:12] = 4
    pred[2:4, 8:9] = 4  # touches nothing true
    m = evaluate_pair(pred, truth)
    assert m["merged"] == pytest.approx(1 / 4)  # P1 holds T1 and T2
    assert m["split"] == pytest.approx(1 / 4)  # T3 holds P2 and P3
    # halves do not count: a nucleus exactly half inside another has no container
    half = np.zeros((2, 4), np.int32)
    half[:, :2], half[:, 2:] = 1, 2
    shifted = np.zeros_like(half)
    shifted[:, 1:3] = 1
    assert evaluate_pair(shifted, half)["merged"] == 0.0
    assert evaluate_pair(half, shifted)["split"] == 0.0
    shifted[0, 0] = 1  # now 3 of truth 1's 4 px inside
    shifted[0, 3] = 1  # and 3 of truth 2's
    assert evaluate_pair(shifted, half)["merged"] == 1.0
    # the overlay marks every pixel of the merging prediction, and only those
    from nucleoseg.evaluation.metrics import merged_nuclei

    assert merged_nuclei(pred, truth).tolist() == [1]
    ov = error_overlay(pred, truth, mark_merged=True)
    np.testing.assert_array_equal(ov == 4, pred == 1)
    np.testing.assert_array_equal(ov[pred != 1], error_overlay(pred, truth)[pred != 1])
    # pooled over a set: shares of all predicted / true nuclei
    _, overall = evaluate_set([(pred, truth), (truth, truth)])
    assert overall["merged"] == pytest.approx(1 / 8) and overall["split"] == pytest.approx(1 / 8)


def test_empty_cases():
    z = np.zeros((5, 5), np.int32)
    one = z.copy()
    one[1:3, 1:3] = 1
    perfect = evaluate_pair(z, z)
    assert perfect.pop("merged") == 0.0 and perfect.pop("split") == 0.0
    assert all(v == 1.0 for v in perfect.values())
    m = evaluate_pair(z, one)
    assert m["dice"] == 0 and m["aji"] == 0 and m["object_f1"] == 0 and m["recall"] == 0
    m = evaluate_pair(one, z)
    assert m["dice"] == 0 and m["aji"] == 0 and m["precision"] == 0


def test_set_pools_counts():
    pred, truth = _case()
    rows, overall = evaluate_set([(pred, truth), (truth, truth)], names=["a", "b"])
    assert rows[0]["name"] == "a" and rows[1]["dice"] == 1.0
    # pooled: TP 12+20, FP 6, FN 8
    assert overall["dice"] == pytest.approx(64 / 78)
    assert overall["aji"] == pytest.approx((12 + 20) / (26 + 20))
    assert overall["dice_mean"] == pytest.approx((24 / 38 + 1) / 2)


def test_label_ids_need_not_be_consecutive_and_shapes_must_match():
    pred, truth = _case()
    a = evaluate_pair(pred * 1000, truth)
    assert a == evaluate_pair(pred, truth)
    with pytest.raises(ValueError, match="shape"):
        evaluate_pair(pred[:5], truth)
    with pytest.raises(ValueError, match="integer"):
        evaluate_pair(pred.astype(float), truth)


def test_against_independent_slow_reference():
    """Random instance maps: compare with a direct, loop-based transcription of the formulas."""
    rng = np.random.default_rng(0)
    from skimage.measure import label

    for _ in range(5):
        t = label(rng.random((40, 40)) > 0.6)
        p = label(rng.random((40, 40)) > 0.6)
        m = evaluate_pair(p, t)
        inter = sum((t == g) & (p == s) for g in [0] for s in [0])  # noqa: F841
        # AJI by loops
        used, c, u = set(), 0, 0
        for g in range(1, t.max() + 1):
            gm = t == g
            best, best_iou = None, -1.0
            for s in np.unique(p[gm]):
                if s == 0:
                    continue
                sm = p == s
                iou = (gm & sm).sum() / (gm | sm).sum()
                if iou > best_iou:
                    best, best_iou = s, iou
            if best is None:
                u += gm.sum()
            else:
                sm = p == best
                c += (gm & sm).sum()
                u += (gm | sm).sum()
                used.add(best)
        u += sum((p == s).sum() for s in range(1, p.max() + 1) if s not in used)
        assert m["aji"] == pytest.approx(c / u)
        tp = ((p > 0) & (t > 0)).sum()
        assert m["dice"] == pytest.approx(2 * tp / ((p > 0).sum() + (t > 0).sum()))
        # merged / split by loops: count the nuclei more than half inside each other one
        def holding(a, b):
            return sum(sum(2 * ((a == i) & (b == j)).sum() > (b == j).sum()
                           for j in range(1, b.max() + 1)) >= 2 for i in range(1, a.max() + 1))
        assert m["merged"] == pytest.approx(holding(p, t) / p.max())
        assert m["split"] == pytest.approx(holding(t, p) / t.max())
        from nucleoseg.evaluation.metrics import merged_nuclei

        assert merged_nuclei(p, t).size == holding(p, t)


def test_error_overlay():
    pred, truth = _case()
    ov = error_overlay(pred, truth)
    assert (ov == 1).sum() == 12 and (ov == 2).sum() == 6 and (ov == 3).sum() == 8
