"""The context forest (stacking): neighbour features, training, storage and refusals."""

import json

import numpy as np
import pytest

from nucleoseg.classify.classifier import ClassifierError, NucleusClassifier
from nucleoseg.classify.context import (
    NEIGHBOUR_SIGMAS,
    context_inputs,
    neighbour_means,
    nucleus_centres,
)
from nucleoseg.classify.features import FEATURE_NAMES, nucleus_features
from nucleoseg.classify.forest import Forest
from nucleoseg.classify.stacking import NucleusMap, fit_context_forest, training_set


def test_centres_match_the_evaluation_centroids():
    from nucleoseg.evaluation.classification import centroids

    rng = np.random.default_rng(0)
    labels = np.zeros((60, 80), np.int32)
    for k in range(1, 9):
        r, c = rng.integers(0, 50), rng.integers(0, 70)
        labels[r:r + rng.integers(2, 10), c:c + rng.integers(2, 10)] = k * 7  # sparse ids
    ids, ref = centroids(labels)
    np.testing.assert_allclose(nucleus_centres(labels, ids), ref, atol=1e-9)
    sparse = np.where(labels > 0, labels.astype(np.int64) * 10**9, 0)  # a slide's global ids
    np.testing.assert_allclose(nucleus_centres(sparse, ids.astype(np.int64) * 10**9), ref,
                               atol=1e-9)


def test_neighbour_means_by_hand():
    """Three nuclei on a line, 10 and 20 px from the first; one far away."""
    p = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.8]])
    centres = np.array([[0.0, 0.0], [0.0, 10.0], [0.0, -20.0], [900.0, 900.0]])
    out = neighbour_means(p, centres, sigmas=(10.0, 1.0))
    assert out.shape == (4, 4)
    g1, g2, g3 = np.exp(-0.5), np.exp(-2.0), np.exp(-4.5)  # d = 10, 20, 30 at sigma 10
    np.testing.assert_allclose(out[0, :2], (g1 * p[1] + g2 * p[2]) / (g1 + g2), rtol=1e-6)
    np.testing.assert_allclose(out[1, :2], (g1 * p[0] + g3 * p[2]) / (g1 + g3), rtol=1e-6)
    np.testing.assert_array_equal(out[3], 0)  # no neighbour within 3 sigma
    np.testing.assert_array_equal(out[:, 2:], 0)  # sigma 1: nobody within 3 px
    assert neighbour_means(p[:1], centres[:1]).shape == (1, 2 * len(NEIGHBOUR_SIGMAS))
    x = context_inputs(np.ones((4, 3)), p, centres, (10.0,))
    assert x.shape == (4, 3 + 2 + 2) and x.dtype == np.float32


