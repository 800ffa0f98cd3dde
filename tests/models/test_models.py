import numpy as np
import pytest

from nucleoseg.models.registry import MODELS, build, resolve, total_stride

SMALL = {
    "unet": {"depth": 2, "base_filters": 4},
    "unet_lite": {"depth": 2},
    "se_unet": {"depth": 2, "base_filters": 4},
    "segnet": {"depth": 2, "base_filters": 4},
    "deeplabv3": {"alpha": 0.35, "aspp_filters": 16, "decoder_filters": 16},
    "deeplabv3_xception": {"aspp_filters": 16, "decoder_filters": 16},
}


def test_registry_covers_small_configs():
    assert set(SMALL) == set(MODELS)
    with pytest.raises(ValueError, match="unknown model"):
        resolve("resnet")


@pytest.mark.parametrize("name", list(MODELS))
def test_build_forward_save_load(name, tmp_path):
    import keras

    from nucleoseg.models.weights import load_model, save_model

    model = build(name, **SMALL[name])
    x = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    y = np.asarray(model.predict_on_batch(x))
    assert y.shape == (1, 64, 64, 2)
    assert np.isfinite(y).all() and (y >= 0).all() and (y <= 1).all()
    path = save_model(model, tmp_path, name, {"architecture": name})
    loaded, card = load_model(path)
    assert card["sha256"] and card["name"] == name
    np.testing.assert_allclose(np.asarray(loaded.predict_on_batch(x)), y, atol=1e-5)
    assert isinstance(loaded, keras.Model)


def test_total_stride():
    assert total_stride("unet") == 16 and total_stride("unet", depth=2) == 4
    assert total_stride("deeplabv3") == 16 and total_stride("deeplabv3_xception") == 32


def test_deeplab_v3_without_decoder_and_xception_alignment():
    m = build("deeplabv3", decoder=False, alpha=0.35, aspp_filters=8)
    assert m.predict_on_batch(np.zeros((1, 96, 64, 3), np.float32)).shape == (1, 96, 64, 2)
    x = build("deeplabv3_xception", **SMALL["deeplabv3_xception"])
    assert x.predict_on_batch(np.zeros((1, 96, 64, 3), np.float32)).shape == (1, 96, 64, 2)


def test_switch_unpool_matches_index_unpooling():
    """SegNet's switch-mask unpooling places values where each 2x2 window had its maximum."""
    import keras

    from nucleoseg.models.segnet import SwitchUnpool2D

    rng = np.random.default_rng(3)
    x = rng.random((2, 6, 8, 3)).astype(np.float32)
    pooled = x.reshape(2, 3, 2, 4, 2, 3).max(axis=(2, 4))
    y = rng.random((2, 3, 4, 3)).astype(np.float32)
    out = np.asarray(SwitchUnpool2D()([keras.ops.convert_to_tensor(v) for v in (x, pooled, y)]))
    expected = np.zeros_like(x)
    for b in range(2):
        for i in range(3):
            for j in range(4):
                for c in range(3):
                    win = x[b, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, c]
                    r, s = np.unravel_index(np.argmax(win), (2, 2))
                    expected[b, 2 * i + r, 2 * j + s, c] = y[b, i, j, c]
    np.testing.assert_allclose(out, expected)


def test_corrupted_weights_give_clear_errors(tmp_path):
    from nucleoseg.models.weights import WeightsError, load_model, save_model

    path = save_model(build("unet", **SMALL["unet"]), tmp_path, "m", {})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupted"):
        load_model(path)
    path.write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="cannot load"):
        load_model(path, verify=False)
    with pytest.raises(WeightsError, match="no trained model"):
        load_model("no-such-model")


def test_shipped_folder_is_write_protected(tmp_path):
    from nucleoseg.models.weights import WeightsError, save_model, shipped_dir

    with pytest.raises(WeightsError, match="shipped"):
        save_model(build("unet", **SMALL["unet"]), shipped_dir(), "x", {})
    assert not (shipped_dir() / "x.keras").exists()


@pytest.mark.parametrize("name", ["deeplabv3", "unet"])
def test_many_input_sizes_in_one_session(name):
    """predict() retraces with relaxed (unknown) sides after a few shapes; models must cope."""
    model = build(name, **SMALL[name])
    for h, w in [(32, 32), (64, 48), (96, 32), (48, 80), (128, 64)]:
        y = model.predict_on_batch(np.zeros((1, h, w, 3), np.float32))
        assert y.shape == (1, h, w, 2)
