"""Inference precision: "auto" follows the CPU's native bfloat16 support and the model
card's opt-out (every model's bfloat16 accuracy is checked by the harness in test_models)."""

import pytest

from nucleoseg.models.precision import resolve_precision, with_precision
from nucleoseg.models.registry import MODELS, build


def test_resolve_precision(monkeypatch):
    for name in ("float32", "bfloat16", "float16"):
        assert resolve_precision(name) == name
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8")
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        with_precision(build("unet", **MODELS["unet"].test_config), "auto")
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
