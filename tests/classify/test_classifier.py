"""Per-nucleus features and the pickle-free forest classifier."""

import json

import numpy as np
import pytest

from nucleoseg.classify.classifier import (
    ClassifierError,
    NucleusClassifier,
    available_classifiers,
)
from nucleoseg.classify.features import FEATURE_NAMES, nucleus_features


def _two_kinds(seed=0):
    """Small dark round nuclei (class 0) and large pale elongated ones (class 1)."""
    from skimage.draw import disk, ellipse

    rng = np.random.default_rng(seed)
    img = np.full((200, 200, 3), (235, 200, 220), np.uint8)
    lab = np.zeros((200, 200), np.int32)
    kinds = {}
    k = 0
    for r in range(20, 200, 40):
        for c in range(20, 200, 40):
            k += 1
            if rng.random() < 0.5:
                rr, cc = disk((r, c), 5, shape=lab.shape)
                img[rr, cc] = (60, 30, 110)
                kinds[k] = 0
            else:
                rr, cc = ellipse(r, c, 6, 15, shape=lab.shape)
                img[rr, cc] = (150, 110, 180)
                kinds[k] = 1
            lab[rr, cc] = k
    return img, lab, kinds


def test_features_describe_each_nucleus():
    img, lab, kinds = _two_kinds()
    ids, f = nucleus_features(img, lab)
    assert list(ids) == sorted(kinds) and f.shape == (len(kinds), len(FEATURE_NAMES))
    assert np.isfinite(f).all()
    area = f[:, FEATURE_NAMES.index("area")]
    np.testing.assert_array_equal(area, np.bincount(lab.ravel())[ids])
    ecc = f[:, FEATURE_NAMES.index("eccentricity")]
    small = np.array([kinds[i] == 0 for i in ids])
    assert ecc[small].max() < 0.3 < ecc[~small].min()
    none_ids, none = nucleus_features(img, np.zeros_like(lab))
    assert none.shape == (0, len(FEATURE_NAMES)) and none_ids.size == 0
    with pytest.raises(ValueError, match="differ in size"):
        nucleus_features(img[:100], lab)


def _touching(seed=0):
    """Random-coloured overlapping discs: nuclei that touch, sit at the image border and
    have neighbours at every distance."""
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (160, 190, 3), dtype=np.uint8)
    lab = np.zeros((160, 190), np.int32)
    for k in range(1, 60):
        rr, cc = disk(tuple(rng.integers(0, (160, 190))), rng.integers(3, 11), shape=lab.shape)
        lab[rr, cc] = k
    return img, lab


def test_features_match_a_plain_reference():
    """The one-pass features equal per-nucleus loops over skimage/scipy (boundary pixels,
    colour means and spreads, the context ring, neighbour areas, Gaussian context)."""
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    from nucleoseg.classify.features import _STEP, CONTEXT_SIGMAS, RADII, RING
    from nucleoseg.io.stain import HED_FROM_RGB

    img, lab = _touching()
    ids, f = nucleus_features(img, lab)
    col = {name: f[:, k] for k, name in enumerate(FEATURE_NAMES)}
    rgb = img.astype(np.float64)
    od = -np.log(np.clip(rgb, 1, 255) / 255.0)
    chans = {"r": rgb[..., 0], "g": rgb[..., 1], "b": rgb[..., 2],
             "h": od @ HED_FROM_RGB[:, 0].astype(np.float64),
             "e": od @ HED_FROM_RGB[:, 1].astype(np.float64)}
    edge = find_boundaries(lab, mode="inner")
    grown = ndi.grey_dilation(lab, size=(2 * RING + 1,) * 2)
    centres = np.array([np.argwhere(lab == i).mean(axis=0) for i in ids])
    areas = np.array([(lab == i).sum() for i in ids])
    for k, i in enumerate(ids):
        own, ring = lab == i, (grown == i) & (lab == 0)
        assert col["boundary"][k] == (edge & own).sum()
        for c, v in chans.items():
            np.testing.assert_allclose(col[f"{c}_mean"][k], v[own].mean(), rtol=1e-4)
            np.testing.assert_allclose(col[f"{c}_std"][k], v[own].std(), rtol=1e-3,
                                       atol=1e-4)
            if c != "e" or ring.any():
                np.testing.assert_allclose(col[f"ring_{c}_mean"][k],
                                           v[ring].mean() if ring.any() else 0, rtol=1e-4,
                                           atol=1e-6)
        dist = np.hypot(*(centres - centres[k]).T)
        for r in RADII:
            assert col[f"neighbours_{int(r)}"][k] == (dist <= r).sum() - 1
        np.testing.assert_allclose(col["neighbour_area"][k], areas[dist <= RADII[-1]].mean(),
                                   rtol=1e-6)
    small = (-np.log(np.clip(img[::_STEP, ::_STEP].astype(np.float32), 1, 255) / 255.0)
             @ HED_FROM_RGB[:, :2])
    fg = (lab > 0)[::_STEP, ::_STEP].astype(np.float32)
    rc = np.clip((centres / _STEP).astype(int), 0, np.array(fg.shape) - 1)
    for sigma in CONTEXT_SIGMAS:
        h = ndi.gaussian_filter(np.ascontiguousarray(small[..., 0]), sigma / _STEP)
        cover = ndi.gaussian_filter(fg, sigma / _STEP)
        np.testing.assert_array_equal(col[f"context{sigma}_h_mean"], h[rc[:, 0], rc[:, 1]])
        np.testing.assert_array_equal(col[f"context{sigma}_cover"],
                                      cover[rc[:, 0], rc[:, 1]])


