import numpy as np
import pytest
from PIL import Image

from nucleoseg.io.images import ImageError, open_image, probe_image, to_rgb_uint8


def test_rgb_uint8_passes_through():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = to_rgb_uint8(img)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, img)


def test_gray_and_single_channel_replicate():
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for arr in (g, g[..., None]):
        out = to_rgb_uint8(arr)
        assert out.shape == (3, 4, 3)
        np.testing.assert_array_equal(out[..., 1], g)


def test_rgba_drops_alpha():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 10
    rgba[..., 3] = 77
    out = to_rgb_uint8(rgba)
    assert out.shape == (2, 2, 3) and (out[..., 0] == 10).all() and (out[..., 2] == 0).all()


def test_16bit_scales_by_dtype_range_and_small_values_kept():
    a = np.array([[0, 65535]], np.uint16)
    np.testing.assert_array_equal(to_rgb_uint8(a)[..., 0], [[0, 255]])
    b = np.array([[3, 200]], np.uint16)  # 8-bit content in a wide type
    np.testing.assert_array_equal(to_rgb_uint8(b)[..., 0], [[3, 200]])


def test_float_rules():
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[0.0, 1.0]]))[..., 0], [[0, 255]])
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[2.0, 200.0]]))[..., 0], [[2, 200]])
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[-1.0, 3.0]]))[..., 0], [[0, 255]])


@pytest.mark.parametrize(
    "arr, match",
    [
        (np.array([[np.nan, 1.0]]), "NaN"),
        (np.zeros((2, 2, 5), np.uint8), "shape"),
        (np.zeros((2, 2, 2, 3), np.uint8), "shape"),
        (np.zeros((2, 2), bool), "dtype"),
        (np.zeros((0, 3, 3), np.uint8), "empty"),
    ],
)
def test_bad_arrays_raise_clear_errors(arr, match):
    with pytest.raises(ImageError, match=match):
        to_rgb_uint8(arr)


def test_open_image_files(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    np.testing.assert_array_equal(open_image(tmp_path / "a.png"), img)
    import tifffile

    tifffile.imwrite(tmp_path / "b.tif", (img[..., 0].astype(np.uint16) * 257),
                     compression="lzw")
    out = open_image(tmp_path / "b.tif")
    np.testing.assert_array_equal(out[..., 2], img[..., 0])


@pytest.mark.parametrize("reader", [open_image, probe_image])
def test_open_image_errors(tmp_path, reader):
    with pytest.raises(ImageError, match="not found"):
        reader(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageError, match="not an image|cannot read"):
        reader(tmp_path / "notes.png")
    with pytest.raises(ImageError, match="folder"):
        reader(tmp_path)
    (tmp_path / "trunc.tif").write_bytes(b"II*\x00\x08\x00\x00\x00\x01")
    with pytest.raises(ImageError):
        reader(tmp_path / "trunc.tif")
    import tifffile

    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((4, 5, 6, 7), np.uint8))
    with pytest.raises(ImageError, match="expected a 2D image"):
        reader(tmp_path / "stack.tif")
    tifffile.imwrite(tmp_path / "complex.tif", np.zeros((5, 6), np.complex64))
    with pytest.raises(ImageError, match="unsupported dtype"):
        reader(tmp_path / "complex.tif")


def test_probe_reads_headers_only(tmp_path):
    import tifffile

    rgb = np.zeros((30, 40, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")  # palette: read as RGB
    Image.fromarray(np.zeros((30, 40), np.uint16)).save(tmp_path / "g16.png")
    tifffile.imwrite(tmp_path / "rgba.tif", np.zeros((30, 40, 4), np.uint16))
    for name, dtype in [("a.png", np.uint8), ("p.png", np.uint8), ("g16.png", np.uint16),
                        ("rgba.tif", np.uint16)]:
        shape, dt = probe_image(tmp_path / name)
        stored = np.asarray(Image.open(tmp_path / name).convert("RGB")) if name == "p.png" \
            else tifffile.imread(tmp_path / name) if name.endswith(".tif") \
            else np.asarray(Image.open(tmp_path / name))
        assert shape == stored.shape and dt == dtype, name
    # damaged pixel data behind a good header: the probe passes, reading fails
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:60])
    assert probe_image(tmp_path / "cut.png")[0] == (30, 40, 3)
    with pytest.raises(ImageError, match="cannot read"):
        open_image(tmp_path / "cut.png")


@pytest.mark.parametrize("reader", [open_image, probe_image])
def test_too_large_tiff_is_refused_before_reading(tmp_path, monkeypatch, reader):
    import tifffile

    import nucleoseg.io.images as images

    tifffile.imwrite(tmp_path / "big.tif", np.zeros((30, 40, 3), np.uint8))
    monkeypatch.setattr(images, "MAX_IN_MEMORY_PIXELS", 1000)
    with pytest.raises(ImageError, match="block-wise as a slide"):
        reader(tmp_path / "big.tif")
