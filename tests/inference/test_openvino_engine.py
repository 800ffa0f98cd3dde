"""OpenVINO inference: the engine choice, the converted-model cache, agreement with Keras."""

from __future__ import annotations

import numpy as np
import pytest

from _helpers import synthetic_nuclei
from nucleoseg.backend import inference_engine

pytest.importorskip("openvino")


def test_engine_follows_the_backend_choice(monkeypatch):
    monkeypatch.delenv("NUCLEOSEG_ENGINE", raising=False)
    monkeypatch.delenv("NUCLEOSEG_BACKEND", raising=False)
    assert inference_engine() == "openvino"  # auto, Keras on TensorFlow, no GPU
    monkeypatch.setenv("NUCLEOSEG_BACKEND", "tensorflow")
    assert inference_engine() == "keras"
    monkeypatch.setenv("NUCLEOSEG_BACKEND", "openvino")
    assert inference_engine() == "openvino"
    monkeypatch.setenv("NUCLEOSEG_ENGINE", "keras")  # what apply() set wins
    assert inference_engine() == "keras"


def test_segmenter_on_openvino_matches_keras_and_caches_the_conversion(
        threshold_model_path, tmp_path, monkeypatch):
    from nucleoseg.inference.openvino_engine import OpenVINOModel, cache_folder
    from nucleoseg.inference.predict import run, traced_shapes
    from nucleoseg.inference.segment import Segmenter

    monkeypatch.setenv("NUCLEOSEG_CACHE", str(tmp_path / "cache"))
    image, _ = synthetic_nuclei((300, 260), n=15)
    monkeypatch.setenv("NUCLEOSEG_ENGINE", "keras")
    keras_seg = Segmenter.load(str(threshold_model_path), precision="float32")
    monkeypatch.setenv("NUCLEOSEG_ENGINE", "openvino")
    seg = Segmenter.load(str(threshold_model_path), precision="float32")
    assert (keras_seg.engine, seg.engine) == ("keras", "openvino")
    assert isinstance(seg.model, OpenVINOModel)
    ref, probs = run(keras_seg.probabilities(image)), run(seg.probabilities(image))
    assert np.abs(ref - probs).max() < 1e-5
    assert np.array_equal(run(keras_seg.segment(image)), run(seg.segment(image)))
    assert traced_shapes(seg.model)  # compiled for the tile batch it ran
    cached = sorted(p.name for p in cache_folder().iterdir())
    assert len(cached) == 2 and cached[0].startswith(seg.card.sha256)  # .bin + .xml

    # the second load reads the cache; a damaged entry is converted again, not fatal
    xml = next(cache_folder().glob("*.xml"))
    xml.write_text("<damaged")
    again = Segmenter.load(str(threshold_model_path), precision="float32")
    assert np.abs(run(again.probabilities(image)) - probs).max() == 0
    assert xml.read_text().startswith("<?xml")


def test_openvino_refuses_unknown_precision(threshold_model_path):
    from nucleoseg.inference.openvino_engine import OpenVINOModel
    from nucleoseg.models.weights import load_model

    model, _ = load_model(str(threshold_model_path))
    with pytest.raises(ValueError, match="precision must be one of"):
        OpenVINOModel(model, "int4")


def test_a_cached_conversion_segments_without_importing_tensorflow(threshold_model_path,
                                                                     tmp_path):
    """The first load converts (Keras on TensorFlow); later processes read OpenVINO's cache
    and never import TensorFlow (a CLI run on a tile: ~1 s instead of ~7 s)."""
    import os
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from nucleoseg.inference.segment import Segmenter\n"
            "from nucleoseg.inference.predict import run\n"
            "seg = Segmenter.load(sys.argv[1], precision='float32')\n"
            "labels = run(seg.segment(np.full((96, 96, 3), 200, np.uint8)))\n"
            "print(seg.engine, 'tensorflow' in sys.modules)\n")
    env = {**os.environ, "NUCLEOSEG_CACHE": str(tmp_path / "cache"),
           "NUCLEOSEG_ENGINE": "openvino", "TF_CPP_MIN_LOG_LEVEL": "2"}
    seen = []
    for _ in range(2):
        res = subprocess.run([sys.executable, "-c", code, str(threshold_model_path)], env=env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        seen.append(res.stdout.split()[-2:])
    assert seen == [["openvino", "True"], ["openvino", "False"]]


def test_openvino_sends_no_usage_telemetry(threshold_model_path, tmp_path):
    """OpenVINO reports each import and conversion to Google Analytics unless told not to,
    and keeps a client id in ``~/intel``; a segmentation (import, conversion, inference)
    through NucleoSeg loads OpenVINO's stand-in instead and writes nothing to the home folder.
    The control, ``NUCLEOSEG_OPENVINO_TELEMETRY=1``, shows the check can fail (with ``CI``
    set, so that OpenVINO itself declines to send from this test)."""
    import os
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from nucleoseg.inference.segment import Segmenter\n"
            "from nucleoseg.inference.predict import run\n"
            "seg = Segmenter.load(sys.argv[1], precision='float32')\n"
            "run(seg.segment(np.full((96, 96, 3), 200, np.uint8)))\n"
            "import openvino.tools.ovc.telemetry_utils as t\n"
            "print(seg.engine, t.tm.__name__)\n")
    base = {k: v for k, v in os.environ.items()
            if k not in ("CI", "TF_BUILD", "JENKINS_URL", "NUCLEOSEG_OPENVINO_TELEMETRY")}
    base.update(NUCLEOSEG_CACHE=str(tmp_path / "cache"), NUCLEOSEG_ENGINE="openvino",
                TF_CPP_MIN_LOG_LEVEL="2")
    seen = {}
    for case, extra in {"ours": {}, "control": {"NUCLEOSEG_OPENVINO_TELEMETRY": "1",
                                                "CI": "true"}}.items():
        home = tmp_path / case
        home.mkdir()
        res = subprocess.run([sys.executable, "-c", code, str(threshold_model_path)],
                             env={**base, **extra, "HOME": str(home)}, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        seen[case] = res.stdout.split()[-1]
    assert seen == {"ours": "openvino.tools.ovc.telemetry_stub", "control": "openvino_telemetry"}
    assert not (tmp_path / "ours" / "intel").exists()