def test_pixel_sums_add_as_bincount_does():
    """The compiled per-label sums equal ``numpy.bincount`` over the same pixels, bit for
    bit (the shipped forests were fitted on features summed that way)."""
    from scipy import ndimage as ndi

    from nucleoseg.classify import kernels as K
    from nucleoseg.io.labels import inner_boundary
    from nucleoseg.io.stain import HED_FROM_RGB, OPTICAL_DENSITY

    img, lab = _touching()
    lab = lab.astype(np.int32)
    n = int(lab.max()) + 1
    grown = ndi.grey_dilation(lab, size=(13, 13))
    near = np.flatnonzero(grown)
    own = lab.ravel()[near]
    rgb = img.reshape(-1, 3)[near]
    hed = OPTICAL_DENSITY[rgb] @ HED_FROM_RGB
    edge = inner_boundary(lab).ravel()
    acc = np.zeros((n, K.SUM_COLUMNS))
    K.pixel_sums(near, own, grown.ravel(), edge, np.ascontiguousarray(rgb), hed,
                 lab.shape[1], acc)
    inside = own > 0
    fi, pix = own[inside], near[inside]
    ring = grown.ravel()[near[~inside]]
    r, c = np.divmod(pix, lab.shape[1])
    safe = np.maximum(np.bincount(fi, minlength=n), 1)
    expect = {K.AREA: np.bincount(fi, minlength=n), K.ROWS: np.bincount(fi, r, n),
              K.COLS: np.bincount(fi, c, n), K.RING_N: np.bincount(ring, minlength=n),
              K.BOUNDARY: np.bincount(fi[edge[pix]], minlength=n)}
    dy, dx = r - expect[K.ROWS][fi] / safe[fi], c - expect[K.COLS][fi] / safe[fi]
    for k, v in enumerate((dy * dy, dx * dx, dx * dy)):
        expect[K.MOMENTS + k] = np.bincount(fi, v, n)
    for ch, v in enumerate((*rgb.T, hed[:, 0], hed[:, 1])):
        vin = v[inside].astype(np.float32)
        expect[K.SUM + ch] = np.bincount(fi, vin, n)
        expect[K.SQUARES + ch] = np.bincount(fi, vin * vin, n)
        expect[K.RING_SUM + ch] = np.bincount(ring, v[~inside], n)
    assert len(expect) == K.SUM_COLUMNS
    for column, want in expect.items():
        np.testing.assert_array_equal(acc[:, column], want.astype(np.float64))


@pytest.mark.parametrize("shape", [(250, 250), (10, 13), (3, 40), (63, 1)])
def test_smoothed_context_maps_equal_scipy_exactly(shape):
    """The compiled first Gaussian pass and the pointwise second give
    ``scipy.ndimage.gaussian_filter`` bit for bit, on maps smaller than the kernel too."""
    from scipy import ndimage as ndi

    from nucleoseg.classify.features import _smooth_at

    rng = np.random.default_rng(shape[0])
    values = (rng.random(shape, dtype=np.float32) * 3).astype(np.float32)
    rows, cols = (rng.integers(0, n, 50) for n in shape)
    for sigma in (4.0, 12.0, 0.7):
        np.testing.assert_array_equal(_smooth_at(values, sigma, rows, cols),
                                      ndi.gaussian_filter(values, sigma)[rows, cols])


