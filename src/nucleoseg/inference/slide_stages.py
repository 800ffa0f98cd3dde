"""The three block stages of a whole-slide run, and the per-run state of their workers.

1. **predict**: the block's pixels plus the tile halo of *real* neighbouring pixels
   (reflection only at the slide edge), tiled on the slide's one grid of fixed tiles, so every
   pixel's probability comes from the same tile as in a single run over the whole slide;
   written to ``probabilities`` (float16).
2. **label**: post-processing of the block plus its margin (after the neighbours' stage 1);
   global ids from :func:`~nucleoseg.inference.slide_blocks.first_pixel_ids`; only the
   block's own pixels are written.
3. **export** (optional): GeoJSON features / CSV rows of the nuclei the block owns, as part
   files joined at the end.

Each task leaves a marker file when its output is written, so a rerun skips it.
"""

from __future__ import annotations

import functools
import json
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..io import labels_store
from ..io.images import ImageError
from .postprocess import PostprocessParams, probabilities_to_labels, suppress_fill
from .predict import Cancelled, predict_padded, run
from .slide_blocks import SlideJob, first_pixel_ids
from .tiling import TileGrid, pad_reflect


class SlideRun:
    """One run's worker state in this process: its cancel flag, its model and open slide.

    Two runs in one process (two slides at once, or a run and an export) never share a
    cache or a cancel flag. Pickled into a dask.distributed task, a run travels as its id and
    each worker process keeps one :class:`SlideRun` per id (see :func:`run_for`).
    """

    def __init__(self, run_id: str | None = None):
        import uuid

        self.run_id = run_id or uuid.uuid4().hex
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self.model_lock = threading.Lock()  # the model runs one block at a time
        self._segmenter: tuple[Any, Any] | None = None
        self._slide: tuple[str, Any] | None = None

    def __reduce__(self):
        return run_for, (self.run_id,)

    def stopped(self) -> bool:
        return self.cancel.is_set()

    def segmenter(self, job: SlideJob):
        """The job's model, loaded once per run."""
        from .segment import Segmenter

        key = (job.model, job.overrides)
        with self._lock:
            if self._segmenter is None or self._segmenter[0] != key:
                self._segmenter = (key, Segmenter.load(job.model, **dict(job.overrides)))
            return self._segmenter[1]

    def slide(self, job: SlideJob):
        """The job's slide, opened once per run."""
        from ..io.wsi import open_slide

        with self._lock:
            if self._slide is None or self._slide[0] != job.slide:
                self._close_slide()
                self._slide = (job.slide, open_slide(job.slide, mpp=job.slide_mpp))
            return self._slide[1]

    def _close_slide(self) -> None:
        if self._slide is not None:
            self._slide[1].close()
            self._slide = None

    def close(self) -> None:
        """Free the model and close the slide."""
        with self._lock:
            self._close_slide()
            self._segmenter = None
        with _RUNS_LOCK:
            _RUNS.pop(self.run_id, None)


#: Runs served by this process, by id (a distributed worker keeps the last few).
_RUNS: dict[str, SlideRun] = {}
_RUNS_LOCK = threading.Lock()
_KEEP_RUNS = 4


def run_for(run_id: str | None = None) -> SlideRun:
    """This process's :class:`SlideRun` of ``run_id`` (created on first use); a new run with
    a fresh id when ``run_id`` is None."""
    with _RUNS_LOCK:
        found = _RUNS.get(run_id) if run_id is not None else None
        if found is None:
            found = SlideRun(run_id)
            _RUNS[found.run_id] = found
            for old in list(_RUNS)[:-_KEEP_RUNS]:
                _RUNS.pop(old)._close_slide()
        return found


# ---------------------------------------------------------------- reading
def read_working(run_: SlideRun, job: SlideJob, rows: tuple[int, int],
                 cols: tuple[int, int]) -> np.ndarray:
    """RGB ``uint8`` of a working-grid region; parts outside the slide are reflected.

    With ``job.scale != 1`` every working pixel is interpolated (bilinear) from the level at
    ``(i + 0.5) / scale - 0.5``, the same for any block, so resampling leaves no seams.
    """
    h, w = job.shape
    r0, r1 = max(rows[0], 0), min(rows[1], h)
    c0, c1 = max(cols[0], 0), min(cols[1], w)
    slide = run_.slide(job)
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


