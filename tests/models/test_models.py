import numpy as np
import pytest

from nucleoseg.models.registry import MODELS, build, encoder_layers, resolve, total_stride

SMALL = {name: spec.test_config for name, spec in MODELS.items()}


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
        else:
            yield layer


def test_registry_entries_are_complete():
    """Every family has a tiny test instance, a stride rule and encoder layers to freeze."""
    with pytest.raises(ValueError, match="unknown model"):
        resolve("resnet")
    for name, spec in MODELS.items():
        assert spec.test_config, f"{name} has no test_config"
        model = build(name, **spec.test_config)
        assert encoder_layers(model, name), f"{name}: no encoder layer matches {spec.encoder}"
        assert len(encoder_layers(model, name)) < len(model.layers)


# ---- the shared harness: every registered family runs each of these ----
@pytest.mark.parametrize("name", list(MODELS))
def test_build_forward_save_load(name, tmp_path):
    import keras

    from nucleoseg.models.weights import load_model, save_model

    model = build(name, **SMALL[name])
    stride = total_stride(name, **SMALL[name])
    side = max(64, 2 * stride)
    x = np.random.default_rng(0).random((1, side, side + stride, 3), dtype=np.float32)
    y = np.asarray(model.predict_on_batch(x))
    assert y.shape == (1, side, side + stride, 2)
    assert np.isfinite(y).all() and (y >= 0).all() and (y <= 1).all()
    path = save_model(model, tmp_path, name, {"architecture": name,
                                                "inference": {"stride": stride}})
    loaded, card = load_model(path)
    assert card.sha256 and card.name == name and card.inference.stride == stride
    np.testing.assert_allclose(np.asarray(loaded.predict_on_batch(x)), y, atol=1e-5)
    assert isinstance(loaded, keras.Model)


@pytest.mark.parametrize("name", list(MODELS))
def test_mixed_precision(name):
    """bfloat16 compute gives the float32 probabilities within rounding."""
    import keras

    from nucleoseg.models.precision import with_precision

    keras.utils.set_random_seed(0)
    model = build(name, **SMALL[name])
    mixed = with_precision(model, "bfloat16")
    assert mixed is not model
    assert "mixed_bfloat16" in {layer.dtype_policy.name for layer in _all_layers(mixed)}
    # nested backbones are converted too: only inputs and the output head stay float32
    assert sum(layer.dtype_policy.name == "float32" for layer in _all_layers(mixed)) <= 3
    assert all(layer.dtype_policy.name == "float32" for layer in _all_layers(model))
    x = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    ref = np.asarray(model.predict_on_batch(x))
    out = np.asarray(mixed.predict_on_batch(x))
    assert out.dtype == np.float32 and out.shape == ref.shape
    diff = np.abs(out - ref)
    # rounding of the activations only; SegNet's pooling switches may flip at near-ties
    assert diff.mean() < 5e-3 and np.quantile(diff, 0.95) < 0.02 and diff.max() < 0.3
    assert with_precision(model, "float32") is model


@pytest.mark.parametrize("name", list(MODELS))
def test_fine_tune_step_with_frozen_encoder(name):
    """One training step with the registry's encoder frozen moves the decoder only."""
    import keras

    keras.utils.set_random_seed(0)
    model = build(name, **SMALL[name])
    frozen = encoder_layers(model, name)
    for layer in frozen:
        layer.trainable = False
    before = {id(w): np.array(w) for layer in model.layers for w in layer.weights}
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    rng = np.random.default_rng(1)
    x = rng.random((2, 64, 64, 3), dtype=np.float32)
    y = (rng.random((2, 64, 64, 2)) > 0.5).astype(np.float32)
    loss = float(np.asarray(model.train_on_batch(x, y)))
    assert np.isfinite(loss)

    def changed(layers) -> bool:
        return any(not np.array_equal(before[id(w)], np.array(w))
                   for layer in layers for w in layer.trainable_weights + layer.weights
                   if w.trainable)

    assert all(np.array_equal(before[id(w)], np.array(w)) for layer in frozen
               for w in layer.weights if "moving" not in w.path)
    assert changed([layer for layer in model.layers if layer not in frozen])


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
