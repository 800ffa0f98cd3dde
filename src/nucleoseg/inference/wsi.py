"""Block-wise segmentation of whole slides into a zarr labels pyramid.

Three task stages, one task per block, run as a dask graph (local threads by default, or a
``dask.distributed`` cluster):

1. **predict**: the block's pixels plus the tile halo of *real* neighbouring pixels (reflection
   only at the slide edge) are tiled on one global grid of fixed tiles, so every pixel's
   probability comes from the same tile as in a single run over the whole slide; written to
   ``probabilities`` (float16) in the output store.
2. **label**: post-processing of the block plus ``margin`` pixels of probabilities on each side
   (waits for the neighbours' stage 1). Every object gets a *global* id from its own pixels:
   ``1 + row * W + col`` of its first pixel in raster order. A nucleus straddling a seam is
   seen whole by both blocks (when it is smaller than ``margin``), so both compute the same
   first pixel and write the same id on their side of the seam: no merge step, no duplicate,
   no cut, and no communication between blocks. Only the block's own pixels are written.
3. **export** (optional): per block, the nuclei whose first pixel lies in the block (the id
   says where) become GeoJSON features and CSV rows in part files, joined at the end.

Every task leaves a marker file when its output is written, so a rerun skips finished
blocks; the store's ``nucleoseg.complete`` attribute turns true only after the last stage,
the label pyramid and the exports are done.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.images import ImageError
from .postprocess import suppress_fill
from .predict import Cancelled, Progress, predict_padded, run
from .tiling import TileGrid, make_grid, pad_reflect

FORMAT_VERSION = 1
PROGRESS_DIR = "progress"
PARTS_DIR = "exports"


@dataclass(frozen=True)
class SlideJob:
    """Everything a worker needs to process one block of a slide (picklable).

    Coordinates are in the *working* grid: the chosen pyramid level resampled by ``scale`` to
    the model's resolution; ``to_level0`` converts them to slide (level 0) pixels.
    """

    slide: str
    slide_mpp: float | None
    level: int
    scale: float
    shape: tuple[int, int]
    to_level0: float
    out: str
    model: str
    overrides: tuple[tuple[str, Any], ...]
    tile: tuple[int, int]
    halo: int
    stride: int
    block: tuple[int, int]
    margin: int
    postprocess: tuple[tuple[str, Any], ...]
    blocks: tuple[tuple[int, int], ...]
    skipped: tuple[tuple[int, int], ...] = ()
    exports: tuple[str, ...] = ()
    fingerprint: dict = field(default_factory=dict, compare=False, hash=False)
    classifier: str = ""

    @property
    def n_blocks(self) -> tuple[int, int]:
        return -(-self.shape[0] // self.block[0]), -(-self.shape[1] // self.block[1])

    @property
    def id_dtype(self) -> str:
        return "uint32" if self.shape[0] * self.shape[1] < 2**32 - 1 else "uint64"

    def box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """``(r0, r1, c0, c1)`` of block ``(i, j)``."""
        (br, bc), (h, w) = self.block, self.shape
        r0, c0 = i * br, j * bc
        return r0, min(r0 + br, h), c0, min(c0 + bc, w)

    @property
    def core(self) -> tuple[int, int]:
        """The tile cores of the slide's one tile grid."""
        return self.tile[0] - 2 * self.halo, self.tile[1] - 2 * self.halo

    def marker(self, stage: str, i: int, j: int) -> Path:
        return Path(self.out) / PROGRESS_DIR / f"{stage}-{i}-{j}"

    def neighbours(self, i: int, j: int) -> list[tuple[int, int]]:
        nr, nc = self.n_blocks
        return [(a, b) for a in range(i - 1, i + 2) for b in range(j - 1, j + 2)
                if 0 <= a < nr and 0 <= b < nc]


