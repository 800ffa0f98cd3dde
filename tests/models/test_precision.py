"""Inference precision: "auto" follows the CPU's native bfloat16 support, whether bfloat16
runs faster here (measured once, cached) and the model card's opt-out (every model's
bfloat16 accuracy is checked by the harness in test_models)."""

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


def test_auto_takes_bfloat16_only_where_a_measurement_says_it_pays(monkeypatch, tmp_path):
    import json

    from nucleoseg.models import precision

    monkeypatch.setenv("NUCLEOSEG_CACHE", str(tmp_path))
    monkeypatch.delenv("NUCLEOSEG_NATIVE_BF16", raising=False)
    monkeypatch.setattr(precision, "_PAYS", {})  # forget this process's answers
    calls = []

    def slow_bf16():
        calls.append(1)
        return {"float32": 0.010, "bfloat16": 0.016}

    first = precision.bfloat16_pays("openvino", measure=slow_bf16)
    assert first["bfloat16"] is False and first["source"] == "measured" and calls == [1]
    cache = tmp_path / "cpu_precision.json"
    entry = json.loads(cache.read_text())[first["key"]]
    assert entry["float32_s"] == 0.010 and entry["bfloat16_s"] == 0.016
    # a new process reads the file and measures nothing
    monkeypatch.setattr(precision, "_PAYS", {})
    again = precision.bfloat16_pays("openvino", measure=lambda: 1 / 0)
    assert again["source"] == "cache" and again["bfloat16"] is False
    # what auto picks: bfloat16 only on a native CPU where the measurement says faster
    native = precision.cpu_has_native_bfloat16()
    for f32, bf16 in ((0.010, 0.016), (0.010, 0.004), (0.010, 0.0095)):
        cache.write_text(json.dumps({first["key"]: {"float32_s": f32, "bfloat16_s": bf16}}))
        monkeypatch.setattr(precision, "_PAYS", {})
        fast = native and bf16 <= precision.BF16_MAX_TIME_RATIO * f32
        assert resolve_precision("auto", None, "openvino") == ("bfloat16" if fast
                                                               else "float32")
        if native:
            assert "convolution probe (cache)" in precision.cpu_auto_precision("openvino")[1]
    # a probe that cannot run answers float32, says why, and leaves the cache alone
    monkeypatch.setattr(precision, "_PAYS", {})
    cache.write_text(before := "{}")
    failed = precision.bfloat16_pays("openvino", measure=lambda: 1 / 0)
    assert failed["bfloat16"] is False and failed["source"].startswith("probe failed")
    assert cache.read_text() == before
    if native:
        assert precision.cpu_auto_precision("openvino")[0] == "float32"
    # a damaged cache file is measured again and rewritten
    cache.write_text("{not json")
    monkeypatch.setattr(precision, "_PAYS", {})
    assert precision.bfloat16_pays("openvino", measure=slow_bf16)["source"] == "measured"
    assert len(calls) == 2 and first["key"] in json.loads(cache.read_text())


def test_the_bfloat16_probe_times_both_precisions(monkeypatch, tmp_path):
    from nucleoseg.models import precision

    monkeypatch.setenv("NUCLEOSEG_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "_PAYS", {})
    got = precision.bfloat16_pays("openvino")
    assert got["source"] == "measured" and 0 < got["float32_s"] < 5 and 0 < got["bfloat16_s"] < 5
    assert got["bfloat16"] == (got["bfloat16_s"] <= 0.9 * got["float32_s"])
    assert "openvino" in got["key"] and (tmp_path / "cpu_precision.json").exists()


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
