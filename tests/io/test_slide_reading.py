"""Lazy slide reading: pyramids, resolution metadata, tissue mask and broken files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from nucleoseg.io.images import ImageError, write_pyramid_tiff
from nucleoseg.io.tissue import tissue_mask
from nucleoseg.io.wsi import SlideWarning, is_slide, open_slide, working_resolution


def _rgb(shape=(600, 700), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, shape + (3,), dtype=np.uint8)


def test_pyramid_ome_tiff_opens_lazily_with_levels_and_resolution(tmp_path):
    img = _rgb()
    path = write_pyramid_tiff(tmp_path / "s.ome.tif", img, mpp=0.25, levels=3, tile=128)
    slide = open_slide(path)
    assert slide.shape == (600, 700)
    assert len(slide.levels) == 3
    assert slide.level_shape(1) == (300, 350)
    assert slide.mpp == pytest.approx(0.25)
    np.testing.assert_array_equal(slide.read(0, (100, 300), (50, 420)), img[100:300, 50:420])
    np.testing.assert_array_equal(slide.read(1, (0, 10), (0, 10)), img[::2, ::2][:10, :10])
    levels = slide.dask_levels()
    assert [tuple(d.shape) for d in levels] == [(600, 700, 3), (300, 350, 3), (150, 175, 3)]
    assert is_slide(path)
    slide.close()


def test_aperio_mpp_and_level_choice(tmp_path):
    path = tmp_path / "a.svs.tif"
    tifffile.imwrite(path, _rgb((64, 64)), photometric="rgb",
                     description="Aperio Image Library v11\n64x64 |AppMag = 20|MPP = 0.4990")
    slide = open_slide(path)
    assert slide.mpp == pytest.approx(0.499)
    level, scale = working_resolution(slide, 0.25)
    assert level == 0 and scale == pytest.approx(0.499 / 0.25)
    # a given --mpp replaces the file's value
    assert open_slide(path, mpp=0.26).mpp == pytest.approx(0.26)


def test_missing_resolution_warns_and_assumes_model_resolution(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, _rgb((64, 64)), photometric="rgb")
    slide = open_slide(path)
    assert slide.mpp is None
    with pytest.warns(SlideWarning, match="no resolution metadata"):
        assert working_resolution(slide) == (0, 1.0)
    assert not is_slide(path)  # small and single-level: the in-memory path


def test_72_dpi_tags_are_not_taken_as_a_resolution(tmp_path):
    path = tmp_path / "dpi.tif"
    tifffile.imwrite(path, _rgb((64, 64)), photometric="rgb", resolution=(72, 72),
                     resolutionunit="INCH")
    assert open_slide(path).mpp is None


def test_truncated_tiff_is_refused(tmp_path):
    path = write_pyramid_tiff(tmp_path / "t.ome.tif", _rgb((512, 512)), tile=128)
    data = path.read_bytes()
    cut = tmp_path / "cut.ome.tif"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(ImageError, match="truncated|cannot read"):
        open_slide(cut)


def test_unsupported_compression_is_refused(tmp_path):
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, _rgb((64, 64)), photometric="rgb", compression="zlib")
    with tifffile.TiffFile(path, mode="r+") as tif:
        tif.pages[0].tags["Compression"].overwrite(34999)
    with pytest.raises(ImageError, match="compression 34999"):
        open_slide(path)


def test_garbage_file_and_16_bit_slide(tmp_path):
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"not a tiff at all" * 100)
    with pytest.raises(ImageError, match="cannot read bad.svs"):
        open_slide(bad)
    deep = tmp_path / "deep.tif"
    tifffile.imwrite(deep, np.zeros((32, 32, 3), np.uint16), photometric="rgb")
    with pytest.raises(ImageError, match="8-bit"):
        open_slide(deep)


def test_zarr_image_opens_as_slide(tmp_path):
    import zarr

    img = _rgb((200, 300))
    arr = zarr.create_array(str(tmp_path / "im.zarr"), shape=img.shape, chunks=(64, 64, 3),
                            dtype="uint8")
    arr[:] = img
    slide = open_slide(tmp_path / "im.zarr")
    np.testing.assert_array_equal(slide.read(0, (0, 200), (0, 300)), img)


def test_tissue_mask_finds_tissue_and_skips_glass(tmp_path):
    img = np.full((1024, 1024, 3), 242, np.uint8)  # glass: bright, grey
    img[:, :400] = (200, 120, 170)  # H&E-like pink tissue on the left
    slide = open_slide(write_pyramid_tiff(tmp_path / "m.ome.tif", img, levels=2, tile=128))
    mask, down = tissue_mask(slide, max_side=256)
    cols = np.flatnonzero(mask.any(axis=0)) * down
    assert cols.min() == 0
    assert 380 <= cols.max() <= 440  # tissue plus the two-pixel dilation, not the glass
