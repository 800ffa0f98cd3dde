"""Open any 2D image as ``(H, W, 3) uint8`` RGB, with one clear error for what cannot be.

Conversion rules (:func:`to_rgb_uint8`):

- ``(H, W)`` grayscale and ``(H, W, 1)`` are replicated to three channels;
- ``(H, W, 4)`` RGBA drops alpha; ``(H, W, 2)`` (gray + alpha) keeps the gray channel;
- ``uint8`` is kept; other integer types (e.g. 16-bit) are scaled linearly from
  ``[0, max of the dtype]`` unless every value is at most 255, in which case they are kept
  as they are (8-bit data stored in a wider type);
- floats: values within ``[0, 1]`` are scaled by 255, values within ``[0, 255]`` are kept,
  anything else is min-max rescaled to ``[0, 255]``; NaN or infinite values are an error;
- booleans, complex numbers, other shapes and channel counts are errors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

#: Largest image held in memory by :func:`open_image` (pixels); bigger ones go through the
#: whole-slide path.
MAX_IN_MEMORY_PIXELS = 40_000 * 40_000
#: Peak memory of segmenting an image held in memory, per pixel (measured: an 8000x8000
#: TIFF peaked at 5.05 GB with the UNet, about 79 B/px).
BYTES_PER_PIXEL = 80


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; None when
    unknown). ``NUCLEOSEG_AVAILABLE_MEMORY`` (bytes) overrides it."""
    forced = os.environ.get("NUCLEOSEG_AVAILABLE_MEMORY")
    if forced:
        return int(forced)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def fits_in_memory(shape: tuple[int, ...]) -> bool:
    """Whether segmenting an image of ``shape`` in memory fits the memory available now."""
    have = available_memory()
    return have is None or int(shape[0]) * int(shape[1]) * BYTES_PER_PIXEL <= have


def check_memory(shape: tuple[int, ...], name: str, advice: str | None = None) -> None:
    """Refuse, before any pixel is decoded, an image whose in-memory segmentation would need
    more memory than is available; ``advice`` ends the message (default: how to go
    block-wise from the command line)."""
    if fits_in_memory(shape):
        return
    need = int(shape[0]) * int(shape[1]) * BYTES_PER_PIXEL
    have = available_memory() or 0
    raise ImageError(
        f"{name} has {shape[0]}x{shape[1]} pixels: segmenting it in memory needs about "
        f"{need / 1e9:.1f} GB, {have / 1e9:.1f} GB are available; " + (advice or (
            "segment it block-wise: save it as a tiled TIFF, which nucleoseg segment "
            "reads region by region")))


class ImageError(ValueError):
    """An input image that cannot be used, with a message meant for the user."""


def to_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Convert an array to ``(H, W, 3) uint8`` RGB following the module's documented rules.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)``, ``(H, W, 1)``, ``(H, W, 2)``, ``(H, W, 3)`` or ``(H, W, 4)``, any real dtype.
    name : str
        How to call the input in error messages.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3) uint8``; the input itself when it already is one.

    Raises
    ------
    ImageError
        Unsupported shape, channel count or dtype, empty image, NaN/inf values.
    """
    arr = np.asarray(image)
    channels = check_layout(arr.shape, arr.dtype, name)
    if channels == 0:
        arr = arr[..., None]
    elif channels == 2:
        arr = arr[..., :1]
    elif channels == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = _rescale_to_uint8(arr, name)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr)


def check_layout(shape: tuple[int, ...], dtype: np.dtype, name: str = "image") -> int:
    """Check that an array of ``shape`` and ``dtype`` is a layout :func:`to_rgb_uint8` takes;
    return its channel count (0 for ``(H, W)``).

    Raises
    ------
    ImageError
        Unsupported dtype, shape or channel count, or an empty image.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "uif":  # not bool, complex, strings, objects
        raise ImageError(f"{name} has unsupported dtype {dtype}; expected integers or floats")
    if len(shape) == 3 and shape[-1] in (1, 2, 3, 4):
        channels = int(shape[-1])
    elif len(shape) == 2:
        channels = 0
    else:
        raise ImageError(
            f"{name} has shape {tuple(shape)}; expected a 2D image (H, W) or (H, W, C) with "
            "C in 1-4 (use one plane of a stack or time series)"
        )
    if shape[0] < 1 or shape[1] < 1:
        raise ImageError(f"{name} is empty (shape {tuple(shape)})")
    return channels


