import numpy as np
import pytest
from skimage.draw import disk

from nucleoseg.inference.postprocess import PostprocessParams, probabilities_to_labels
from nucleoseg.training.data import make_targets


def test_touching_nuclei_are_separated_by_interior_markers():
    lab = np.zeros((60, 60), np.int32)
    lab[disk((30, 20), 10)] = 1
    rr, cc = disk((30, 38), 10)
    free = lab[rr, cc] == 0
    lab[rr[free], cc[free]] = 2
    probs = make_targets(lab).astype(np.float32)
    out = probabilities_to_labels(probs, PostprocessParams(min_size=4))
    assert out.max() == 2
    assert ((out > 0) == (lab > 0)).all()
    # without the interior channel the two discs would merge under a plain threshold
    from scipy import ndimage as ndi

    assert ndi.label(lab > 0)[1] == 1


def test_min_size_and_unmarked_pieces():
    probs = np.zeros((40, 40, 2), np.float32)
    probs[5:15, 5:15, 0] = 0.9  # no interior: becomes its own object
    probs[30:32, 30:32, 0] = 0.9  # 4 px: dropped
    out = probabilities_to_labels(probs, PostprocessParams(min_size=10))
    assert out.max() == 1 and (out[5:15, 5:15] == 1).all()


def test_single_channel_uses_distance_markers():
    lab = np.zeros((40, 40), np.int32)
    lab[disk((20, 20), 8)] = 1
    out = probabilities_to_labels((lab > 0).astype(np.float32))
    assert out.max() == 1