# ---------------------------------------------------------------- planning
def plan_slide(
    slide_path: str | Path,
    out: str | Path,
    model: str = "unet",
    *,
    mpp: float | None = None,
    block: int | None = None,
    margin: int = 128,
    tissue: bool = True,
    geojson: bool = False,
    measurements: bool = False,
    precision: str = "auto",
    classify: str | None = None,
    **overrides: Any,
) -> SlideJob:
    """Open a slide, choose level/resolution and blocks, and describe the job.

    Parameters
    ----------
    slide_path : str or pathlib.Path
        Slide file (see :func:`nucleoseg.io.wsi.open_slide`).
    out : str or pathlib.Path
        The ``.zarr`` folder to write.
    model : str
        Model name or ``.keras`` path; its card gives tile, halo and post-processing.
    mpp : float, optional
        µm per pixel of level 0 when the file lacks it (or is wrong).
    block : int, optional
        Block side in pixels, rounded to a whole number of tile cores (default 2 tiles:
        smaller blocks keep peak memory low; the margin recomputed around each is cheap).
    margin : int
        Probability context on each side of a block for post-processing; nuclei larger than
        this may be split at a block seam.
    tissue : bool
        Skip blocks with no tissue (Otsu on a low level).
    geojson, measurements : bool
        Also write ``<out>.geojson`` (QuPath) / ``<out>_nuclei.csv``.
    precision : str
        Compute precision (see :mod:`nucleoseg.models.precision`); ``"auto"`` is resolved
        here, on the machine that plans, and the workers use the result.
    classify : str, optional
        A nucleus classifier (name or ``.npz``): the exports get each nucleus's class,
        computed block by block with the block's margin as context.
    **overrides
        ``tile``, ``halo``, ``batch_size`` and post-processing settings.
    """
    from ..io.wsi import MONUSEG_MPP, open_slide, tissue_mask, working_resolution
    from ..models.precision import resolve_precision
    from ..models.weights import read_card, resolve_model_path
    from .segment import Segmenter

    if overrides.pop("tta", None):
        raise ValueError("test-time augmentation (--tta) is for images held in memory; whole "
                         "slides run without it")
    model_path = resolve_model_path(model)
    card = read_card(model_path)
    precision = resolve_precision(precision or "auto", card)
    classifier = ""
    if classify:
        from ..classify.classifier import resolve_classifier_path

        classifier = str(resolve_classifier_path(classify).resolve())
    if overrides.get("batch_size") is None:
        # one tile per forward pass: on the CPU as fast as the card's batch and ~30 % less
        # peak memory (benchmarks/results/wsi_cpu.txt)
        overrides["batch_size"] = 1
    seg = Segmenter.from_card(None, card, **overrides)
    slide = open_slide(slide_path, mpp=mpp)
    try:
        level, scale = working_resolution(slide, float(card.get("microns_per_pixel",
                                                                MONUSEG_MPP)))
        lh, lw = slide.level_shape(level)
        shape = (max(1, round(lh * scale)), max(1, round(lw * scale)))
        to_level0 = slide.downsample(level) / scale
        # one grid of equal cores for the whole slide (fewest tiles, shrunk evenly), so any
        # block of cores computes every pixel in the same tile as one run over the slide
        grid = make_grid(shape, tile=seg.tile, halo=seg.halo, stride=seg.stride)
        tile, halo, core = grid.tile, grid.halo, grid.core
        want = block or 2 * (seg.tile - 2 * halo)
        block = tuple(max(1, round(want / c)) * c for c in core)
        nr, nc = -(-shape[0] // block[0]), -(-shape[1] // block[1])
        blocks = [(i, j) for i in range(nr) for j in range(nc)]
        skipped: list[tuple[int, int]] = []
        if tissue and len(blocks) > 1:
            mask, d = tissue_mask(slide)
            keep = []
            for i, j in blocks:
                r0, c0 = i * block[0], j * block[1]
                f = to_level0 / d
                a0, a1 = int(r0 * f), math.ceil(min(r0 + block[0], shape[0]) * f) + 1
                b0, b1 = int(c0 * f), math.ceil(min(c0 + block[1], shape[1]) * f) + 1
                (keep if mask[a0:a1, b0:b1].any() else skipped).append((i, j))
            blocks = keep
        stat = Path(slide_path).stat()
        exports = tuple(k for k, on in (("geojson", geojson), ("csv", measurements)) if on)
        params = tuple(sorted(seg.params.to_dict().items()))
        fingerprint = {
            "format": FORMAT_VERSION, "slide": str(Path(slide_path).resolve()),
            "slide_bytes": stat.st_size, "slide_mtime": int(stat.st_mtime),
            "mpp": slide.mpp, "level": level, "scale": scale, "shape": list(shape),
            "model": str(model_path), "model_sha256": card.get("sha256") or _file_id(model_path),
            "tile": list(tile), "halo": halo, "block": list(block), "margin": int(margin),
            "postprocess": dict(params), "tissue": bool(tissue), "precision": precision,
        }
        if classifier:
            fingerprint["classifier"] = _file_id(Path(classifier))
        return SlideJob(
            slide=str(Path(slide_path).resolve()), slide_mpp=slide.mpp, level=level,
            scale=scale, shape=shape, to_level0=to_level0, out=str(Path(out).resolve()),
            model=str(model_path), overrides=tuple(sorted(
                [(k, v) for k, v in overrides.items() if v is not None]
                + [("precision", precision)])),
            tile=tile, halo=halo, stride=seg.stride, block=block, margin=int(margin),
            postprocess=params, blocks=tuple(blocks), skipped=tuple(skipped),
            exports=exports, fingerprint=fingerprint, classifier=classifier,
        )
    finally:
        slide.close()


def _file_id(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}-{int(st.st_mtime)}"


# ---------------------------------------------------------------- output store
def _open_store(job: SlideJob, overwrite: bool) -> tuple[Any, bool]:
    """Create or reopen the output group; returns ``(group, already_complete)``."""
    import zarr

    out = Path(job.out)
    if out.exists():
        attrs = _read_attrs(out)
        if attrs is None:
            raise ImageError(f"{out} exists and is not a nucleoseg output; choose another path")
        if not store_settings_match(job) or overwrite:
            if not overwrite:
                raise ImageError(f"{out} holds a run with other settings (slide, model or "
                                 "tiling); pass --overwrite to replace it")
            shutil.rmtree(out)
        else:
            group = zarr.open_group(str(out), mode="r+", zarr_format=2)
            paths = export_paths(out)
            have_exports = all(paths[k].exists() for k in job.exports)
            return group, bool(attrs.get("complete")) and have_exports
    parent = out.parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as exc:
            raise ImageError(f"cannot create {parent}: {exc.strerror or exc}") from exc
    if not parent.is_dir():
        raise ImageError(f"cannot create {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK):
        raise ImageError(f"cannot write {out}: folder {parent} is not writable")
    from numcodecs import Blosc

    group = zarr.open_group(str(out), mode="w", zarr_format=2)
    h, w = job.shape
    chunk = (min(job.core[0], h), min(job.core[1], w))
    group.create_array("probabilities", shape=(h, w, 2), chunks=chunk + (2,), dtype="float16",
                       fill_value=0, compressors=Blosc(cname="lz4", clevel=3,
                                                       shuffle=Blosc.SHUFFLE))
    group.create_array("0", shape=(h, w), chunks=chunk, dtype=job.id_dtype, fill_value=0,
                       compressors=Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE))
    group.attrs["nucleoseg"] = {"complete": False, "fingerprint": _jsonable(job.fingerprint)}
    # marker and part files live in (empty) zarr groups so zarr readers accept the store
    group.create_group(PROGRESS_DIR)
    group.create_group(PARTS_DIR)
    return group, False


def store_settings_match(job: SlideJob) -> bool | None:
    """None when ``job.out`` does not exist; else whether it holds this job's run (so
    :func:`segment_slide` resumes or reuses it) - False also for a foreign folder."""
    out = Path(job.out)
    if not out.exists():
        return None
    attrs = _read_attrs(out)
    return attrs is not None and attrs.get("fingerprint") == _jsonable(job.fingerprint)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _read_attrs(out: Path) -> dict | None:
    meta = out / ".zattrs"
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text()).get("nucleoseg")
    except (OSError, ValueError):
        return None