def test_neighbour_means_equal_numpy_sums_exactly():
    """The compiled pair sums against ``numpy.add.at`` on a dense random field."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(5)
    centres = rng.uniform(0, 400, (500, 2))
    p = rng.dirichlet(np.ones(4), 500).astype(np.float16)
    out = neighbour_means(p, centres, sigmas=(15.0, 60.0))
    for k, s in enumerate((15.0, 60.0)):
        a, b = cKDTree(centres).query_pairs(3 * s, output_type="ndarray").T
        g = np.exp(-((centres[a] - centres[b]) ** 2).sum(1) / (2 * s * s))
        acc = np.zeros(p.shape)
        np.add.at(acc, a, g[:, None] * p[b])
        np.add.at(acc, b, g[:, None] * p[a])
        norm = np.bincount(a, g, 500) + np.bincount(b, g, 500)
        np.testing.assert_array_equal(
            out[:, 4 * k:4 * k + 4], (acc / np.maximum(norm, 1e-12)[:, None]).astype(np.float32))


def _clustered_maps(seed=0, tiles=6):
    """Tiles of two clusters of nuclei (class 0 left, class 1 right) whose own features say
    little (class-independent noise but for a weak hint): the neighbours carry the class."""
    rng = np.random.default_rng(seed)
    maps = []
    for t in range(tiles):
        centres = np.concatenate([rng.uniform(0, 80, (60, 2)),
                                  rng.uniform(0, 80, (60, 2)) + [0, 400]])
        y = np.repeat([0, 1], 60)
        f = rng.normal(size=(120, len(FEATURE_NAMES))).astype(np.float32)
        f[:, :3] += 1.0 * y[:, None]  # a weak hint in three features
        maps.append(NucleusMap(t, f, centres, np.arange(120), y))
    return maps


def test_the_context_forest_learns_from_the_neighbours():
    """Out-of-fold stacking on clustered nuclei: the context forest classifies held-out
    tiles far better than the first forest, whose features hold only a weak hint."""
    train, held = _clustered_maps(0), _clustered_maps(1, tiles=2)
    x, y = training_set(train)
    first = Forest.fit(x, y, 2, trees=20)
    logs = []
    context = fit_context_forest(train, 2, trees=20, folds=3, log=logs.append)
    assert len(logs) == 3
    acc1, acc2 = [], []
    for m in held:
        p1 = first.predict_proba(m.features)
        p2 = context.predict_proba(context_inputs(m.features, p1, m.centres))
        acc1.append((p1.argmax(1) == m.targets).mean())
        acc2.append((p2.argmax(1) == m.targets).mean())
    assert np.mean(acc1) < 0.85 and np.mean(acc2) > 0.95
    with pytest.raises(ValueError, match="two training tiles"):
        fit_context_forest(train[:1], 2, trees=5)


def test_context_forest_applies_round_trips_and_bad_files_are_refused(tmp_path):
    """A classifier with a context forest predicts through it, keeps it through save/load
    (same probabilities), and a card or arrays that do not fit are refused."""
    from tests.classify.test_classifier import _two_kinds

    img, lab, kinds = _two_kinds()
    ids, f = nucleus_features(img, lab)
    y = np.array([kinds[i] for i in ids])
    clf = NucleusClassifier.fit(f, y, ["a", "b"], trees=10)
    _, plain = clf.predict_proba(img, lab)
    centres = nucleus_centres(lab, ids)
    x = context_inputs(f, clf.forest.predict_proba(f), centres)
    clf.context_forest = Forest.fit(x, 1 - y, 2, trees=5)  # learns the opposite: visible
    clf.context_sigmas = NEIGHBOUR_SIGMAS
    _, stacked = clf.predict_proba(img, lab)
    np.testing.assert_allclose(stacked, clf.context_forest.predict_proba(x), rtol=1e-6)
    assert (stacked.argmax(1) != plain.argmax(1)).mean() > 0.9
    np.testing.assert_allclose(clf.predict_features(f, centres)[1], stacked, rtol=1e-6)
    back = NucleusClassifier.load(clf.save(tmp_path, "ctx"))
    assert back.context_sigmas == NEIGHBOUR_SIGMAS
    np.testing.assert_allclose(back.predict_proba(img, lab)[1], stacked, rtol=1e-6)

    card_path = tmp_path / "ctx.json"
    card = json.loads(card_path.read_text())
    assert card["context_forest"]["sigmas_px"] == list(NEIGHBOUR_SIGMAS)
    for bad in ({"sigmas_px": []}, {"sigmas_px": [0]}, {"sigmas_px": "x"}, {}):
        card_path.write_text(json.dumps({**card, "context_forest": bad}))
        with pytest.raises(ClassifierError, match="context_forest"):
            NucleusClassifier.load(tmp_path / "ctx.npz")
    # a context forest that reads more inputs than the card's scales give
    card_path.write_text(json.dumps({**card, "context_forest": {"sigmas_px": [15.0]}}))
    with pytest.raises(ClassifierError, match="inputs"):
        NucleusClassifier.load(tmp_path / "ctx.npz")
    # a card that names a context forest the file does not hold
    plain_path = NucleusClassifier.fit(f, y, ["a", "b"], trees=3).save(tmp_path, "plain")
    plain_card = json.loads(plain_path.with_suffix(".json").read_text())
    plain_path.with_suffix(".json").write_text(json.dumps(
        {**plain_card, "context_forest": {"sigmas_px": [15.0]}}))
    with pytest.raises(ClassifierError, match="lacks forest arrays"):
        NucleusClassifier.load(plain_path)
    # a card without the entry: the arrays are ignored, the first forest alone runs
    card_path.write_text(json.dumps({k: v for k, v in card.items() if k != "context_forest"}))
    np.testing.assert_allclose(NucleusClassifier.load(tmp_path / "ctx.npz").predict_proba(
        img, lab)[1], plain, rtol=1e-6)


def test_forest_check_refuses_broken_arrays():
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    forest = Forest.fit(x, (x[:, 0] > 0).astype(int), 2, trees=3)
    forest.check(4, 2)
    with pytest.raises(ValueError, match="classes"):
        forest.check(4, 3)
    with pytest.raises(ValueError, match="inputs"):
        forest.check(int(forest.feature.max()), 2)
    a = forest.arrays()
    bad = Forest(**{**a, "left": np.where(a["feature"] >= 0, 10**6, a["left"])})
    with pytest.raises(ValueError, match="children"):
        bad.check(4, 2)
    with pytest.raises(ValueError, match="roots"):
        Forest(**{**a, "roots": a["roots"] + 10**6}).check(4, 2)
    with pytest.raises(ValueError, match="length"):
        Forest(**{**a, "threshold": a["threshold"][:-1]}).check(4, 2)


def test_a_context_forest_fed_by_out_of_fold_patch_nets(tmp_path):
    """Each map's out-of-fold patch-net probabilities come from a net trained without its
    tile; the context forest then takes them beside the first forest's (and their
    neighbour means); a classifier holding it predicts through it, keeps it through
    save/load, falls back to the forest part where no net runs, and a card that names such
    a forest without a patch net is refused."""
    from tests.classify.test_classifier import _two_kinds

    from nucleoseg.classify.patch_net import nucleus_patches, train_patch_net
    from nucleoseg.classify.stacking import oof_patch_proba

    maps, patches, tiles = [], [], []
    for t in range(3):
        img, lab, kinds = _two_kinds(seed=t)
        ids, f, centres = nucleus_features(img, lab, with_centres=True)
        y = np.array([kinds[int(i)] for i in ids])
        maps.append(NucleusMap(t, f, centres, np.arange(len(ids)), y))
        patches.append(nucleus_patches(img, lab, ids, centres, context=True))
        tiles.append((img, lab))
    seen: list[int] = []

    def train(p, t):
        seen.append(len(t))
        return train_patch_net(p, t, 2, epochs=1, log=lambda _: None)

    logs: list[str] = []
    oof = oof_patch_proba(maps, patches, 2, train, folds=3, log=logs.append)
    sizes = [len(m.targets) for m in maps]
    # fold k trains on the two other tiles' nuclei
    assert seen == [sum(sizes) - s for s in sizes] and len(logs) == 3
    assert [o.shape for o in oof] == [(s, 2) for s in sizes]
    np.testing.assert_allclose([o.sum(1) for o in oof], [np.ones(s) for s in sizes], atol=1e-5)

    context = fit_context_forest(maps, 2, trees=10, folds=3, log=lambda _: None,
                                 patch_proba=oof)
    x, y = training_set(maps)
    clf = NucleusClassifier.fit(x, y, ["a", "b"], trees=10)
    clf.patch_net = train_patch_net(np.concatenate(patches), y, 2, epochs=1,
                                    log=lambda _: None)
    clf.patch_context, clf.patch_weight = True, 0.0
    clf.context_forest, clf.context_sigmas = context, NEIGHBOUR_SIGMAS
    clf.context_with_patch_net = True
    img, lab = tiles[0]
    ids, f, centres = nucleus_features(img, lab, with_centres=True)
    cnn = clf._patch_runner()(patches[0])
    by_hand = context.predict_proba(context_inputs(
        f, np.hstack([clf.forest.predict_proba(f), cnn]), centres))
    _, stacked = clf.predict_proba(img, lab)
    np.testing.assert_allclose(stacked, by_hand, atol=1e-5)
    # without the net (e.g. a Keras-only net in napari's process): the first forest
    np.testing.assert_allclose(clf.predict_features(f, centres)[1],
                               clf.forest.predict_proba(f), rtol=1e-6)

    path = clf.save(tmp_path, "net_ctx")
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["context_forest"]["patch_net_inputs"] is True
    back = NucleusClassifier.load(path)
    assert back.context_with_patch_net and back.patch_context
    np.testing.assert_allclose(back.predict_proba(img, lab)[1], stacked, atol=1e-3)
    no_net = {k: v for k, v in card.items() if k != "patch_net"}
    path.with_suffix(".json").write_text(json.dumps(no_net))
    with pytest.raises(ClassifierError, match="has no patch net"):
        NucleusClassifier.load(path)
    # a card that hides the net's inputs: the forest's width no longer fits
    card["context_forest"]["patch_net_inputs"] = False
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ClassifierError, match="inputs"):
        NucleusClassifier.load(path)