@pytest.mark.parametrize("shape", [(300, 340), (5, 7), (1, 30), (40, 1), (2, 2)])
def test_ring_dilation_equals_scipy(shape):
    """The compiled square dilation is ``scipy.ndimage.grey_dilation`` (reflected border,
    also where the square is wider than the image)."""
    from scipy import ndimage as ndi

    from nucleoseg.classify.kernels import dilate_square

    rng = np.random.default_rng(sum(shape))
    labels = (rng.integers(1, 60, shape) * (rng.random(shape) < 0.05)).astype(np.int32)
    for half in (6, 1, 20):
        np.testing.assert_array_equal(dilate_square(labels, half),
                                      ndi.grey_dilation(labels, size=(2 * half + 1,) * 2))


def test_forest_walk_refuses_cycles():
    from nucleoseg.classify.forest import Forest

    # node 0 splits on feature 0 at 0.5: left leaf 1 (class 0), right leaf 2 (class 1)
    tree = Forest(np.array([0, -1, -1]), np.array([0.5, 0, 0], np.float32),
                  np.array([1, 0, 0]), np.array([2, 0, 0]),
                  np.array([[0, 0], [1, 0], [0, 1]], np.float16), np.array([0]))
    np.testing.assert_array_equal(tree.predict_proba(np.array([[0.2], [0.5], [0.9]])),
                                  [[1, 0], [1, 0], [0, 1]])
    looped = Forest(np.array([0, 0]), np.array([0.5, 0.5], np.float32), np.array([1, 0]),
                    np.array([1, 0]), np.zeros((2, 2), np.float16), np.array([0]))
    with pytest.raises(ValueError, match="do not form trees"):
        looped.predict_proba(np.zeros((1, 1)))


def test_forest_matches_sklearn_and_round_trips(tmp_path):
    from sklearn.ensemble import RandomForestClassifier

    img, lab, kinds = _two_kinds()
    ids, f = nucleus_features(img, lab)
    y = np.array([kinds[i] for i in ids])
    clf = NucleusClassifier.fit(f, y, ["small", "large"], trees=20, seed=1)
    ref = RandomForestClassifier(20, max_depth=16, min_samples_leaf=2, random_state=1,
                                 class_weight="balanced_subsample", max_features="sqrt")
    ref.fit(f, y)
    np.testing.assert_allclose(clf.forest.predict_proba(f), ref.predict_proba(f), atol=2e-3)
    _, pred = clf.predict(img, lab)
    assert (pred == y).all()
    path = clf.save(tmp_path, "mine")
    assert oct(path.stat().st_mode & 0o777) != "0o600"
    back = NucleusClassifier.load(path)
    assert back.classes == ["small", "large"] and back.card["training"]["nuclei"] == len(y)
    np.testing.assert_array_equal(back.predict(img, lab)[1], pred)
    # the file is plain arrays: numpy refuses pickles, so loading never runs code
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {"feature", "threshold", "left", "right", "value", "roots"}


def _numpy_descent(forest, x):
    """Every row down every tree level by level in numpy, the mean of the float16 leaves."""
    feature, threshold, child, depth, _ = forest._walk
    n, trees = x.shape[0], forest.roots.size
    flat = np.ascontiguousarray(x, np.float32).ravel()
    row = np.repeat(np.arange(n) * x.shape[1], trees)
    node = np.tile(forest.roots.astype(np.int64), n)
    for _ in range(depth):
        node = child[2 * node + (flat[row + feature[node]] <= threshold[node])]
    return forest.value[node.reshape(n, trees)].mean(axis=1)


def test_the_compiled_descent_gives_the_numpy_walk_exactly():
    """Deep trees over many rows (more than one lane group, NaN and ties at thresholds):
    the same float16 probabilities, bit for bit."""
    from nucleoseg.classify.forest import Forest

    rng = np.random.default_rng(3)
    x = rng.normal(size=(700, 9)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 + rng.normal(scale=0.7, size=700) > 0.4).astype(int)
    y[x[:, 2] > 1.2] = 2
    forest = Forest.fit(x, y, n_classes=4, trees=37, max_depth=None, min_samples_leaf=1)
    probe = rng.normal(size=(333, 9)).astype(np.float32)
    probe[::7, 3] = np.nan
    probe[1::5, 0] = forest.threshold[forest.feature == 0][:1]  # exactly at a split
    for rows in (x, probe, probe[:1], probe[:17]):
        got = forest.predict_proba(rows)
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, _numpy_descent(forest, rows))
    assert forest.predict_proba(np.zeros((0, 9))).shape == (0, 4)


