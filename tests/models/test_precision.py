"""Inference precision: bfloat16 models compute the same probabilities within rounding,
"auto" follows the CPU's native bfloat16 support and the model card's opt-out."""

import numpy as np
import pytest

from nucleoseg.models.precision import resolve_precision, with_precision
from nucleoseg.models.registry import build

SMALL = {
    "unet": {"depth": 2, "base_filters": 8},
    "segnet": {"depth": 2, "base_filters": 8},
    "deeplabv3": {"alpha": 0.35, "aspp_filters": 16, "decoder_filters": 16},
}


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
        else:
            yield layer


@pytest.mark.parametrize("name", sorted(SMALL))
def test_bfloat16_model_matches_float32(name):
    import keras

    keras.utils.set_random_seed(0)
    model = build(name, **SMALL[name])
    mixed = with_precision(model, "bfloat16")
    assert mixed is not model
    policies = {layer.dtype_policy.name for layer in _all_layers(mixed)}
    assert "mixed_bfloat16" in policies
    # nested backbones are converted too: only inputs and the output head stay float32
    n32 = sum(layer.dtype_policy.name == "float32" for layer in _all_layers(mixed))
    assert n32 <= 3
    assert all(layer.dtype_policy.name == "float32" for layer in _all_layers(model))
    x = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    ref = np.asarray(model.predict_on_batch(x))
    out = np.asarray(mixed.predict_on_batch(x))
    assert out.dtype == np.float32 and out.shape == ref.shape
    diff = np.abs(out - ref)
    # rounding of the activations only; SegNet's pooling switches may flip at near-ties
    assert diff.mean() < 5e-3 and np.quantile(diff, 0.95) < 0.02 and diff.max() < 0.3
    assert with_precision(model, "float32") is model


def test_resolve_precision(monkeypatch):
    for name in ("float32", "bfloat16", "float16"):
        assert resolve_precision(name) == name
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8")
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        with_precision(build("unet", **SMALL["unet"]), "auto")
    monkeypatch.setenv("NUCLEOSEG_NATIVE_BF16", "1")
    assert resolve_precision("auto") == "bfloat16"  # the test machines have no GPU
    opt_out = {"inference": {"cpu_bfloat16": False}}
    assert resolve_precision("auto", opt_out) == "float32"
    assert resolve_precision("bfloat16", opt_out) == "bfloat16"
    monkeypatch.setenv("NUCLEOSEG_NATIVE_BF16", "0")
    assert resolve_precision("auto") == "float32"


def test_segmenter_load_precision(threshold_model_path, monkeypatch):
    from _helpers import synthetic_nuclei
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter

    monkeypatch.setenv("NUCLEOSEG_NATIVE_BF16", "0")
    assert Segmenter.load(str(threshold_model_path)).precision == "float32"
    monkeypatch.setenv("NUCLEOSEG_NATIVE_BF16", "1")
    fast = Segmenter.load(str(threshold_model_path))
    assert fast.precision == "bfloat16"
    exact = Segmenter.load(str(threshold_model_path), precision="float32")
    image, truth = synthetic_nuclei((128, 128), n=8, seed=3)
    a = run(fast.segment(image))
    b = run(exact.segment(image))
    assert a.max() == b.max() > 0
    assert ((a > 0) == (b > 0)).mean() > 0.99