# ---------------------------------------------------------------- stages
def predict_block(run_: SlideRun, job: SlideJob, i: int, j: int) -> dict:
    """Stage 1 for block ``(i, j)``: probabilities into the store (skipped when done)."""
    marker = job.marker("predict", i, j)
    if marker.exists():
        return {"ran": False}
    if run_.stopped():
        raise Cancelled("stopped by request")
    seg = run_.segmenter(job)
    r0, r1, c0, c1 = job.box(i, j)
    grid = TileGrid((r1 - r0, c1 - c0), job.tile, job.halo)
    (pt, pb), (pl, pr) = grid.padding
    padded = read_working(run_, job, (r0 - pt, r1 + pb), (c0 - pl, c1 + pr))
    with run_.model_lock:
        probs = run(predict_padded(seg.model, padded, grid, seg.batch_size, run_.stopped,
                                   seg.flips))
    probs = suppress_fill(probs[..., :2], padded[pt : pt + r1 - r0, pl : pl + c1 - c0])
    store = labels_store.array(job.out, "probabilities", mode="r+")
    store[r0:r1, c0:c1] = probs[..., :2].astype(np.float16)
    marker.touch()
    return {"ran": True}


def label_block(run_: SlideRun, job: SlideJob, i: int, j: int) -> dict:
    """Stage 2 for block ``(i, j)``: global-id instance labels of the block's own pixels."""
    marker = job.marker("label", i, j)
    if marker.exists():
        return {"ran": False, "nuclei": _read_count(marker)}
    if run_.stopped():
        raise Cancelled("stopped by request")
    r0, r1, c0, c1 = job.box(i, j)
    a0, a1, b0, b1 = job.window(i, j)
    probs = labels_store.array(job.out, "probabilities")
    p = np.asarray(probs[a0:a1, b0:b1]).astype(np.float32)
    count = 0
    if p[r0 - a0 : r1 - a0, c0 - b0 : c1 - b0, 0].max(initial=0) > 0:
        # one thread: the blocks already run in parallel
        local = probabilities_to_labels(p, PostprocessParams(**dict(job.postprocess)),
                                        workers=1)
        ids = first_pixel_ids(local, (a0, b0), job.shape[1], job.id_dtype)
        core = ids[local[r0 - a0 : r1 - a0, c0 - b0 : c1 - b0]]
        labels_store.array(job.out, "0", mode="r+")[r0:r1, c0:c1] = core
        present = np.unique(core)
        count = int(job.owned(present, i, j).sum())
    marker.write_text(str(count))
    return {"ran": True, "nuclei": count}


def _read_count(marker: Path) -> int:
    try:
        return int(marker.read_text() or 0)
    except (OSError, ValueError):
        return 0


def export_block(run_: SlideRun, job: SlideJob, i: int, j: int) -> dict:
    """Stage 3 for block ``(i, j)``: GeoJSON features / CSV rows of the nuclei it owns."""
    marker = job.marker("export", i, j)
    if marker.exists():
        return {"ran": False}
    for kind, text in block_exports(run_, job, i, j, job.exports).items():
        labels_store.write_part(job.out, i, j, kind, text)
    marker.touch()
    return {"ran": True}


def block_exports(run_: SlideRun, job: SlideJob, i: int, j: int, kinds: tuple[str, ...],
                  object_type: str = "detection") -> dict[str, str]:
    """GeoJSON features (comma-joined) and CSV rows of the nuclei block ``(i, j)`` owns."""
    from ..io.geojson import MEASUREMENT_COLUMNS, labels_to_geojson, measure_nuclei

    a0, a1, b0, b1 = job.window(i, j)
    window = np.asarray(labels_store.array(job.out, "0")[a0:a1, b0:b1])
    labels = np.where(job.owned(window, i, j), window, 0)
    image = None
    if ("csv" in kinds or job.classifier) and Path(job.slide).exists():
        image = read_working(run_, job, (a0, a1), (b0, b1))
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
    clf = _classifier(classifier, Path(classifier).stat().st_mtime_ns)
    ids, idx = clf.predict(image, window)
    keep = np.isin(ids, np.unique(owned))
    return {int(i): (clf.classes[int(k)], clf.colors[int(k)])
            for i, k in zip(ids[keep], idx[keep], strict=True)}


@functools.lru_cache(maxsize=2)
def _classifier(path: str, mtime_ns: int) -> Any:
    """A classifier loaded once per file version (its patch net is compiled once), shared by
    the blocks and runs of this process."""
    from ..classify.classifier import NucleusClassifier

    return NucleusClassifier.load(path)


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def export_store(store: str | Path, geojson: str | Path | None = None,
                 csv: str | Path | None = None, object_type: str = "detection") -> list[Path]:
    """Write QuPath GeoJSON and/or the per-nucleus CSV of a finished labels store, block by
    block (bounded memory). The CSV's hematoxylin column needs the slide at the path the
    store recorded; without it the column is NaN."""
    p = Path(store)
    attrs = labels_store.read_attrs(p)
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
    run_ = run_for()
    written = []
    try:
        for kind, target in (("geojson", geojson), ("csv", csv)):
            if target is not None:
                texts = (block_exports(run_, job, i, j, (kind,), object_type)[kind]
                         for i, j in job.all_blocks())
                written.append(labels_store.write_streamed(target, kind, texts))
    finally:
        run_.close()
    return written