def test_bad_classifier_files_are_refused(tmp_path):
    img, lab, kinds = _two_kinds()
    ids, f = nucleus_features(img, lab)
    y = np.array([kinds[i] for i in ids])
    path = NucleusClassifier.fit(f, y, ["a", "b"], trees=3).save(tmp_path, "c")
    card = json.loads(path.with_suffix(".json").read_text())
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ClassifierError, match="corrupted"):
        NucleusClassifier.load(path)
    del card["sha256"]
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ClassifierError, match="no sha256"):
        NucleusClassifier.load(path)
    with pytest.raises(ClassifierError, match="no classifier named"):
        NucleusClassifier.load("nope")
    with pytest.raises(ValueError, match="two classes"):
        NucleusClassifier.fit(f, np.zeros(len(y), int), ["a", "b"])
    with pytest.raises(ClassifierError, match="shipped"):
        NucleusClassifier.fit(f, y, ["a", "b"], trees=2).save(
            available_classifiers()[0]["path"].parent, "x")


def test_shipped_consep_classifier_loads():
    names = {c["name"]: c for c in available_classifiers()}
    assert names["consep_types"]["source"] == "shipped"
    clf = NucleusClassifier.load("consep_types")
    assert clf.classes == ["other", "inflammatory", "epithelial", "spindle"]
    assert "validation" in clf.card and clf.card["sha256"]
    # the stages and weights chosen on the validation tiles (scripts/classifier_context.py)
    assert clf.context_forest is not None and clf.context_sigmas == (15.0, 30.0, 60.0)
    assert clf.class_weights == [4.0, 1.0, 1.0, 1.5]
    assert clf.patch_gate == 0.35  # scripts/classifier_context.py --gate-only


def test_class_weights_decide_and_round_trip(tmp_path):
    """Class weights multiply the probabilities (renormalised) in every prediction path,
    are saved in the card, and a card with bad weights is refused."""
    img, lab, kinds = _two_kinds()
    ids, f = nucleus_features(img, lab)
    y = np.array([kinds[i] for i in ids])
    clf = NucleusClassifier.fit(f, y, ["small", "large"], trees=10, seed=2)
    clf.forest.value[:] = [0.7, 0.3]  # every leaf says "small, 70 %"
    _, plain = clf.predict_proba(img, lab)
    np.testing.assert_allclose(plain, np.tile([0.7, 0.3], (len(ids), 1)), atol=1e-3)
    clf.class_weights = [1.0, 4.0]  # 0.7 x 1 < 0.3 x 4: "large", (0.7, 1.2) / 1.9
    _, weighted = clf.predict_proba(img, lab)
    np.testing.assert_allclose(weighted, np.tile([0.7, 1.2], (len(ids), 1)) / 1.9, atol=1e-3)
    assert (weighted.argmax(1) == 1).all()
    np.testing.assert_allclose(clf.predict_features(f)[1], weighted, rtol=1e-5)
    back = NucleusClassifier.load(clf.save(tmp_path, "weighted"))
    assert back.class_weights == [1.0, 4.0]
    np.testing.assert_array_equal(back.predict(img, lab)[1], weighted.argmax(1))
    card_path = tmp_path / "weighted.json"
    card = json.loads(card_path.read_text())
    for bad in ([1.0], [1.0, 0.0], [1.0, "x"], 3):
        card_path.write_text(json.dumps({**card, "class_weights": bad}))
        with pytest.raises(ClassifierError, match="class_weights"):
            NucleusClassifier.load(tmp_path / "weighted.npz")


@pytest.mark.slow
@pytest.mark.data
def test_consep_classifier_on_a_test_tile(data_root):
    """The shipped classifier on the true nuclei of a CoNSeP test tile: most agree."""
    from nucleoseg.io.consep import list_tiles

    tile = list_tiles("test", data_root)[0]
    image, labels, types = tile.image(), tile.labels(), tile.types()
    ids, idx = NucleusClassifier.load("consep_types").predict(image, labels)
    truth = np.array([types[int(i)] - 1 for i in ids])
    assert (idx == truth).mean() > 0.6


@pytest.mark.data
def test_train_classifier_command(tmp_path, data_root, capsys):
    """`nucleoseg train-classifier` on CoNSeP (true nuclei only, few trees): a classifier
    with its validation numbers in the card, loadable by path."""
    from nucleoseg.cli import main

    assert main(["train-classifier", "--data", str(data_root), "--out", str(tmp_path),
                 "--name", "t", "--segmentation-model", "none", "--trees", "10",
                 "--patch-epochs", "0"]) == 0
    clf = NucleusClassifier.load(tmp_path / "t.npz")
    val = clf.card["validation"]["true_nuclei"]
    assert val["f_d"] == 1.0 and 0.5 < val["accuracy"] <= 1.0
    assert clf.card["training"]["validation_tiles"] and "saved" in capsys.readouterr().out
    # class weights are chosen on the validation tiles from a grid that holds "no weights",
    # so the chosen rule is at least as good there as the plain argmax
    plain = clf.card["validation"]["by_patch_weight"]["0.0"]
    names = ("other", "inflammatory", "epithelial", "spindle")
    if clf.class_weights is not None:
        assert clf.card["validation"]["class_weights"]["chosen"] == clf.class_weights
    # the context forest is kept only when it scores at least as well on validation
    ctx = clf.card["validation"]["context_forest"]
    assert ctx["used"] == (clf.context_forest is not None)
    mean = {k: np.mean([ctx[k][f"f_{c}"] for c in names]) for k in ("with", "without")}
    assert ctx["used"] == (mean["with"] > mean["without"])
    assert np.mean([val[f"f_{c}"] for c in names]) >= np.mean([plain[f"f_{c}"] for c in names])


