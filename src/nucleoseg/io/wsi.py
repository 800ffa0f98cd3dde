"""Whole-slide images as lazy pyramids: SVS, pyramidal/OME-TIFF, large plain TIFF and zarr.

Reading goes through tifffile's zarr store (``TiffPageSeries.aszarr``): one pure-Python
stack (tifffile + imagecodecs) decodes SVS (JPEG / JPEG 2000), OME-TIFF and plain tiled or
stripped TIFF, reads only the tiles a region touches, and gives napari and dask the same
arrays. tiffslide would add fsspec and a second metadata layer over the same tifffile
decoder; OpenSlide needs a C library. Resolution comes from OME ``PhysicalSizeX``, the
Aperio ``MPP =`` field or the TIFF resolution tags, in that order.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .images import ImageError, fits_in_memory

#: Resolution of the MoNuSeg training tiles (40x), µm per pixel.
MONUSEG_MPP = 0.25
#: Plausible µm/px; values outside come from default 72-dpi tags and are ignored.
_MPP_RANGE = (0.05, 20.0)
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".btf", ".ndpi", ".scn", ".zarr")
#: A plain image larger than this many pixels goes through the block-wise slide path.
SLIDE_MIN_PIXELS = 10_000 * 10_000


class SlideWarning(UserWarning):
    """Something about a slide the user should know (e.g. missing resolution)."""


@dataclass
class Slide:
    """A lazily read whole-slide image.

    Attributes
    ----------
    path : pathlib.Path
        The file or ``.zarr`` folder.
    levels : list
        zarr arrays, full resolution first, each indexed ``[rows, cols]`` to ``(h, w, C)`` or
        ``(h, w)`` (see :meth:`read`).
    mpp : float or None
        µm per pixel of level 0, None when the file does not say.
    """

    path: Path
    levels: list[Any]
    mpp: float | None
    channel_axis: int = 2
    _handle: Any = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of level 0."""
        return self.level_shape(0)

    def level_shape(self, level: int) -> tuple[int, int]:
        shape = self.levels[level].shape
        if self.channel_axis == 0:
            return int(shape[1]), int(shape[2])
        return int(shape[0]), int(shape[1])

    def downsample(self, level: int) -> float:
        """Level-0 pixels per pixel of ``level``."""
        return self.shape[1] / self.level_shape(level)[1]

    def read(self, level: int, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        """``(h, w, 3) uint8`` RGB of a region (clipped to the level)."""
        arr = self.levels[level]
        h, w = self.level_shape(level)
        r0, r1 = max(rows[0], 0), min(rows[1], h)
        c0, c1 = max(cols[0], 0), min(cols[1], w)
        if self.channel_axis == 0:
            region = np.moveaxis(np.asarray(arr[:, r0:r1, c0:c1]), 0, -1)
        else:
            region = np.asarray(arr[r0:r1, c0:c1])
        return as_rgb8(region, self.path.name)

    def dask_levels(self) -> list[Any]:
        """The pyramid as dask arrays ``(h, w, C)`` for napari (multiscale image layer)."""
        import dask.array as da

        out = []
        for arr in self.levels:
            d = da.from_zarr(arr)
            if self.channel_axis == 0:
                d = da.moveaxis(d, 0, -1)
            out.append(d)
        return out

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def as_rgb8(region: np.ndarray, name: str = "slide") -> np.ndarray:
    """A slide region as ``(h, w, 3) uint8``: RGB kept, RGBA drops alpha, gray replicated.

    Slides are normalised with one fixed rule for every block, so only 8-bit data is taken
    (rescaling wider types would need statistics of the whole slide).
    """
    if region.dtype != np.uint8:
        raise ImageError(f"{name}: whole-slide reading takes 8-bit images, this one is "
                         f"{region.dtype}; convert it to 8-bit RGB first")
    if region.ndim == 2:
        region = region[..., None]
    if region.shape[-1] == 1:
        return np.repeat(region, 3, axis=-1)
    if region.shape[-1] in (3, 4):
        return np.ascontiguousarray(region[..., :3])
    raise ImageError(f"{name}: {region.shape[-1]} channels; expected gray, RGB or RGBA")


def is_slide(path: str | Path) -> bool:
    """True for inputs that need the block-wise path: ``.svs``/``.zarr``, TIFF pyramids, and
    TIFFs of more than :data:`SLIDE_MIN_PIXELS` pixels or too large to segment in the memory
    available now (:func:`~nucleoseg.io.images.fits_in_memory`)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".svs", ".ndpi", ".scn", ".zarr"):
        return True
    if suffix not in (".tif", ".tiff", ".btf") or not p.is_file():
        return False
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            series = tif.series[0]
            shape = series.levels[0].shape
            hw = _yx(series.levels[0].axes, shape)
            return (len(series.levels) > 1 or hw[0] * hw[1] > SLIDE_MIN_PIXELS
                    or not fits_in_memory(hw))
    except Exception:
        return False


def _yx(axes: str, shape: tuple[int, ...]) -> tuple[int, int]:
    return int(shape[axes.index("Y")]), int(shape[axes.index("X")])


def open_slide(path: str | Path, mpp: float | None = None) -> Slide:
    """Open a slide lazily.

    Parameters
    ----------
    path : str or pathlib.Path
        SVS, (OME-)TIFF (pyramidal or not) or a zarr array / OME-Zarr multiscale group.
    mpp : float, optional
        µm per pixel of level 0; replaces what the file says (use it when the file lacks it).

    Raises
    ------
    ImageError
        Missing, truncated or corrupt file, unsupported compression or layout.
    """
    p = Path(path)
    if not p.exists():
        raise ImageError(f"file not found: {p}")
    if p.suffix.lower() == ".zarr" or (p.is_dir() and (p / ".zgroup").exists()):
        slide = _open_zarr(p)
    elif p.is_dir():
        raise ImageError(f"{p} is a folder, not a slide")
    else:
        slide = _open_tiff(p)
    if mpp is not None:
        if not mpp > 0:
            raise ImageError(f"microns per pixel must be positive, got {mpp}")
        slide.mpp = float(mpp)
    return slide


def _open_tiff(p: Path) -> Slide:
    import logging

    import tifffile
    import zarr

    # tifffile logs broken IFDs and carries on with what it could parse; for a slide that
    # would pass off part of a file as the whole, so any logged error refuses the file
    problems: list[str] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: problems.append(record.getMessage())  # type: ignore
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        tif = tifffile.TiffFile(p)
    except Exception as exc:
        logger.removeHandler(handler)
        raise ImageError(f"cannot read {p.name} as TIFF: {exc}") from exc
    try:
        series_list = tif.series
        logger.removeHandler(handler)
        if problems:
            raise ImageError(f"{p.name} is corrupt or truncated: {problems[0]}")
        if not series_list:
            raise ImageError(f"{p.name} holds no image")
        series = series_list[0]
        _check_complete(tif, series, p)
        axes = series.levels[0].axes
        keep = set("YXSC")
        if any(a not in keep and n != 1 for a, n in zip(axes, series.levels[0].shape,
                                                          strict=True)):
            raise ImageError(f"{p.name} has axes {axes}; whole-slide reading takes one 2D "
                             "plane (Y, X and colour samples)")
        store = series.aszarr()
        root = zarr.open(store, mode="r")
        arrays = [root[str(k)] for k in range(len(series.levels))] if hasattr(
            root, "keys") else [root]
        levels, channel_axis = [], 2
        for arr, level in zip(arrays, series.levels, strict=True):
            squeezed = "".join(a for a, n in zip(level.axes, level.shape, strict=True)
                               if a in keep and not (a in "SC" and n == 1))
            view = _squeeze_view(arr, level.axes, level.shape)
            channel_axis = 0 if squeezed[:1] in ("S", "C") else 2
            levels.append(view)
        slide = Slide(p, levels, _tiff_mpp(tif), channel_axis, tif)
        _probe(slide)
        return slide
    except ImageError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise ImageError(f"cannot read {p.name}: {exc}") from exc
    finally:
        logger.removeHandler(handler)


class _Squeezed:
    """An array view that drops singleton axes of a zarr array (e.g. OME's T and Z)."""

    def __init__(self, arr: Any, drop: tuple[int, ...]):
        self.arr, self.drop = arr, drop
        self.shape = tuple(n for k, n in enumerate(arr.shape) if k not in drop)
        self.dtype = arr.dtype
        self.chunks = tuple(n for k, n in enumerate(arr.chunks) if k not in drop)
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = list(key) + [slice(None)] * (self.ndim - len(key))
        full, it = [], iter(key)
        for k in range(self.arr.ndim):
            full.append(0 if k in self.drop else next(it))
        return self.arr[tuple(full)]


def _squeeze_view(arr: Any, axes: str, shape: tuple[int, ...]) -> Any:
    drop = tuple(k for k, (a, n) in enumerate(zip(axes, shape, strict=True))
                 if n == 1 and a not in "YX")
    return _Squeezed(arr, drop) if drop else arr


def _check_complete(tif: Any, series: Any, p: Path) -> None:
    """Every tile/strip of every level lies inside the file (catches truncated copies)."""
    size = p.stat().st_size
    for level in series.levels:
        for page in level.pages:
            if page is None:
                continue
            offsets = np.asarray(page.dataoffsets, np.int64)
            counts = np.asarray(page.databytecounts, np.int64)
            if offsets.size and int((offsets + counts).max()) > size:
                raise ImageError(
                    f"{p.name} is truncated: image data ends at byte "
                    f"{int((offsets + counts).max())} but the file has {size} bytes")


def _probe(slide: Slide) -> None:
    """Decode one small region of every level: unsupported compression fails here."""
    for k in range(len(slide.levels)):
        try:
            slide.read(k, (0, 16), (0, 16))
        except ImageError:
            raise
        except Exception as exc:
            page_info = ""
            handle = slide._handle
            if handle is not None:
                page_info = f" (compression {handle.series[0].levels[k].keyframe.compression!r})"
            raise ImageError(f"cannot decode {slide.path.name}{page_info}: {exc}; the file "
                             "may be corrupt or use a compression imagecodecs lacks") from exc


def _plausible(mpp: float | None) -> float | None:
    if mpp is None or not math.isfinite(mpp) or not _MPP_RANGE[0] <= mpp <= _MPP_RANGE[1]:
        return None
    return float(mpp)


def _tiff_mpp(tif: Any) -> float | None:
    page = tif.pages[0]
    if tif.is_ome and tif.ome_metadata:
        m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata)
        if m:
            factor = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4}.get(
                unit.group(1) if unit else "µm", 1.0)
            return _plausible(float(m.group(1)) * factor)
    desc = page.description or ""
    m = re.search(r"MPP\s*=\s*([0-9.]+)", desc)
    if m:
        return _plausible(float(m.group(1)))
    tags = page.tags
    if "XResolution" in tags and "ResolutionUnit" in tags:
        num, den = tags["XResolution"].value
        unit = int(tags["ResolutionUnit"].value)
        if num and den:
            per_unit = num / den
            if unit == 3:
                return _plausible(1e4 / per_unit)
            if unit == 2:
                return _plausible(25400.0 / per_unit)
    return None