def _rescale_to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ImageError(f"{name} contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0 and hi <= 1:
            return np.round(arr * 255).astype(np.uint8)
        if lo >= 0 and hi <= 255:
            return np.round(arr).astype(np.uint8)
        if hi == lo:
            return np.zeros(arr.shape, np.uint8)
        return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        if hi == lo:
            return np.zeros(arr.shape, np.uint8)
        return np.round((arr.astype(np.float64) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if hi <= 255:
        return arr.astype(np.uint8)
    top = np.iinfo(arr.dtype).max
    return np.round(arr.astype(np.float64) * (255.0 / top)).astype(np.uint8)


def read_array(path: str | Path) -> np.ndarray:
    """Read an image file into a numpy array as stored (TIFF via tifffile, others via Pillow).

    Raises
    ------
    ImageError
        Missing file, directory, or a file that is not a readable image.
    """
    return _read(Path(path), decode=True)


def probe_image(path: str | Path) -> tuple[tuple[int, ...], np.dtype]:
    """Check from its header alone (no pixels decoded) that ``path`` is an image
    :func:`open_image` can take; return the stored ``(shape, dtype)``.

    Catches what can be known without reading the pixels: a missing file, a folder, a file
    that is no image, an image too large for memory, an unsupported layout. Damaged pixel
    data and NaN values are found only by :func:`open_image`.

    Raises
    ------
    ImageError
        With the same one-line reasons as :func:`open_image`.
    """
    p = Path(path)
    shape, dtype = _read(p, decode=False)
    check_layout(shape, dtype, p.name)
    check_memory(shape, p.name)
    return shape, dtype


#: Pillow modes kept as they are by :func:`read_array`, with the array they give
_PIL_ARRAYS = {"I;16": ((), np.uint16), "I;16B": ((), np.uint16), "I;16L": ((), np.uint16),
               "I": ((), np.int32), "F": ((), np.float32), "L": ((), np.uint8),
               "LA": ((2,), np.uint8), "RGB": ((3,), np.uint8), "RGBA": ((4,), np.uint8)}


def _orientation(im) -> int:
    """The EXIF orientation tag (1 = as stored); 1 when it cannot be read from the header."""
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # a damaged file: reading its pixels reports it
        return 1


def _read(p: Path, decode: bool):
    """The pixels of ``p`` as stored, or (``decode=False``) their ``(shape, dtype)``."""
    if not p.exists():
        raise ImageError(f"file not found: {p}")
    if p.is_dir():
        raise ImageError(f"{p} is a folder, not an image file")
    suffix = p.suffix.lower()
    try:
        if suffix in (".tif", ".tiff", ".svs", ".btf"):
            import tifffile

            with tifffile.TiffFile(p) as tif:
                page = tif.series[0].levels[0] if tif.series else tif.pages[0]
                n_pixels = int(np.prod(page.shape[:2]))
                if n_pixels > MAX_IN_MEMORY_PIXELS:
                    raise ImageError(
                        f"{p.name} has {page.shape[0]}x{page.shape[1]} pixels, more than "
                        "40000x40000 that fit in memory; segment it block-wise as a slide: "
                        f"nucleoseg segment {p.name} -o {p.stem}.zarr"
                    )
                return page.asarray() if decode else (tuple(page.shape), np.dtype(page.dtype))
        from PIL import Image, UnidentifiedImageError

        Image.MAX_IMAGE_PIXELS = MAX_IN_MEMORY_PIXELS
        try:
            with Image.open(p) as im:
                # other modes (palette, CMYK, 1-bit, ...) become RGB(A)
                mode = im.mode if im.mode in _PIL_ARRAYS else "RGBA" if "A" in im.mode else "RGB"
                # EXIF orientation: pixels as image viewers show them (phone/camera JPEGs)
                turned = _orientation(im) in (5, 6, 7, 8)
                if not decode:
                    extra, dtype = _PIL_ARRAYS[mode]
                    h, w = (im.size[0], im.size[1]) if turned else (im.size[1], im.size[0])
                    return (h, w, *extra), np.dtype(dtype)
                from PIL import ImageOps

                im = ImageOps.exif_transpose(im) or im
                return np.array(im if mode == im.mode else im.convert(mode))
        except UnidentifiedImageError:
            raise ImageError(f"{p.name} is not an image file Pillow or tifffile can read") from None
    except ImageError:
        raise
    except Exception as exc:  # corrupt/truncated files raise many different types
        raise ImageError(f"cannot read {p.name}: {exc}") from exc


def open_image(path: str | Path) -> np.ndarray:
    """Open a 2D image file as ``(H, W, 3) uint8`` RGB.

    Parameters
    ----------
    path : str or pathlib.Path
        TIFF (LZW/PackBits/JPEG via ``imagecodecs``), PNG, JPEG or anything Pillow reads.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3) uint8``.

    Raises
    ------
    ImageError
        With a one-line reason (missing, not an image, unsupported layout, NaN, too large
        for the memory available, ...).
    """
    p = Path(path)
    check_memory(_read(p, decode=False)[0], p.name)  # before any pixel is decoded
    return to_rgb_uint8(read_array(p), name=p.name)


def write_pyramid_tiff(
    path: str | Path, image: np.ndarray, mpp: float | None = 0.25, levels: int = 3,
    tile: int = 256, compression: str | None = "zlib",
) -> Path:
    """Write an RGB image as a tiled, pyramidal OME-TIFF (sub-IFDs, factor 2 per level).

    Used by the tests and benchmarks to make slides; also handy to turn a large plain TIFF
    into one napari can browse quickly. ``mpp`` defaults to 0.25 µm per pixel (40x).
    """
    import tifffile

    p = Path(path)
    kwargs: dict[str, Any] = {"tile": (tile, tile), "compression": compression,
                              "photometric": "rgb"}
    meta: dict[str, Any] = {"axes": "YXS"}
    extra: dict[str, Any] = {}
    if mpp:
        meta.update(PhysicalSizeX=mpp, PhysicalSizeY=mpp)
        extra = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(p, bigtiff=True, ome=True) as tw:
        tw.write(image, subifds=levels - 1, metadata=meta, **extra, **kwargs)
        level = image
        for _ in range(levels - 1):
            level = level[::2, ::2]
            tw.write(level, subfiletype=1, **kwargs)
    return p