def test_patch_net_joins_the_forest_and_round_trips(tmp_path):
    """A patch CNN trained on two kinds of nuclei is saved beside the forest with its
    checksum, loads with the same probabilities, and a changed or escaping file is refused."""
    from nucleoseg.classify.patch_net import PATCH, nucleus_patches, train_patch_net

    img, lab, kinds = _two_kinds()
    ids, feats = nucleus_features(img, lab)
    y = np.array([kinds[int(i)] for i in ids])
    patches = nucleus_patches(img, lab, ids)
    assert patches.shape == (len(ids), PATCH, PATCH, 4) and patches.dtype == np.uint8
    assert (patches[:, PATCH // 2, PATCH // 2, 3] == 255).all()  # the nucleus is marked
    clf = NucleusClassifier.fit(feats, y, ["small", "large"], trees=10)
    logs: list[str] = []
    clf.patch_net = train_patch_net(patches, y, 2, epochs=3, log=logs.append)
    clf.patch_weight = 0.5
    assert len(logs) == 3 and "epoch 3/3" in logs[-1]
    _, before = clf.predict_proba(img, lab)
    path = clf.save(tmp_path, "mine")
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["patch_net"]["file"] == "mine.keras" and card["patch_net"]["weight"] == 0.5
    # and its OpenVINO file, which runs without Keras
    assert card["patch_net"]["openvino"]["file"] == "mine_patch_net.xml"
    assert (tmp_path / "mine_patch_net.bin").is_file()
    loaded = NucleusClassifier.load(path)
    assert loaded.runs_without_keras and loaded.patch_ir == tmp_path / "mine_patch_net.xml"
    _, after = loaded.predict_proba(img, lab)
    np.testing.assert_allclose(after, before, atol=1e-3)
    assert not np.allclose(after, clf.forest.predict_proba(feats))  # the net takes part
    # features given by the caller are used as they are
    _, given = loaded.predict_proba(img, lab, (ids, feats))
    np.testing.assert_array_equal(given, after)
    # saving a loaded classifier copies both files of its net
    again = NucleusClassifier.load(loaded.save(tmp_path / "copy", "mine2"))
    assert again.patch_ir == tmp_path / "copy" / "mine2_patch_net.xml"
    np.testing.assert_array_equal(again.predict_proba(img, lab)[1], after)

    ir_card = json.loads(json.dumps(card))
    with open(tmp_path / "mine_patch_net.bin", "ab") as f:
        f.write(b"x")
    with pytest.raises(ClassifierError, match="mine_patch_net.xml is corrupted"):
        NucleusClassifier.load(path)
    ir_card["patch_net"]["openvino"]["file"] = "../mine_patch_net.xml"
    path.with_suffix(".json").write_text(json.dumps(ir_card))
    with pytest.raises(ClassifierError, match="OpenVINO file .* is missing"):
        NucleusClassifier.load(path)
    del card["patch_net"]["openvino"]  # a net without its OpenVINO file runs with Keras
    path.with_suffix(".json").write_text(json.dumps(card))
    plain = NucleusClassifier.load(path)
    assert plain.patch_ir is None and not plain.runs_without_keras
    np.testing.assert_allclose(plain.predict_proba(img, lab)[1], before, atol=1e-3)

    card["patch_net"]["file"] = "../elsewhere.keras"
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ClassifierError, match="patch net .* is missing"):
        NucleusClassifier.load(path)
    card["patch_net"]["file"] = "mine.keras"
    path.with_suffix(".json").write_text(json.dumps(card))
    with open(tmp_path / "mine.keras", "ab") as f:
        f.write(b"x")
    with pytest.raises(ClassifierError, match="corrupted or was changed"):
        NucleusClassifier.load(path)


def test_two_scale_patches_and_their_net_round_trip(tmp_path):
    """A two-scale patch holds the shipped patch, then the 96 px window at half resolution
    (2x2 means of the RGB and of the nucleus mask), reflected at the borders; a two-scale
    net is saved with its context size, loads as one, gives the same probabilities, and a
    card asking another context size is refused."""
    from nucleoseg.classify.patch_net import (
        CONTEXT,
        PATCH,
        nucleus_patches,
        train_patch_net,
    )

    img, lab, kinds = _two_kinds()
    noise = np.random.default_rng(1).integers(-20, 21, img.shape)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)  # no two rows alike
    ids, feats = nucleus_features(img, lab)
    y = np.array([kinds[int(i)] for i in ids])
    near = nucleus_patches(img, lab, ids)
    both = nucleus_patches(img, lab, ids, context=True)
    assert both.shape == (len(ids), PATCH, PATCH, 8) and both.dtype == np.uint8
    np.testing.assert_array_equal(both[..., :4], near)
    # by hand: nucleus k's window, its centre rounded to the half-resolution grid
    half_rgb = img.reshape(100, 2, 100, 2, 3).astype(float).mean((1, 3))
    half_fg = (lab > 0).reshape(100, 2, 100, 2).mean((1, 3)) * 255
    centre = {int(i): np.argwhere(lab == i).mean(0) for i in ids}
    q = PATCH // 2
    for k in (0, len(ids) // 2):
        r, c = np.round(centre[int(ids[k])] / 2).astype(int)
        for dr, dc in ((0, 0), (-q, -q), (q - 1, 5)):
            rr, cc = r + dr, c + dc
            if 0 <= rr < 100 and 0 <= cc < 100:
                np.testing.assert_array_equal(both[k, q + dr, q + dc, 4:7],
                                              np.round(half_rgb[rr, cc]))
                assert both[k, q + dr, q + dc, 7] == np.round(half_fg[rr, cc])
    # the first nucleus sits 20 px from the top: its window reflects there
    r0 = int(np.round(centre[int(ids[0])][0] / 2))
    np.testing.assert_array_equal(both[0, q - r0 - 1, :, 4:], both[0, q - r0 + 1, :, 4:])
    assert CONTEXT == 2 * PATCH

    clf = NucleusClassifier.fit(feats, y, ["small", "large"], trees=10)
    clf.patch_net = train_patch_net(both, y, 2, epochs=2, log=lambda _: None)
    assert clf.patch_net.inputs[0].shape[-1] == 8
    clf.patch_weight, clf.patch_context = 1.0, True
    _, before = clf.predict_proba(img, lab)
    path = clf.save(tmp_path, "wide")
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["patch_net"]["context"] == CONTEXT
    loaded = NucleusClassifier.load(path)
    assert loaded.patch_context and loaded.runs_without_keras
    np.testing.assert_allclose(loaded.predict_proba(img, lab)[1], before, atol=1e-3)
    card["patch_net"]["context"] = 64
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ClassifierError, match="64-px context window"):
        NucleusClassifier.load(path)