def _open_zarr(p: Path) -> Slide:
    import zarr

    try:
        root = zarr.open(str(p), mode="r")
    except Exception as exc:
        raise ImageError(f"cannot open {p} as zarr: {exc}") from exc
    mpp = None
    if hasattr(root, "keys"):
        attrs = dict(root.attrs)
        if "nucleoseg" in attrs:
            raise ImageError(f"{p.name} holds nucleoseg labels, not an image")
        paths = sorted((k for k in root.array_keys() if k.isdigit()), key=int)
        ms = attrs.get("multiscales")
        if ms:
            datasets = ms[0].get("datasets", [])
            paths = [d["path"] for d in datasets] or paths
            try:
                scale = datasets[0]["coordinateTransformations"][0]["scale"]
                mpp = _plausible(float(scale[-1]))
            except (KeyError, IndexError, TypeError, ValueError):
                pass
        if not paths:
            raise ImageError(f"{p.name}: no image arrays (0, 1, ...) in the zarr group")
        levels = [root[k] for k in paths]
    else:
        levels = [root]
    first = levels[0]
    channel_axis = 0 if first.ndim == 3 and first.shape[0] in (1, 3, 4) and first.shape[-1] > 4 \
        else 2
    if first.ndim not in (2, 3):
        raise ImageError(f"{p.name}: arrays of shape {first.shape}; expected (Y, X, C)")
    slide = Slide(p, levels, mpp, channel_axis)
    _probe(slide)
    return slide


def working_resolution(slide: Slide, target_mpp: float = MONUSEG_MPP,
                       tolerance: float = 1.2) -> tuple[int, float]:
    """Pick the pyramid level to read and the resampling factor to the model's resolution.

    Returns ``(level, scale)``: model-resolution pixels per pixel of ``level``. The level
    closest to ``target_mpp`` (in log scale) is chosen; ``scale`` is 1 when its resolution
    is within ``tolerance`` of the target. Without resolution metadata a
    :class:`SlideWarning` is issued and level 0 is taken as it is.
    """
    if slide.mpp is None:
        warnings.warn(
            f"{slide.path.name} has no resolution metadata; assuming level 0 is at the "
            f"model's {target_mpp} µm/px (MoNuSeg 40x). Pass --mpp if it is not.",
            SlideWarning, stacklevel=2)
        return 0, 1.0
    best = min(range(len(slide.levels)), key=lambda k: abs(
        math.log(slide.mpp * slide.downsample(k) / target_mpp)))
    level_mpp = slide.mpp * slide.downsample(best)
    ratio = level_mpp / target_mpp
    if 1 / tolerance <= ratio <= tolerance:
        return best, 1.0
    return best, ratio
