"""Reinhard stain normalisation: statistics matched, background kept, bad names refused."""

from __future__ import annotations

import numpy as np
import pytest

from _helpers import synthetic_nuclei
from nucleoseg.io.stain import TARGET, lab_statistics, normalise, reinhard


@pytest.mark.data
def test_reinhard_matches_the_target_statistics_on_tissue(test_tile):
    image = test_tile[1][:400, :400]
    # a paler, bluer scan of the same tissue
    pale = np.clip(image.astype(np.float32) * [0.8, 0.85, 1.0] + [40, 30, 10], 0, 255)
    out = reinhard(pale.astype(np.uint8))
    from skimage.color import rgb2lab

    tissue = rgb2lab(pale.astype(np.uint8))[..., 0] < 88  # the pixels it matched on
    lab = rgb2lab(out)[tissue]
    assert out.dtype == np.uint8 and out.shape == image.shape
    # approximately: colours outside the RGB gamut are clipped
    np.testing.assert_allclose(lab.mean(axis=0), TARGET[0], atol=1.5)
    np.testing.assert_allclose(lab.std(axis=0), TARGET[1], rtol=0.1)
    before, _, _ = lab_statistics(pale.astype(np.uint8))
    assert np.abs(before - TARGET[0]).max() > 5  # it did have to move


def test_normalise_none_is_the_image_and_unknown_methods_are_refused():
    image, _ = synthetic_nuclei((64, 64), n=3)
    assert normalise(image, "none") is image
    with pytest.raises(ValueError, match="stain normalisation must be one of"):
        normalise(image, "macenko2")


def test_segmenter_stain_setting_and_slides_refuse_it(threshold_model_path, tmp_path):
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.inference.wsi import plan_slide

    image, _ = synthetic_nuclei((160, 160), n=8)
    seg = Segmenter.load(str(threshold_model_path), precision="float32", stain="reinhard")
    assert seg.stain == "reinhard"
    probs = run(seg.probabilities(image))
    seg.update(stain="none")
    assert not np.allclose(probs, run(seg.probabilities(image)))
    with pytest.raises(ValueError, match="stain must be one of"):
        seg.update(stain="purple")
    import tifffile

    tifffile.imwrite(tmp_path / "s.tif", image)
    with pytest.raises(ValueError, match="for images held in memory"):
        plan_slide(tmp_path / "s.tif", tmp_path / "s.zarr", str(threshold_model_path),
                   stain="reinhard")