def read_labels_store(path: str | Path) -> dict[str, Any]:
    """Open a labels store written by :func:`segment_slide` (lazily).

    Returns a dict: ``levels`` (zarr arrays, full resolution first), ``scale`` (slide level-0
    pixels per label pixel), ``complete`` (bool), ``n_nuclei`` and ``mpp``.
    """
    import zarr

    p = Path(path)
    attrs = _read_attrs(p)
    if attrs is None:
        raise ImageError(f"{p} is not a nucleoseg labels store")
    group = zarr.open_group(str(p), mode="r", zarr_format=2)
    levels = []
    k = 0
    while str(k) in group:
        levels.append(group[str(k)])
        k += 1
    return {"levels": levels, "scale": float(attrs.get("to_level0", 1.0)),
            "complete": bool(attrs.get("complete")), "n_nuclei": attrs.get("n_nuclei"),
            "mpp": attrs.get("fingerprint", {}).get("mpp")}


# ---------------------------------------------------------------- worker side
_PROCESS_LOCK = threading.Lock()
_MODEL_LOCK = threading.Lock()
_SEGMENTERS: dict[Any, Any] = {}
_SLIDES: dict[str, Any] = {}
#: Set to stop the tasks running in this process (local threads); see :func:`segment_slide`.
CANCEL = threading.Event()


