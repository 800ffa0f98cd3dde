import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nucleoseg.inference.predict import Cancelled, predict_tiled, predict_whole, run
from nucleoseg.inference.tiling import make_grid, pad_image, pad_reflect

STRIDE, HALO = 4, 32


@pytest.fixture(scope="module")
def model():
    import keras

    from nucleoseg.models.registry import build

    keras.utils.set_random_seed(1)
    return build("unet", depth=2, base_filters=4, dropout=0.0)


@given(h=st.integers(1, 300), w=st.integers(1, 300), tile=st.sampled_from([64, 96, 128]))
def test_grid_covers_image_once(h, w, tile):
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


@settings(max_examples=12, deadline=None)
@given(h=st.integers(1, 200), w=st.integers(1, 200), tile=st.sampled_from([80, 96, 128]),
       seed=st.integers(0, 1000))
def test_tiled_equals_whole_image(model, h, w, tile, seed):
    """With the halo covering the receptive field, tiles give the whole-image result."""
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    tiled = run(predict_tiled(model, img, tile=tile, halo=HALO, stride=STRIDE, batch_size=3))
    assert tiled.shape == (h, w, 2)
    plain = predict_whole(model, img, stride=STRIDE)
    if len(make_grid((h, w), tile=tile, halo=HALO, stride=STRIDE)) == 1:
        # an image that fits in one tile runs whole, without halo
        np.testing.assert_allclose(tiled, plain, atol=1e-5)
        return
    # reference: the model on the whole image, reflect-padded by the halo, in one pass
    bottom, right = (-(-(n + 2 * HALO) // STRIDE) * STRIDE - n - HALO for n in (h, w))
    padded = pad_reflect(img, ((HALO, bottom), (HALO, right)))
    whole = np.asarray(model.predict_on_batch(padded[None].astype(np.float32) / 255))[0]
    whole = whole[HALO : HALO + h, HALO : HALO + w]
    np.testing.assert_allclose(tiled, whole, atol=1e-4)
    # and the plain whole-image path agrees away from the image border
    m = HALO
    if h > 2 * m and w > 2 * m:
        np.testing.assert_allclose(tiled[m:-m, m:-m], plain[m:-m, m:-m], atol=1e-4)


def test_image_that_fits_one_tile_has_no_halo():
    grid = make_grid((1000, 1000), tile=1280, halo=64, stride=16)
    assert len(grid) == 1 and grid.halo == 0 and grid.tile == (1008, 1008)
    assert grid.padding == ((0, 8), (0, 8))
    grid = make_grid((1000, 1300), tile=1280, halo=64, stride=16)
    assert grid.halo == 64 and len(grid) > 1


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
    with pytest.raises(ValueError, match="no core"):
        make_grid((100, 100), tile=64, halo=32, stride=16)
