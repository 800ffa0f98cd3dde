import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nucleoseg.inference.predict import Cancelled, predict_tiled, predict_whole, run
from nucleoseg.inference.tiling import make_grid, pad_image

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
    # reference: the model on the whole image, padded the same way, in one pass
    grid = make_grid((h, w), tile=10**6, halo=HALO, stride=STRIDE)
    whole = np.asarray(model.predict_on_batch(
        pad_image(img, grid)[None].astype(np.float32) / 255))[0]
    whole = whole[HALO : HALO + h, HALO : HALO + w]
    assert tiled.shape == (h, w, 2)
    np.testing.assert_allclose(tiled, whole, atol=1e-4)
    # and the plain whole-image path agrees away from the image border
    plain = predict_whole(model, img, stride=STRIDE)
    m = HALO
    if h > 2 * m and w > 2 * m:
        np.testing.assert_allclose(tiled[m:-m, m:-m], plain[m:-m, m:-m], atol=1e-4)


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