def _segmenter(job: SlideJob):
    from .segment import Segmenter

    key = (job.model, job.overrides)
    with _PROCESS_LOCK:
        seg = _SEGMENTERS.get(key)
        if seg is None:
            _SEGMENTERS.clear()
            seg = Segmenter.load(job.model, **dict(job.overrides))
            _SEGMENTERS[key] = seg
    return seg


def _slide(job: SlideJob):
    from ..io.wsi import open_slide

    with _PROCESS_LOCK:
        slide = _SLIDES.get(job.slide)
        if slide is None:
            for old in _SLIDES.values():
                old.close()
            _SLIDES.clear()
            slide = open_slide(job.slide, mpp=job.slide_mpp)
            _SLIDES[job.slide] = slide
    return slide


def read_working(job: SlideJob, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """RGB ``uint8`` of a working-grid region; parts outside the slide are reflected.

    With ``job.scale != 1`` every working pixel is interpolated (bilinear) from the level at
    ``(i + 0.5) / scale - 0.5``, the same for any block, so resampling leaves no seams.
    """
    h, w = job.shape
    r0, r1 = max(rows[0], 0), min(rows[1], h)
    c0, c1 = max(cols[0], 0), min(cols[1], w)
    slide = _slide(job)
    if job.scale == 1.0:
        region = slide.read(job.level, (r0, r1), (c0, c1))
    else:
        region = _resampled(slide, job, (r0, r1), (c0, c1))
    pad = ((r0 - rows[0], rows[1] - r1), (c0 - cols[0], cols[1] - c1))
    return pad_reflect(region, pad)


def _resampled(slide, job: SlideJob, rows, cols) -> np.ndarray:
    from scipy import ndimage as ndi

    s = job.scale
    lh, lw = slide.level_shape(job.level)
    yy = (np.arange(rows[0], rows[1]) + 0.5) / s - 0.5
    xx = (np.arange(cols[0], cols[1]) + 0.5) / s - 0.5
    y0 = max(int(math.floor(yy[0])) - 1, 0)
    x0 = max(int(math.floor(xx[0])) - 1, 0)
    y1 = min(int(math.ceil(yy[-1])) + 2, lh)
    x1 = min(int(math.ceil(xx[-1])) + 2, lw)
    src = slide.read(job.level, (y0, y1), (x0, x1)).astype(np.float32)
    gy, gx = np.meshgrid(np.clip(yy - y0, 0, y1 - y0 - 1), np.clip(xx - x0, 0, x1 - x0 - 1),
                         indexing="ij")
    out = np.empty((len(yy), len(xx), 3), np.uint8)
    for ch in range(3):
        out[..., ch] = np.clip(np.round(ndi.map_coordinates(src[..., ch], [gy, gx], order=1,
                                                            mode="nearest")), 0, 255)
    return out


def _stopped() -> bool:
    return CANCEL.is_set()


def predict_block(job: SlideJob, i: int, j: int) -> dict:
    """Stage 1 for block ``(i, j)``: probabilities into the store (skipped when done)."""
    import zarr

    marker = job.marker("predict", i, j)
    if marker.exists():
        return {"ran": False}
    if _stopped():
        raise Cancelled("stopped by request")
    seg = _segmenter(job)
    r0, r1, c0, c1 = job.box(i, j)
    grid = TileGrid((r1 - r0, c1 - c0), job.tile, job.halo)
    (pt, pb), (pl, pr) = grid.padding
    padded = read_working(job, (r0 - pt, r1 + pb), (c0 - pl, c1 + pr))
    with _MODEL_LOCK:
        probs = run(predict_padded(seg.model, padded, grid, seg.batch_size, _stopped))
    probs = suppress_fill(probs[..., :2], padded[pt : pt + r1 - r0, pl : pl + c1 - c0])
    store = zarr.open_array(str(Path(job.out) / "probabilities"), mode="r+", zarr_format=2)
    store[r0:r1, c0:c1] = probs[..., :2].astype(np.float16)
    marker.touch()
    return {"ran": True}


def first_pixel_ids(labels: np.ndarray, origin: tuple[int, int], width: int,
                    dtype: str = "uint32") -> np.ndarray:
    """Global id per local label: ``1 + row * width + col`` of the label's first pixel in
    raster order (``origin`` is the slide position of ``labels[0, 0]``); index 0 maps to 0."""
    flat = labels.ravel()
    nz = np.flatnonzero(flat)
    n = int(labels.max()) if labels.size else 0
    first = np.full(n + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, flat[nz], nz)
    ids = np.zeros(n + 1, dtype)
    if n:
        rr, cc = np.divmod(first[1:], labels.shape[1])
        ids[1:] = ((rr + origin[0]) * width + cc + origin[1] + 1).astype(dtype)
    return ids


def label_block(job: SlideJob, i: int, j: int) -> dict:
    """Stage 2 for block ``(i, j)``: global-id instance labels of the block's own pixels."""
    import zarr

    from .postprocess import PostprocessParams, probabilities_to_labels

    marker = job.marker("label", i, j)
    if marker.exists():
        return {"ran": False, "nuclei": _read_count(marker)}
    if _stopped():
        raise Cancelled("stopped by request")
    h, w = job.shape
    r0, r1, c0, c1 = job.box(i, j)
    m = job.margin
    a0, a1, b0, b1 = max(r0 - m, 0), min(r1 + m, h), max(c0 - m, 0), min(c1 + m, w)
    probs = zarr.open_array(str(Path(job.out) / "probabilities"), mode="r", zarr_format=2)
    p = np.asarray(probs[a0:a1, b0:b1]).astype(np.float32)
    count = 0
    if p[r0 - a0 : r1 - a0, c0 - b0 : c1 - b0, 0].max(initial=0) > 0:
        local = probabilities_to_labels(p, PostprocessParams(**dict(job.postprocess)))
        ids = first_pixel_ids(local, (a0, b0), w, job.id_dtype)
        core = ids[local[r0 - a0 : r1 - a0, c0 - b0 : c1 - b0]]
        out = zarr.open_array(str(Path(job.out) / "0"), mode="r+", zarr_format=2)
        out[r0:r1, c0:c1] = core
        owned = np.unique(core)
        owned = owned[owned > 0]
        rr = (owned.astype(np.int64) - 1) // w
        cc = (owned.astype(np.int64) - 1) % w
        count = int(((rr >= r0) & (rr < r1) & (cc >= c0) & (cc < c1)).sum())
    marker.write_text(str(count))
    return {"ran": True, "nuclei": count}


def _read_count(marker: Path) -> int:
    try:
        return int(marker.read_text() or 0)
    except (OSError, ValueError):
        return 0


def export_block(job: SlideJob, i: int, j: int) -> dict:
    """Stage 3 for block ``(i, j)``: GeoJSON features / CSV rows of the nuclei it owns."""
    marker = job.marker("export", i, j)
    if marker.exists():
        return {"ran": False}
    parts = Path(job.out) / PARTS_DIR
    name = f"{i:05d}-{j:05d}"
    for kind, text in block_exports(job, i, j, job.exports).items():
        _write_part(parts / f"{name}.{kind}.part", text)
    marker.touch()
    return {"ran": True}


def block_exports(job: SlideJob, i: int, j: int, kinds: tuple[str, ...],
                  object_type: str = "detection") -> dict[str, str]:
    """GeoJSON features (comma-joined) and CSV rows of the nuclei block ``(i, j)`` owns:
    those whose id (their first pixel) lies inside the block."""
    import zarr

    from ..io.geojson import MEASUREMENT_COLUMNS, labels_to_geojson, measure_nuclei

    h, w = job.shape
    r0, r1, c0, c1 = job.box(i, j)
    m = job.margin
    a0, a1, b0, b1 = max(r0 - m, 0), min(r1 + m, h), max(c0 - m, 0), min(c1 + m, w)
    labels = np.asarray(zarr.open_array(str(Path(job.out) / "0"), mode="r",
                                        zarr_format=2)[a0:a1, b0:b1])
    flat = labels.astype(np.int64) - 1
    rr, cc = flat // w, flat % w
    owned = (labels > 0) & (rr >= r0) & (rr < r1) & (cc >= c0) & (cc < c1)
    window = labels
    labels = np.where(owned, labels, 0)
    image = None
    if ("csv" in kinds or job.classifier) and Path(job.slide).exists():
        image = read_working(job, (a0, a1), (b0, b1))
    classes = None
    if job.classifier and image is not None:
        classes = _block_classes(job.classifier, image, window, labels)
    out: dict[str, str] = {}
    if "geojson" in kinds:
        features = labels_to_geojson(labels, object_type=object_type, offset=(a0, b0),
                                     scale=job.to_level0, classes=classes)["features"]
        out["geojson"] = ",\n".join(json.dumps(f, separators=(",", ":")) for f in features)
    if "csv" in kinds:
        rows = measure_nuclei(labels, image, job.slide_mpp, offset=(a0, b0),
                              scale=job.to_level0)
        columns = list(MEASUREMENT_COLUMNS)
        if job.classifier:
            columns.append("class")
            for r in rows:
                r["class"] = (classes or {}).get(r["id"], ("", ""))[0]
        out["csv"] = "".join(",".join(_fmt(r[k]) for k in columns) + "\n" for r in rows)
    return out


def _block_classes(classifier: str, image: np.ndarray, window: np.ndarray,
                   owned: np.ndarray) -> dict[int, tuple[str, str]]:
    """Classes of the nuclei a block owns; every nucleus of the window (block + margin) is
    described, so neighbourhood and context features see across the block's edges."""
    from ..classify.classifier import NucleusClassifier

    clf = NucleusClassifier.load(classifier)
    ids, idx = clf.predict(image, window)
    keep = np.isin(ids, np.unique(owned))
    return {int(i): (clf.classes[int(k)], clf.colors[int(k)])
            for i, k in zip(ids[keep], idx[keep], strict=True)}


def export_store(store: str | Path, geojson: str | Path | None = None,
                 csv: str | Path | None = None, object_type: str = "detection") -> list[Path]:
    """Write QuPath GeoJSON and/or the per-nucleus CSV of a finished labels store, block by
    block (bounded memory). The CSV's hematoxylin column needs the slide at the path the
    store recorded; without it the column is NaN."""
    p = Path(store)
    attrs = _read_attrs(p)
    if attrs is None:
        raise ImageError(f"{p} is not a nucleoseg labels store")
    if not attrs.get("complete"):
        raise ImageError(f"{p} is incomplete; finish the run before exporting")
    fp = attrs["fingerprint"]
    job = SlideJob(slide=fp["slide"], slide_mpp=fp.get("mpp"), level=fp["level"],
                   scale=fp["scale"], shape=tuple(fp["shape"]),
                   to_level0=float(attrs.get("to_level0", 1.0)), out=str(p), model="",
                   overrides=(), tile=tuple(fp["tile"]), halo=fp["halo"], stride=1,
                   block=tuple(fp["block"]), margin=fp["margin"], postprocess=(), blocks=())
    blocks = [(i, j) for i in range(job.n_blocks[0]) for j in range(job.n_blocks[1])]
    written = []
    for kind, target in (("geojson", geojson), ("csv", csv)):
        if target is not None:
            texts = (block_exports(job, i, j, (kind,), object_type)[kind] for i, j in blocks)
            written.append(write_streamed(target, kind, texts))
    return written


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _write_part(path: Path, text: str) -> None:
    from ..io.atomic import atomic_write_bytes

    atomic_write_bytes(path, text.encode())


def _call(func: Callable, job: SlideJob, i: int, j: int, *deps: Any) -> dict:
    return func(job, i, j)


# ---------------------------------------------------------------- driver
def build_graph(job: SlideJob) -> tuple[dict, list[str]]:
    """The dask task graph (a plain dict) and its keys, stage by stage."""
    dsk: dict[str, tuple] = {}
    keys: list[str] = []
    todo = set(job.blocks)
    for i, j in job.blocks:
        key = f"predict-{i}-{j}"
        dsk[key] = (_call, predict_block, job, i, j)
        keys.append(key)
    all_blocks = [(i, j) for i in range(job.n_blocks[0]) for j in range(job.n_blocks[1])]
    label_blocks = [b for b in all_blocks if any(n in todo for n in job.neighbours(*b))]
    for i, j in label_blocks:
        key = f"label-{i}-{j}"
        deps = [f"predict-{a}-{b}" for a, b in job.neighbours(i, j) if (a, b) in todo]
        dsk[key] = (_call, label_block, job, i, j, *deps)
        keys.append(key)
    if job.exports:
        labelled = set(label_blocks)
        for i, j in label_blocks:
            key = f"export-{i}-{j}"
            deps = [f"label-{a}-{b}" for a, b in job.neighbours(i, j) if (a, b) in labelled]
            dsk[key] = (_call, export_block, job, i, j, *deps)
            keys.append(key)
    return dsk, keys


def segment_slide(
    job: SlideJob,
    scheduler: str | Any | None = None,
    workers: int = 2,
    should_stop: Callable[[], bool] | None = None,
    overwrite: bool = False,
    keep_probabilities: bool = False,
) -> Generator[Progress, None, dict]:
    """Run a :class:`SlideJob`; a progress generator returning a summary dict.

    Parameters
    ----------
    job : SlideJob
        From :func:`plan_slide`.
    scheduler : str or distributed.Client, optional
        ``None``: dask's threaded scheduler in this process with ``workers`` threads (the
        model runs one block at a time; reading, post-processing and writing overlap with
        it). A ``distributed.Client`` or a scheduler address (``tcp://host:8786``) runs the
        tasks on that dask.distributed cluster; workers must see the slide, the model and the
        output folder at the same paths.
    should_stop : callable, optional
        Polled between tasks (and between tiles locally); True stops the run with
        :class:`Cancelled`, keeping finished blocks for a later resume.
    overwrite : bool
        Replace an existing output written with other settings.
    keep_probabilities : bool
        Keep the float16 probability map in the store (removed by default once labels are
        complete).

    Returns
    -------
    dict
        ``out``, ``shape``, ``n_nuclei``, ``blocks``, ``background_blocks``, ``tasks_run``,
        ``tasks_skipped``, ``seconds``, ``complete``.
    """
    t0 = time.perf_counter()
    group, complete = _open_store(job, overwrite)
    if complete:
        attrs = _read_attrs(Path(job.out)) or {}
        yield 0, 0, "already complete"
        return {"out": job.out, "shape": job.shape, "n_nuclei": attrs.get("n_nuclei"),
                "complete": True, "tasks_run": 0, "tasks_skipped": 0, "seconds": 0.0,
                "blocks": len(job.blocks), "background_blocks": len(job.skipped)}
    dsk, keys = build_graph(job)
    results = yield from _execute(dsk, keys, scheduler, workers, should_stop)
    yield len(keys), len(keys), "building the label pyramid"
    levels = _build_pyramid(group, job)
    n_nuclei = sum(r.get("nuclei", 0) for k, r in results.items() if k.startswith("label-"))
    outputs = _join_exports(job)
    if not keep_probabilities and "probabilities" in group:
        shutil.rmtree(Path(job.out) / "probabilities", ignore_errors=True)
    attrs = {"complete": True, "fingerprint": _jsonable(job.fingerprint),
             "n_nuclei": n_nuclei, "to_level0": job.to_level0, "shape": list(job.shape),
             "levels": levels, "exports": outputs}
    group = _reopen(job)
    group.attrs.update(_ngff_attrs(job, levels))
    group.attrs["nucleoseg"] = attrs
    ran = sum(1 for r in results.values() if r.get("ran"))
    return {"out": job.out, "shape": job.shape, "n_nuclei": n_nuclei, "complete": True,
            "blocks": len(job.blocks), "background_blocks": len(job.skipped),
            "tasks_run": ran, "tasks_skipped": len(results) - ran,
            "seconds": time.perf_counter() - t0, "exports": outputs}


def _reopen(job: SlideJob):
    import zarr

    return zarr.open_group(job.out, mode="r+", zarr_format=2)


def _execute(dsk, keys, scheduler, workers, should_stop) -> Generator[Progress, None, dict]:
    total = len(keys)
    if scheduler is None:
        return (yield from _execute_threads(dsk, keys, workers, should_stop))
    from distributed import Client, as_completed

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    own = client is not scheduler
    try:
        futures = client.get(dsk, keys, sync=False)
        by_future = dict(zip(futures, keys, strict=True))
        results: dict[str, dict] = {}
        yield 0, total, f"{total} block task(s) on {client.scheduler.address}"
        for fut in as_completed(futures):
            if should_stop is not None and should_stop():
                client.cancel(futures)
                raise Cancelled("stopped by request; finished blocks are kept")
            results[by_future[fut]] = fut.result()
            yield len(results), total, _describe(by_future[fut])
        return results
    finally:
        if own:
            client.close()


def _execute_threads(dsk, keys, workers, should_stop) -> Generator[Progress, None, dict]:
    import queue

    from dask.callbacks import Callback
    from dask.threaded import get

    done: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    class _Report(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            done.put(key)

    def target() -> None:
        try:
            with _Report():
                outcome["values"] = get(dsk, keys, num_workers=max(1, workers))
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc
        finally:
            done.put(None)

    CANCEL.clear()
    thread = threading.Thread(target=target, name="nucleoseg-slide", daemon=True)
    thread.start()
    total, finished = len(keys), 0
    yield 0, total, f"{total} block task(s)"
    try:
        while True:
            try:
                key = done.get(timeout=0.2)
            except queue.Empty:
                key = ""
            if should_stop is not None and should_stop():
                CANCEL.set()
            if key is None:
                break
            if key:
                finished += 1
                yield finished, total, _describe(str(key))
    finally:
        if thread.is_alive():
            CANCEL.set()
            thread.join()
    if "error" in outcome:
        exc = outcome["error"]
        if isinstance(exc, Cancelled):
            raise Cancelled("stopped by request; finished blocks are kept") from None
        raise exc
    return dict(zip(keys, outcome["values"], strict=True))


def _describe(key: str) -> str:
    stage, i, j = key.rsplit("-", 2)
    verb = {"predict": "predicted", "label": "labelled", "export": "exported"}.get(stage, stage)
    return f"{verb} block {i},{j}"


def _build_pyramid(group, job: SlideJob, min_side: int = 1024) -> int:
    """Nearest-neighbour levels 1, 2, ... (factor 2) from level 0, until the longest side is
    at most ``min_side``; returns the number of levels."""
    import dask.array as da
    from numcodecs import Blosc

    level = 0
    shape = job.shape
    while max(shape) > min_side:
        src = da.from_zarr(group[str(level)])
        down = src[::2, ::2]
        shape = down.shape
        chunks = tuple(min(c, s) for c, s in zip(group["0"].chunks, shape, strict=True))
        name = str(level + 1)
        if name in group:
            del group[name]
        dst = group.create_array(name, shape=shape, chunks=chunks, dtype=src.dtype,
                                 fill_value=0, compressors=Blosc(cname="zstd", clevel=3,
                                                                 shuffle=Blosc.BITSHUFFLE))
        da.store(down.rechunk(chunks), dst, lock=False, scheduler="threads")
        level += 1
    return level + 1


def _ngff_attrs(job: SlideJob, levels: int) -> dict:
    unit = job.slide_mpp * job.to_level0 if job.slide_mpp else 1.0
    return {"multiscales": [{
        "version": "0.4", "name": "nuclei",
        "axes": [{"name": "y", "type": "space", **({"unit": "micrometer"} if job.slide_mpp
                                                     else {})},
                 {"name": "x", "type": "space", **({"unit": "micrometer"} if job.slide_mpp
                                                     else {})}],
        "datasets": [{"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [unit * 2**k, unit * 2**k]}]} for k in range(levels)],
    }]}


def export_paths(out: str | Path) -> dict[str, Path]:
    """Where the slide exports of a store go: ``<out>.geojson`` and ``<out>_nuclei.csv``."""
    base = Path(out).with_suffix("")
    return {"geojson": base.with_name(base.name + ".geojson"),
            "csv": base.with_name(base.name + "_nuclei.csv")}


def write_streamed(path: str | Path, kind: str, texts, extra_columns: tuple[str, ...] = ()
                   ) -> Path:
    """Write GeoJSON feature fragments (``kind="geojson"``, comma-joined) or CSV row blocks
    (``"csv"``, header :data:`MEASUREMENT_COLUMNS` + ``extra_columns``) from an iterable of
    strings into one file, atomically and streaming."""
    from ..io.atomic import atomic_write
    from ..io.geojson import MEASUREMENT_COLUMNS

    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            if kind == "csv":
                f.write(",".join((*MEASUREMENT_COLUMNS, *extra_columns)) + "\n")
                for text in texts:
                    f.write(text)
                return
            f.write('{"type":"FeatureCollection","features":[\n')
            first = True
            for text in texts:
                if text:
                    f.write(("" if first else ",\n") + text)
                    first = False
            f.write("\n]}\n")

    return atomic_write(path, write)


def _join_exports(job: SlideJob) -> dict[str, str]:
    parts = Path(job.out) / PARTS_DIR
    paths = export_paths(job.out)
    extra = ("class",) if job.classifier else ()
    return {kind: str(write_streamed(paths[kind], kind, (
        part.read_text() for part in sorted(parts.glob(f"*.{kind}.part"))), extra))
        for kind in job.exports}