def _touching_discs(seed: int, shape=(300, 300), n=120):
    """Overlapping discs with a smooth interior map: many multi-marker pieces and ties."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    interior = np.zeros(shape, np.float32)
    for _ in range(n):
        r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        rad = rng.integers(4, 12)
        d = np.sqrt((yy - r) ** 2 + (xx - c) ** 2)
        interior = np.maximum(interior, np.clip(1 - d / rad, 0, 1))
    interior = np.round(interior * 16) / 16  # quantised: plenty of equal elevations
    return interior > 0, interior


def test_flood_markers_matches_whole_image_watershed():
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    from nucleoseg.inference.postprocess import flood_markers

    for seed in range(4):
        mask, interior = _touching_discs(seed)
        markers, n = ndi.label(interior >= 0.5)
        ref = watershed(-interior, markers, mask=mask)
        got = flood_markers(-interior, markers, mask)
        np.testing.assert_array_equal(flood_markers(interior, markers, mask, invert=True), got)
        assert got.dtype == np.int32 and got.shape == ref.shape
        assert set(np.unique(got)) == set(np.unique(ref))  # every marker floods a region
        assert ((got > 0) == (ref > 0)).all()
        # only queue ties between equal elevations may be broken differently
        assert np.mean(got[mask] == ref[mask]) > 0.999
        # pieces with a single marker are identical
        pieces, _ = ndi.label(mask)
        for piece in np.unique(pieces[markers > 0]):
            inside = pieces == piece
            if len(np.unique(markers[inside & (markers > 0)])) == 1:
                np.testing.assert_array_equal(got[inside], ref[inside])


def test_fill_holes_equals_scipy():
    from scipy import ndimage as ndi

    from nucleoseg.inference.postprocess import fill_holes

    rng = np.random.default_rng(1)
    for density in (0.3, 0.5, 0.7):
        mask = ndi.binary_opening(rng.random((120, 150)) < density)
        np.testing.assert_array_equal(fill_holes(mask), ndi.binary_fill_holes(mask))
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False
    assert fill_holes(ring)[4, 4] and not fill_holes(np.zeros((3, 3), bool)).any()
    assert fill_holes(np.ones((3, 3), bool)).all()


def test_unmarked_pieces_numbered_as_a_second_labelling_would():
    """probabilities_to_labels == flood, then label the unflooded rest, then relabel (in
    raster order of the first pixels)."""
    from scipy import ndimage as ndi

    from nucleoseg.inference.postprocess import drop_small_and_relabel, fill_holes, flood_markers

    params = PostprocessParams(threshold=0.5, interior_threshold=0.6, min_size=20,
                               min_marker_size=4)
    for seed in range(4):
        mask, interior = _touching_discs(seed)
        nucleus = np.where(mask, 0.9, 0.1).astype(np.float32)
        # blank the interior of some discs: their pieces have no marker
        rng = np.random.default_rng(seed)
        pieces, n = ndi.label(mask)
        blank = np.isin(pieces, rng.choice(np.arange(1, n + 1), n // 3, replace=False))
        interior = np.where(blank, 0.0, interior).astype(np.float32)
        probs = np.stack([nucleus, interior], -1)
        got = probabilities_to_labels(probs, params)

        fg = fill_holes(nucleus >= params.threshold)
        markers, m = ndi.label((interior >= params.interior_threshold) & fg)
        small = np.bincount(markers.ravel(), minlength=m + 1) < params.min_marker_size
        small[0] = False
        markers[small[markers]] = 0
        ref = flood_markers(-interior, markers, fg)
        rest, n_rest = ndi.label(fg & (ref == 0))
        assert n_rest > 0
        ref[rest > 0] = rest[rest > 0] + ref.max()
        np.testing.assert_array_equal(
            got, drop_small_and_relabel(ref, params.min_size, raster_order=True))


def test_tta_averages_the_four_flips(threshold_model_path, tiny_unet_path):
    """`tta`: each tile's probabilities are the mean of the model on the tile and its three
    flips (flipped back); a model whose filters are symmetric gives the plain probabilities."""
    import numpy as np

    from _helpers import synthetic_nuclei
    from nucleoseg.inference.predict import FLIPS, _batch_predictor, predict_padded, run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.inference.tiling import fit_grid, pad_image

    img, _ = synthetic_nuclei((96, 128), n=6)
    seg = Segmenter.load(str(threshold_model_path), precision="float32")
    plain = run(seg.probabilities(img))
    seg.update(tta=True)
    assert seg.flips == 4
    np.testing.assert_allclose(run(seg.probabilities(img)), plain, atol=1e-5)
    # by hand, for a net whose flips differ and an image of several tiles
    img, _ = synthetic_nuclei((150, 230), n=12)
    seg = Segmenter.load(str(tiny_unet_path), precision="float32", tile=96, halo=16,
                         tta=True)
    averaged = run(seg.probabilities(img))
    grid = fit_grid(img.shape[:2], tile=96, halo=16, stride=seg.stride)
    assert len(grid) > 1
    padded = pad_image(img, grid)
    model = _batch_predictor(seg.model)

    def flipped(fr, fc):
        def net(batch):
            return model(np.ascontiguousarray(batch[:, ::fr, ::fc]))[:, ::fr, ::fc]
        return run(predict_padded(net, padded, grid, seg.batch_size))

    maps = [flipped(-1 if a else 1, -1 if b else 1) for a, b in FLIPS]
    assert np.abs(maps[0] - maps[3]).max() > 1e-3
    np.testing.assert_allclose(averaged, np.mean(maps, axis=0)[..., :averaged.shape[-1]],
                               atol=1e-5)
    with pytest.raises(ValueError, match="flips must be 1 or 4"):
        run(predict_padded(seg.model, padded, grid, flips=2))


def test_drop_small_and_relabel_is_a_size_filter_then_sequential_ids():
    from skimage.segmentation import relabel_sequential

    from nucleoseg.inference.postprocess import drop_small_and_relabel

    rng = np.random.default_rng(5)
    labels = np.kron(rng.integers(0, 40, (30, 30)), np.ones((3, 3), np.int64)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.05] = 77  # scattered pixels: one small-ish object
    for min_size in (1, 9, 30, 200):
        sizes = np.bincount(labels.ravel())
        filtered = np.where(sizes[labels] >= min_size, labels, 0)
        expected = relabel_sequential(filtered)[0]
        np.testing.assert_array_equal(drop_small_and_relabel(labels, min_size), expected)
    assert drop_small_and_relabel(np.zeros((4, 4), np.int32), 5).max() == 0
    assert drop_small_and_relabel(np.zeros((0, 3), np.int32), 5).shape == (0, 3)


def test_raster_order_numbers_by_first_pixel():
    """``raster_order``: the same objects, numbered by where each first appears scanning rows
    (what ``skimage.measure.label`` of separated objects gives), checked by hand and on
    random labels."""
    from nucleoseg.io.labels import drop_small_and_relabel, first_pixels

    labels = np.array([[0, 5, 5, 0],
                       [3, 0, 0, 9],
                       [3, 9, 9, 9],
                       [7, 0, 0, 0]], np.int32)
    np.testing.assert_array_equal(drop_small_and_relabel(labels, 1, raster_order=True),
                                  [[0, 1, 1, 0], [2, 0, 0, 3], [2, 3, 3, 3], [4, 0, 0, 0]])
    # 7 has one pixel: dropped, and the order of the rest stays
    np.testing.assert_array_equal(drop_small_and_relabel(labels, 2, raster_order=True),
                                  [[0, 1, 1, 0], [2, 0, 0, 3], [2, 3, 3, 3], [0, 0, 0, 0]])
    np.testing.assert_array_equal(first_pixels(labels)[[3, 5, 7, 9]], [4, 1, 12, 7])
    assert first_pixels(labels)[0] == labels.size and first_pixels(labels)[4] == labels.size
    rng = np.random.default_rng(2)
    noisy = rng.integers(0, 50, (40, 30)).astype(np.int32)
    got = drop_small_and_relabel(noisy, 3, raster_order=True)
    sizes = np.bincount(noisy.ravel(), minlength=50)
    kept = np.where(sizes[noisy] >= 3, noisy, 0)
    _, first = np.unique(kept.ravel(), return_index=True)
    order = kept.ravel()[np.sort(first)]
    lut = np.zeros(50, np.int32)
    lut[order[order > 0]] = np.arange(1, (order > 0).sum() + 1)
    np.testing.assert_array_equal(got, lut[kept])


def _strip_map(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """A probability map of touching discs, a few pieces far taller than a strip's first
    context (so some strips must widen theirs), and noise."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    rows, cols = shape
    yy, xx = np.mgrid[:rows, :cols]
    nucleus = np.zeros(shape, np.float32)
    interior = np.zeros(shape, np.float32)
    for _ in range(rows * cols // 900):
        cy, cx, r = rng.uniform(0, rows), rng.uniform(0, cols), rng.uniform(3, 11)
        box = (slice(max(int(cy - r) - 1, 0), int(cy + r) + 2),
               slice(max(int(cx - r) - 1, 0), int(cx + r) + 2))
        d = np.hypot(yy[box] - cy, xx[box] - cx)
        nucleus[box] = np.maximum(nucleus[box], np.clip(1.2 - d / r, 0, 1))
        interior[box] = np.maximum(interior[box], np.clip(1 - d / (r - 1.5), 0, 1))
    for _ in range(3):  # long vertical ribbons with bumps of interior along them
        x = int(rng.integers(5, cols - 5))
        y0 = int(rng.integers(0, rows // 2))
        nucleus[y0:y0 + rows // 2, x - 3:x + 3] = 0.9
        interior[y0:y0 + rows // 2:7, x - 1:x + 1] = rng.uniform(0.5, 1, 1)
    nucleus += rng.normal(0, 0.05, shape).astype(np.float32)
    interior = ndi.gaussian_filter(interior, 0.7) + rng.normal(0, 0.03, shape)
    return np.clip(np.stack([nucleus, interior], -1), 0, 1).astype(np.float32)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # the one-pass fallback must not be needed
def test_strips_give_the_labels_of_one_pass(monkeypatch):
    """The strip-parallel post-processing equals one pass exactly, for both marker rules,
    including where pieces run through several strips and the context must grow."""
    from nucleoseg.inference import postprocess_strips as strips

    monkeypatch.setattr(strips, "MIN_STRIP_ROWS", 64)
    for seed, params in enumerate([
            PostprocessParams(threshold=0.5, interior_threshold=0.5, min_size=8,
                              min_marker_size=4, marker_dynamic=1.5, marker_sigma=1.0),
            PostprocessParams(threshold=0.4, interior_threshold=0.6, min_size=15,
                              min_marker_size=3),
            PostprocessParams(threshold=0.5, interior_threshold=0.5, min_size=4,
                              marker_dynamic=0.8, marker_sigma=2.0)]):
        probs = _strip_map(seed, (403, 157))
        one = probabilities_to_labels(probs, params, workers=1)
        assert one.max() > 50
        for workers in (2, 3, 6):
            assert strips.strip_count(probs.shape[0], workers) == workers
            got = strips.labels_by_strips(probs, params, workers, context=8)
            np.testing.assert_array_equal(got, one)
        np.testing.assert_array_equal(probabilities_to_labels(probs, params, workers=3), one)
    assert strips.strip_count(100, 8) == 1  # too short to cut


def _two_touching_interiors(dip: float):
    """Two discs whose interior probabilities meet at ``dip`` (above any usual threshold)
    on the line between their centres."""
    yy, xx = np.mgrid[:60, :70]
    fg = np.zeros((60, 70), bool)
    interior = np.zeros((60, 70), np.float32)
    for c in (22, 46):
        d = np.hypot(yy - 30, xx - c)
        fg |= d <= 13
        # 0.999 at the centre, ``dip`` where the discs meet (12 px away)
        interior = np.maximum(interior, np.where(d <= 13, 0.999 - (0.999 - dip) * d / 12, 0))
    probs = np.stack([fg.astype(np.float32), np.clip(interior, 0, 1)], -1)
    return probs


def test_dynamic_markers_split_interiors_that_meet_above_the_threshold():
    probs = _two_touching_interiors(dip=0.95)
    plain = PostprocessParams(threshold=0.5, interior_threshold=0.9, min_size=8)
    assert probabilities_to_labels(probs, plain).max() == 1  # one cut: the pair merges
    # logit(0.999) - logit(0.95) = 3.96: the dip is deep enough for h = 1.5 ...
    dyn = plain.replace(interior_threshold=0.5, marker_dynamic=1.5, marker_sigma=1.0)
    out = probabilities_to_labels(probs, dyn)
    assert out.max() == 2
    assert ((out > 0) == (probs[..., 0] > 0)).all()
    assert out[30, 22] != out[30, 46]
    # ... and too shallow for h = 5: one nucleus, as a bump inside one nucleus must stay
    assert probabilities_to_labels(probs, dyn.replace(marker_dynamic=5.0)).max() == 1


def test_dynamic_markers_hold_one_h_maximum_each():
    """Reference: every marker holds exactly one component of skimage's h-maxima, and every
    h-maxima component lies in one marker (random smooth fields, many maxima)."""
    from scipy import ndimage as ndi
    from skimage.morphology import h_maxima

    from nucleoseg.inference.postprocess import dynamic_markers

    rng = np.random.default_rng(3)
    for h in (0.3, 1.0):
        height = ndi.gaussian_filter(rng.normal(size=(160, 160)), 3).astype(np.float32) * 20
        region = height > -1.0
        markers = dynamic_markers(height, region, h)
        assert ((markers > 0) == region).all()  # the markers cover the region
        floor = height[region].min() - 1
        ref, n_ref = ndi.label(h_maxima(np.where(region, height, floor), h) & region)
        assert n_ref > 10
        # one marker per h-maximum component, and one h-maximum per marker
        marker_of = [np.unique(markers[ref == k]) for k in range(1, n_ref + 1)]
        assert all(m.size == 1 for m in marker_of)
        assert len({int(m[0]) for m in marker_of}) == n_ref == np.unique(markers[region]).size


def test_flooding_all_pieces_in_one_call_equals_a_call_per_piece():
    """The packed flood (every piece with two or more markers on one canvas) gives exactly
    what one watershed call per piece gives, on a field with shelves to spare."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    from nucleoseg.inference.postprocess import flood_markers

    rng = np.random.default_rng(5)
    field = ndi.gaussian_filter(rng.normal(size=(700, 700)), 4).astype(np.float32)
    _flood_equals_one_call_per_piece(field, ndi, watershed, flood_markers)


def test_compiled_flood_breaks_ties_as_scikit_image_does():
    """On a field of a few levels (queue ties everywhere, markers adjacent to the same
    pixels), the compiled flood is still exactly scikit-image's per-piece watershed: markers
    enter at their own elevation and equal elevations leave first in, first out."""
    import skimage
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    from nucleoseg.inference.postprocess import flood_markers

    if tuple(int(v) for v in skimage.__version__.split(".")[:2]) >= (0, 27):
        pytest.skip("the queue order was checked against scikit-image 0.22-0.26")
    rng = np.random.default_rng(7)
    smooth = ndi.gaussian_filter(rng.normal(size=(700, 700)), 4)
    field = (np.round(smooth / smooth.std() * 3) / 3).astype(np.float32)  # ~10 levels
    _flood_equals_one_call_per_piece(field, ndi, watershed, flood_markers, low=0.3,
                                     high=0.6)


def _flood_equals_one_call_per_piece(field, ndi, watershed, flood_markers, low=0.02,
                                     high=0.06):
    mask = field > low
    markers, _ = ndi.label(field > high)
    pieces, _ = ndi.label(mask)
    ref = np.zeros(mask.shape, np.int32)
    several = 0
    for piece, box in enumerate(ndi.find_objects(pieces), start=1):
        own = pieces[box] == piece
        ids = np.unique(markers[box][own])
        ids = ids[ids > 0]
        if ids.size == 1:
            ref[box][own] = ids[0]
        elif ids.size > 1:
            several += 1
            ref[box][own] = watershed(-field[box], np.where(own, markers[box], 0),
                                      mask=own)[own]
    assert several > 60  # boxes wider in all than one 2048 px shelf
    np.testing.assert_array_equal(flood_markers(field, markers, mask, invert=True), ref)


def test_ascent_basins_match_a_flood_from_the_maxima_and_cross_plateaus():
    from scipy import ndimage as ndi
    from skimage.morphology import local_maxima
    from skimage.segmentation import watershed

    from nucleoseg.inference.postprocess import ascent_basins

    rng = np.random.default_rng(0)
    for sigma in (1, 3):
        height = ndi.gaussian_filter(rng.normal(size=(150, 150)), sigma).astype(np.float32)
        mask = height > np.quantile(height, 0.3)
        peaks = local_maxima(np.where(mask, height, height.min() - 1), connectivity=1,
                             allow_borders=True) & mask
        seeds, n = ndi.label(peaks)
        assert n > 20
        np.testing.assert_array_equal(ascent_basins(height, mask, seeds),
                                      watershed(-height, seeds, mask=mask))
    # a ramp up to a shelf (no higher neighbour there), the shelf on to a higher ramp, and
    # a second maximum on the left whose seed marks only part of its plateau
    height = np.zeros((4, 12), np.float32)
    height[:, :4] = np.arange(4)
    height[:, 4:8] = 3
    height[:, 8:] = np.arange(4, 8)
    height[:, :2] = 10
    seeds = np.zeros(height.shape, np.int32)
    seeds[:, -1], seeds[1, 0] = 1, 2
    got = ascent_basins(height, np.ones(height.shape, bool), seeds)
    assert (got[:, :3] == 2).all() and (got[:, 3:] == 1).all()
    # only the mask is labelled, and a mask piece without a seed stays 0
    mask = np.ones(height.shape, bool)
    mask[:, 2] = False
    got = ascent_basins(height, mask, np.where(np.arange(12) >= 3, seeds, 0))
    assert (got[:, :3] == 0).all() and (got[:, 3:] == 1).all()


def test_select_postprocess_takes_the_dynamic_rule_only_where_it_helps():
    from nucleoseg.training.postprocess_choice import select_postprocess

    probs = _two_touching_interiors(dip=0.95)
    truth = np.zeros(probs.shape[:2], np.int32)
    truth[probs[..., 0] > 0] = 1
    truth[:, 34:][probs[:, 34:, 0] > 0] = 2  # the two discs meet at column 34
    card = PostprocessParams(threshold=0.5, interior_threshold=0.9, min_size=8)
    best, scores, trials = select_postprocess([probs], [truth], start=card)
    assert best.marker_dynamic > 0 and best.threshold == 0.5 and best.min_size == 8
    assert scores["aji"] > 0.9 and len(trials) > 10
    # the same pair read as one nucleus: the threshold rule stays
    best, _, _ = select_postprocess([probs], [(truth > 0).astype(np.int32)], start=card)
    assert best.marker_dynamic == 0 and best == card
    # a rule that helps one data set but lowers another's AJI is refused
    best, _, _ = select_postprocess([probs, probs], [truth, (truth > 0).astype(np.int32)],
                                    groups=["a", "b"], start=card)
    assert best.marker_dynamic == 0


def test_min_size_is_chosen_for_pq_where_dice_and_aji_barely_see_fragments():
    """Speckles of 12 px beside a nucleus: Dice and AJI hardly move when they go, PQ does,
    so the minimum-size step drops them; when the speckles are true nuclei it keeps them. The
    thresholds and the marker rule stay the card's."""
    from nucleoseg.training.postprocess_choice import MIN_SIZES, select_postprocess

    probs = _two_touching_interiors(dip=0.5)
    speckles = [(5, 5), (5, 60), (52, 5), (52, 60)]
    for r, c in speckles:  # 3 x 4 px, foreground and interior
        probs[r:r + 3, c:c + 4] = 1.0
    truth = np.zeros(probs.shape[:2], np.int32)
    truth[probs[..., 0] > 0] = 1
    truth[:, 34:][probs[:, 34:, 0] > 0] = 2
    for r, c in speckles:
        truth[r:r + 3, c:c + 4] = 0
    card = PostprocessParams(threshold=0.5, interior_threshold=0.9, min_size=8)
    assert probabilities_to_labels(probs, card).max() == 2 + len(speckles)
    best, scores, trials = select_postprocess([probs], [truth], start=card, min_size_only=True)
    assert best == card.replace(min_size=16)  # the first size that drops them; ties keep it
    assert probabilities_to_labels(probs, best).max() == 2
    assert scores["pq"] > trials[0]["pq"] + 0.2 and len(trials) == len(MIN_SIZES)
    # the speckles are nuclei: dropping them loses Dice, AJI and PQ, the card's size stays
    for k, (r, c) in enumerate(speckles):
        truth[r:r + 3, c:c + 4] = 3 + k
    best, _, _ = select_postprocess([probs], [truth], start=card, min_size_only=True)
    assert best == card
    with pytest.raises(ValueError, match="start from"):
        select_postprocess([probs], [truth], min_size_only=True)