def test_the_shipped_classifier_runs_whole_without_keras(tmp_path):
    """napari's process must never import TensorFlow (it cannot share the process with
    Mesa's OpenGL): the shipped classifier's patch net runs from its OpenVINO file, so
    loading and applying it whole (forest and net) imports no Keras, and gives the classes
    the Keras net gives."""
    import subprocess
    import sys

    img, lab, _ = _two_kinds()
    np.savez(tmp_path / "pair.npz", img=img, lab=lab)
    code = ("import sys, numpy as np\nfrom nucleoseg.classify.classifier import "
            "NucleusClassifier\n"
            f"pair = np.load({str(tmp_path / 'pair.npz')!r})\n"
            "clf = NucleusClassifier.load('consep_types')\n"
            "ids, proba = clf.predict_proba(pair['img'], pair['lab'])\n"
            f"np.save({str(tmp_path / 'proba.npy')!r}, proba)\n"
            "print(clf.patch_net is not None, clf.runs_without_keras, 'keras' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["True", "True", "False"]
    # the same classifier with its Keras net (read on first use) in this process
    keras_clf = NucleusClassifier.load("consep_types")
    keras_clf.patch_ir = None
    _, ref = keras_clf.predict_proba(img, lab)
    np.testing.assert_allclose(np.load(tmp_path / "proba.npy"), ref, atol=1e-3)


def test_global_slide_ids_are_described_like_small_ids():
    """A whole slide's blocks carry global ids up to width x height: features, patches,
    classes, centroids, measurements and GeoJSON of such labels equal those of the same
    nuclei numbered 1..N (before, one nucleus with id 3e8 took 53 s and 11 GB in
    regionprops; ids near 2^32 overflowed int32)."""
    from nucleoseg.classify.patch_net import nucleus_patches
    from nucleoseg.evaluation.classification import centroids
    from nucleoseg.io.geojson import labels_to_geojson, measure_nuclei
    from nucleoseg.io.labels import compact_ids

    img, lab, _ = _two_kinds()
    big = np.where(lab > 0, lab.astype(np.uint32) * 150_000_000 + 7, 0).astype(np.uint32)
    assert int(big.max()) > 2**31
    to_big = {int(i): int(i) * 150_000_000 + 7 for i in np.unique(lab) if i}

    compact, original = compact_ids(big)
    np.testing.assert_array_equal(compact, lab)
    assert [int(v) for v in original[1:]] == sorted(to_big.values())
    assert compact_ids(lab)[1] is None  # small ids stay as they are

    ids, feats = nucleus_features(img, lab)
    big_ids, big_feats = nucleus_features(img, big)
    assert [int(i) for i in big_ids] == [to_big[int(i)] for i in ids]
    np.testing.assert_array_equal(big_feats, feats)
    some = ids[::3]
    _, part = nucleus_features(img, big, np.array([to_big[int(i)] for i in some]))
    np.testing.assert_array_equal(part, nucleus_features(img, lab, some)[1])
    with pytest.raises(ValueError, match="ids not in the labels"):
        nucleus_features(img, big, np.array([5]))
    np.testing.assert_array_equal(
        nucleus_patches(img, big, big_ids), nucleus_patches(img, lab, ids))

    clf = NucleusClassifier.fit(feats, (np.arange(len(ids)) % 2), ["a", "b"], trees=5)
    np.testing.assert_array_equal(clf.predict(img, big)[1], clf.predict(img, lab)[1])

    c_ids, c_xy = centroids(lab)
    b_ids, b_xy = centroids(big)
    assert [int(i) for i in b_ids] == [to_big[int(i)] for i in c_ids]
    np.testing.assert_array_equal(b_xy, c_xy)

    rows = measure_nuclei(lab, img, 0.25)
    big_rows = measure_nuclei(big, img, 0.25)
    assert [r["id"] for r in big_rows] == [to_big[r["id"]] for r in rows]
    assert [{k: v for k, v in r.items() if k != "id"} for r in big_rows] == \
        [{k: v for k, v in r.items() if k != "id"} for r in rows]
    small_geo = labels_to_geojson(lab)["features"]
    big_geo = labels_to_geojson(big)["features"]
    assert [f["id"] for f in big_geo] == [to_big[f["id"]] for f in small_geo]
    assert [f["geometry"] for f in big_geo] == [f["geometry"] for f in small_geo]


def test_patch_gate_runs_the_net_only_on_unsure_nuclei(tmp_path):
    """With a gate, the patch net sees only the nuclei whose forest margin is below it; the
    others keep the forest's probabilities, the rest are as without a gate; the gate is kept
    in the card and a bad one is refused."""
    from nucleoseg.classify.forest import forest_margin
    from nucleoseg.classify.patch_net import nucleus_patches, train_patch_net

    img, lab, kinds = _two_kinds()
    ids, feats = nucleus_features(img, lab)
    y = np.array([kinds[int(i)] for i in ids])
    clf = NucleusClassifier.fit(feats, y, ["small", "large"], trees=10, seed=1)
    clf.forest.value[:] = np.random.default_rng(0).dirichlet((1, 1), len(clf.forest.value))
    clf.patch_net = train_patch_net(nucleus_patches(img, lab, ids), y, 2, epochs=1)
    clf.patch_weight = 0.5
    _, ungated = clf.predict_proba(img, lab)
    forest = clf.forest.predict_proba(feats)
    margin = forest_margin(forest)
    clf.patch_gate = float(np.median(margin))
    unsure = margin < clf.patch_gate
    assert 0 < unsure.sum() < len(ids)
    runner, seen = clf._runner, []
    clf._runner = lambda patches: (seen.append(len(patches)), runner(patches))[1]
    _, gated = clf.predict_proba(img, lab)
    assert seen == [int(unsure.sum())]
    np.testing.assert_allclose(gated[~unsure], forest[~unsure], atol=1e-6)
    np.testing.assert_allclose(gated[unsure], ungated[unsure], atol=1e-3)
    clf.patch_gate = 0.0  # nothing is unsure: the net does not run
    seen.clear()
    np.testing.assert_allclose(clf.predict_proba(img, lab)[1], forest, atol=1e-6)
    assert seen == []

    clf.patch_gate = float(np.median(margin))
    path = clf.save(tmp_path, "gated")
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["patch_net"]["gate"]["margin"] == clf.patch_gate
    back = NucleusClassifier.load(path)
    assert back.patch_gate == clf.patch_gate
    np.testing.assert_allclose(back.predict_proba(img, lab)[1], gated, atol=1e-3)
    for bad in (1.5, -0.1, "x"):
        card["patch_net"]["gate"]["margin"] = bad
        path.with_suffix(".json").write_text(json.dumps(card))
        with pytest.raises(ClassifierError, match="gate"):
            NucleusClassifier.load(path)
    del card["patch_net"]["gate"]  # a card without a gate: the net runs on every nucleus
    path.with_suffix(".json").write_text(json.dumps(card))
    assert NucleusClassifier.load(path).patch_gate is None


def test_the_gate_chosen_keeps_the_ungated_classes():
    """Hand-built validation inputs: a patch net (weight 0.5) that says (0.2, 0.8) flips the
    forest's "class 0" exactly where the forest's margin is below 0.6, so the smallest gate
    that keeps the ungated classes is 0.6 (0.5 changes a tenth of them)."""
    from nucleoseg.classify.gate import choose_patch_gate, gated_classes

    clf = NucleusClassifier.load("consep_types")
    clf.class_weights, clf.patch_weight = None, 0.5
    m = (np.arange(100) + 0.5) / 100
    forest = np.zeros((100, 4))
    forest[:, 2], forest[:, 3] = 0.5 + m / 2, 0.5 - m / 2
    cnn = np.zeros((100, 4))
    cnn[:, 2], cnn[:, 3] = 0.2, 0.8
    proba = np.hstack([forest, cnn])
    classes, runs = gated_classes(clf, proba, None)
    np.testing.assert_array_equal(classes, np.where(m < 0.6, 3, 2))
    assert runs.all()
    classes, runs = gated_classes(clf, proba, 0.5)
    np.testing.assert_array_equal(runs, m < 0.5)
    assert ((classes == 3) == (m < 0.5)).all()
    centres = np.stack([np.arange(100) * 30.0, np.zeros(100)], 1)
    truth = np.where(m < 0.6, 4, 3)
    validation: dict = {}
    choose_patch_gate(clf, [(proba, centres, centres, truth)], validation, "v", log=lambda s: 0)
    assert clf.patch_gate == 0.6
    record = validation["patch_gate"]
    assert record["by_gate"]["0.5"]["agreement"] == 0.9
    assert record["by_gate"]["0.6"] == {"agreement": 1.0, "net_share": 0.6, "mean_f_c": 1.0}
    assert validation["v"]["accuracy"] == 1.0


class _Tile:
    """A validation tile held in memory, read like :class:`nucleoseg.io.consep.ConsepTile`."""

    def __init__(self, image, labels, types):
        self._image, self._labels, self._types = image, labels, types

    def image(self):
        return self._image

    def labels(self):
        return self._labels

    def types(self):
        return self._types


def test_the_recipe_chooses_a_gate_after_the_class_weights():
    """`choose_on_validation` with a patch net the forest needs (its leaves are noise): the
    net is kept, then a gate is tried, recorded and set; the recorded scores are the
    classifier's own on the tiles."""
    from nucleoseg.classify.gate import PATCH_GATES
    from nucleoseg.classify.patch_net import nucleus_patches, train_patch_net
    from nucleoseg.classify.recipe import CONSEP_CLASSES, choose_on_validation, evaluate_classifier

    tiles = []
    for seed in (0, 1):
        img, lab, kinds = _two_kinds(seed)
        tiles.append(_Tile(img, lab, {i: k + 2 for i, k in kinds.items()}))
    img, lab, kinds = _two_kinds(2)
    ids, feats = nucleus_features(img, lab)
    y = np.array([kinds[int(i)] + 1 for i in ids])  # inflammatory, epithelial
    clf = NucleusClassifier.fit(feats, y, CONSEP_CLASSES, trees=10, seed=1)
    clf.forest.value[:] = np.random.default_rng(0).dirichlet((1,) * 4, len(clf.forest.value))
    clf.patch_net = train_patch_net(nucleus_patches(img, lab, ids), y, 4, epochs=8)
    validation = choose_on_validation(clf, None, tiles, None, "true_nuclei", 10, 0,
                                      log=lambda s: None)
    assert clf.patch_net is not None and clf.patch_weight > 0
    record = validation["patch_gate"]
    assert set(record["by_gate"]) == {str(g) for g in PATCH_GATES}
    assert clf.patch_gate == record["chosen"]
    shares = [record["by_gate"][str(g)]["net_share"] for g in PATCH_GATES]
    assert shares == sorted(shares)  # a larger gate lets more nuclei through
    assert "margin is below" in clf.card["description"] or clf.patch_gate is None
    own = evaluate_classifier(clf, tiles)
    assert own["accuracy"] == validation["true_nuclei"]["accuracy"]
