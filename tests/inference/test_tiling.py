import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nucleoseg.inference.predict import (
    Cancelled,
    predict_padded,
    predict_tiled,
    predict_whole,
    run,
)
from nucleoseg.inference.tiling import fit_grid, make_grid, pad_image, pad_reflect

STRIDE, HALO = 4, 32


@pytest.fixture(scope="module")
def model():
    import keras

    from nucleoseg.models.registry import build

    keras.utils.set_random_seed(1)
    return build("unet", depth=2, base_filters=4, dropout=0.0)


@given(h=st.integers(1, 300), w=st.integers(1, 300), tile=st.sampled_from([64, 96, 128]))
def test_slide_grid_covers_image_once(h, w, tile):
    grid = make_grid((h, w), tile=tile, halo=16, stride=8)
    hits = np.zeros((h, w), np.int32)
    for read, write in grid.tiles():
        hits[write] += 1
        assert read[0].stop - read[0].start == grid.tile[0]
        assert read[0].start % 8 == 0 and read[1].start % 8 == 0
    assert (hits == 1).all()
    assert grid.tile[0] <= tile and grid.tile[0] % 8 == 0
    padded = pad_image(np.zeros((h, w, 3), np.uint8), grid)
    assert padded.shape[:2] == (grid.tile[0] + (grid.n_tiles[0] - 1) * grid.core[0],
                                grid.tile[1] + (grid.n_tiles[1] - 1) * grid.core[1])


@given(h=st.integers(1, 700), w=st.integers(1, 700), tile=st.sampled_from([64, 96, 128, 256]),
       halo=st.sampled_from([0, 8, 16, 24]))
def test_fitted_grid_covers_image_once_with_context_where_tiles_meet(h, w, tile, halo):
    stride = 8
    grid = fit_grid((h, w), tile=tile, halo=halo, stride=stride)
    (top, bottom), (left, right) = grid.padding
    assert top == left == 0 and 0 <= bottom < stride and 0 <= right < stride
    hits = np.zeros((h, w), np.int32)
    for read, write in grid.tiles():
        hits[write] += 1
        for r, wr, side, n, pad in zip(read, write, grid.tile, (h, w), (bottom, right),
                                         strict=True):
            assert r.stop - r.start == side <= tile and side % stride == 0
            assert r.start % stride == 0 and r.start >= 0 and r.stop <= n + pad
            assert r.start <= wr.start < wr.stop <= r.stop  # the core lies in the tile
            # real context of >= halo px wherever the core ends inside the image
            if wr.start > 0:
                assert wr.start - r.start >= halo
            if wr.stop < n:
                assert r.stop - wr.stop >= halo
    assert (hits == 1).all()
    # no more tiles than the uniform slide grid needs
    if tile - 2 * halo >= stride:
        assert len(grid) <= len(make_grid((h, w), tile=tile, halo=halo, stride=stride))


@settings(max_examples=12, deadline=None)
@given(h=st.integers(1, 200), w=st.integers(1, 200), tile=st.sampled_from([80, 96, 128]),
       seed=st.integers(0, 1000))
def test_tiled_equals_whole_image(model, h, w, tile, seed):
    """With the halo covering the receptive field, tiles give the whole-image result."""
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    tiled = run(predict_tiled(model, img, tile=tile, halo=HALO, stride=STRIDE, batch_size=3))
    assert tiled.shape == (h, w, 2)
    # fitted tiles start at the image's edges and at multiples of the stride: exactly the
    # model on the whole image (padded to the stride at the bottom/right), seams included
    np.testing.assert_allclose(tiled, predict_whole(model, img, stride=STRIDE), atol=1e-4)


@settings(max_examples=8, deadline=None)
@given(h=st.integers(1, 200), w=st.integers(1, 200), tile=st.sampled_from([80, 96, 128]),
       seed=st.integers(0, 1000))
def test_slide_grid_equals_whole_reflect_padded_image(model, h, w, tile, seed):
    """The whole-slide grid (reflect-padded by the halo, equal cores) gives the model's
    output on the whole padded image."""
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    grid = make_grid((h, w), tile=tile, halo=HALO, stride=STRIDE)
    tiled = run(predict_padded(model, pad_image(img, grid), grid, batch_size=3))
    assert tiled.shape == (h, w, 2)
    if len(grid) == 1:
        np.testing.assert_allclose(tiled, predict_whole(model, img, stride=STRIDE), atol=1e-5)
        return
    bottom, right = (-(-(n + 2 * HALO) // STRIDE) * STRIDE - n - HALO for n in (h, w))
    padded = pad_reflect(img, ((HALO, bottom), (HALO, right)))
    whole = np.asarray(model.predict_on_batch(padded[None].astype(np.float32) / 255))[0]
    np.testing.assert_allclose(tiled, whole[HALO : HALO + h, HALO : HALO + w], atol=1e-4)


def test_image_that_fits_one_tile_has_no_halo():
    for make in (make_grid, fit_grid):
        grid = make((1000, 1000), tile=1280, halo=64, stride=16)
        assert len(grid) == 1 and grid.tile == (1008, 1008)
        assert grid.padding == ((0, 8), (0, 8))
    assert make_grid((1000, 1300), tile=1280, halo=64, stride=16).halo == 64


def test_fitted_tiles_cost_less_than_the_uniform_grid():
    # 4096^2 with 2176 tiles and 64 px halo: 2 x 2 tiles of 2112 (6.3 % extra pixels)
    # instead of 2176 (12.9 %): context only where tiles meet
    fit = fit_grid((4096, 4096), tile=2176, halo=64, stride=16)
    uniform = make_grid((4096, 4096), tile=2176, halo=64, stride=16)
    assert fit.tile == (2112, 2112) and fit.starts == ((0, 1984), (0, 1984))
    assert fit.cuts[0] == (0, 2048, 4096) and uniform.tile == (2176, 2176)


def test_progress_and_cancel(model):
    img = np.zeros((300, 300, 3), np.uint8)
    gen = predict_tiled(model, img, tile=96, halo=HALO, stride=STRIDE, batch_size=2)
    seen = []
    out = run(gen, lambda d, t, m: seen.append((d, t)))
    assert out.shape == (300, 300, 2)
    total = seen[-1][1]
    assert seen[0] == (0, total) and seen[-1] == (total, total) and total > 4
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        run(predict_tiled(model, img, tile=96, halo=HALO, stride=STRIDE, batch_size=2,
                          should_stop=stop))
    assert len(calls) == 3  # stopped before the third batch


def test_bad_tile_settings():
    for make in (make_grid, fit_grid):
        with pytest.raises(ValueError, match="no core"):
            make((100, 100), tile=64, halo=32, stride=16)
        with pytest.raises(ValueError, match="empty"):
            make((0, 100), tile=64, halo=8, stride=16)


def test_images_of_different_sizes_through_one_dilated_model():
    """Keras relaxes its predict function to unknown sizes after two input shapes, and
    TensorFlow's dilated convolutions then fail on some sizes (here 208 -> 224 wide): every
    input shape gets its own static trace, so a kept model serves any sequence of images."""
    from nucleoseg.models.registry import build

    model = build("deeplabv3", alpha=0.35, aspp_filters=8, decoder_filters=8)
    outs = []
    for shape in ((208, 208), (208, 224), (200, 200), (208, 224)):
        img = np.random.default_rng(0).integers(0, 256, shape + (3,), dtype=np.uint8)
        outs.append(run(predict_tiled(model, img, tile=256, halo=32, stride=16)))
        assert outs[-1].shape == shape + (2,)
    np.testing.assert_array_equal(outs[1], outs[3])
