"""Instance-label files: read and write ``(H, W)`` integer labels (TIFF, PNG, NPY, MoNuSeg XML)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .images import ImageError, read_array

LABEL_SUFFIXES = (".tif", ".tiff", ".png", ".npy", ".xml")


def compact_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels with sparse ids (a whole slide's global ids run to width x height) renumbered
    1..N, for code whose cost grows with the largest id (``bincount``, ``find_objects``,
    ``regionprops``: 53 s and 11 GB for one nucleus with id 3e8).

    Returns
    -------
    labels : numpy.ndarray
        ``labels`` itself when its largest id is below its pixel count (nothing to gain),
        else ``(H, W) int32`` ids 1..N in the order of the old ids.
    original : numpy.ndarray or None
        ``original[new_id]`` is the old id (``original[0] == 0``); None when not renumbered.
    """
    labels = np.asarray(labels)
    if labels.size == 0 or int(labels.max()) < labels.size:
        return labels, None
    flat = labels.ravel()
    nz = np.flatnonzero(flat)
    old, inverse = np.unique(flat[nz], return_inverse=True)
    compact = np.zeros(labels.shape, np.int32)
    compact.ravel()[nz] = inverse.astype(np.int32) + 1
    return compact, np.concatenate([np.zeros(1, old.dtype), old])


def inner_boundary(labels: np.ndarray) -> np.ndarray:
    """``(H, W) bool``: nucleus pixels with a 4-neighbour of another id (or background).

    The same as ``skimage.segmentation.find_boundaries(labels, mode="inner")`` (the image
    border is no boundary), from four shifted comparisons: about 5x faster.
    """
    labels = np.asarray(labels)
    edge = np.zeros(labels.shape, bool)
    for axis in range(2):
        head = [slice(None)] * 2
        tail = [slice(None)] * 2
        head[axis], tail[axis] = slice(1, None), slice(None, -1)
        differs = labels[tuple(head)] != labels[tuple(tail)]
        edge[tuple(head)] |= differs
        edge[tuple(tail)] |= differs
    return edge & (labels > 0)


def read_labels(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read instance labels as ``(H, W) int32``.

    Parameters
    ----------
    path : str or pathlib.Path
        ``.tif``/``.png`` (single-channel integer image), ``.npy`` or MoNuSeg ``.xml``.
    shape : tuple of int, optional
        Image shape for ``.xml`` files (default 1000 x 1000, the MoNuSeg tile size).

    Raises
    ------
    ImageError
        Missing file, or content that is not a 2D integer label image.
    """
    p = Path(path)
    if p.suffix.lower() == ".xml":
        from .monuseg import read_xml_labels

        return read_xml_labels(p, shape or xml_image_shape(p))
    if p.suffix.lower() == ".npy":
        if not p.is_file():
            raise ImageError(f"file not found: {p}")
        arr = np.load(p, allow_pickle=False)
    else:
        arr = read_array(p)
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.dtype == np.uint8:
        raise ImageError(f"{p.name} is an RGB image, not a label image (one integer per pixel)")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ImageError(f"{p.name} has shape {arr.shape}; labels must be 2D (H, W)")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int32)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ImageError(f"{p.name} holds {arr.dtype} values; labels must be integers")
    if arr.size and arr.min() < 0:
        raise ImageError(f"{p.name} has negative labels")
    if arr.size and arr.max() > np.iinfo(np.int32).max:
        raise ImageError(f"{p.name} has labels beyond int32")
    return arr.astype(np.int32)


def xml_image_shape(xml_path: str | Path) -> tuple[int, int]:
    """The ``(H, W)`` of the image an outline XML belongs to: the image of the same name
    beside it or in a sibling ``images/`` folder (the MoNuSeg layout).

    Raises
    ------
    ImageError
        When no such image is found (outlines alone do not tell the image's size).
    """
    from .images import probe_image
    from .monuseg import IMAGE_SUFFIXES

    p = Path(xml_path)
    for folder in (p.parent, p.parent.parent / "images"):
        for suffix in IMAGE_SUFFIXES:
            candidate = folder / f"{p.stem}{suffix}"
            if candidate.is_file():
                return tuple(int(n) for n in probe_image(candidate)[0][:2])
    raise ImageError(f"{p.name}: outlines alone do not give the image size; put the image "
                     "beside it (or in ../images/), or give the shape (--shape HxW)")


def write_labels(path: str | Path, labels: np.ndarray) -> Path:
    """Write ``(H, W)`` integer labels atomically; the format follows the suffix.

    ``.tif`` (zlib-compressed, uint16 when the ids fit, else uint32), ``.png`` (uint16,
    up to 65535 ids), ``.npy`` or MoNuSeg ``.xml`` (outlines).
    """
    p = Path(path)
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise ImageError(f"labels must be a 2D integer array, got {labels.dtype} {labels.shape}")
    suffix = p.suffix.lower()
    if suffix not in LABEL_SUFFIXES:
        raise ImageError(f"cannot write labels as {suffix or 'a file without suffix'}; "
                         f"use one of {', '.join(LABEL_SUFFIXES)}")
    top = int(labels.max()) if labels.size else 0
    if suffix == ".xml":
        from .monuseg import write_xml

        return write_xml(labels, p)
    if suffix == ".npy":
        return atomic_write(p, lambda t: np.save(t, labels.astype(np.int32)))
    if suffix == ".png":
        if top > 65535:
            raise ImageError(f"{top} nuclei do not fit a 16-bit PNG; write .tif instead")
        from PIL import Image

        return atomic_write(p, lambda t: Image.fromarray(labels.astype(np.uint16)).save(t))
    import tifffile

    dtype = np.uint16 if top <= 65535 else np.uint32
    return atomic_write(
        p, lambda t: tifffile.imwrite(t, labels.astype(dtype), compression="zlib")
    )


def drop_small_and_relabel(labels: np.ndarray, min_size: int, raster_order: bool = False
                           ) -> np.ndarray:
    """Remove objects under ``min_size`` pixels and number the rest 1..N in the order of
    their old ids (``skimage.segmentation.relabel_sequential`` after a size filter), with
    one count and one lookup; with ``raster_order``, in the raster order of each object's
    first pixel instead."""
    labels = np.asarray(labels)
    flat = labels.ravel()
    # counting only the object pixels (a quarter of a slide's) halves the count's time
    at = np.flatnonzero(flat)
    ids = flat[at]
    sizes = np.bincount(ids, minlength=int(ids.max(initial=0)) + 1)
    keep = sizes >= max(int(min_size), 1)
    keep[0] = False
    kept = np.flatnonzero(keep)
    if raster_order:
        kept = kept[np.argsort(_first_of(ids, at, sizes.size, flat.size)[kept])]
    lut = np.zeros(sizes.size, np.int32)
    lut[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    return lut[labels]


def first_pixels(labels: np.ndarray) -> np.ndarray:
    """Flat (raster) index of each label's first pixel, by label; ``labels.size`` for ids
    that do not occur (and for 0)."""
    flat = labels.ravel()
    at = np.flatnonzero(flat)
    first = _first_of(flat[at], at, int(flat.max(initial=0)) + 1, flat.size)
    first[0] = flat.size
    return first


def _first_of(ids: np.ndarray, at: np.ndarray, n: int, size: int) -> np.ndarray:
    first = np.full(n, size, np.int64)
    np.minimum.at(first, ids, at)
    return first
