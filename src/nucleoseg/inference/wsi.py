"""Whole slides, block-wise, into a zarr labels pyramid: planning, the task graph, running it.

A run is three task stages per block (:mod:`nucleoseg.inference.slide_stages`: predict,
label, export) in a dask graph, run on local threads by default or on a
``dask.distributed`` cluster. The block geometry and global nucleus ids are in
:mod:`nucleoseg.inference.slide_blocks`; the store format in :mod:`nucleoseg.io.labels_store`.
Every task leaves a marker when done, so a rerun skips finished blocks; the store's
``complete`` attribute turns true only after the last stage, the pyramid and the exports.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from ..io import labels_store
from ..io.labels_store import export_paths, read_labels_store  # noqa: F401  (public API)
from .predict import Cancelled, Progress
from .slide_blocks import SlideJob, first_pixel_ids  # noqa: F401  (public API)
from .slide_stages import (
    SlideRun,
    export_block,
    export_store,  # noqa: F401  (public API)
    label_block,
    predict_block,
    run_for,
)
from .tiling import make_grid


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
        ``tile``, ``halo``, ``batch_size``, ``tta`` (4 flips per tile) and post-processing
        settings.
    """
    from ..backend import inference_engine
    from ..io.tissue import tissue_mask
    from ..io.wsi import open_slide, working_resolution
    from ..models.precision import resolve_precision
    from ..models.weights import read_card, resolve_model_path
    from .segment import Segmenter

    if overrides.pop("stain", None) not in (None, "none"):
        raise ValueError("stain normalisation (--stain) is for images held in memory; whole "
                         "slides run without it")
    model_path = resolve_model_path(model)
    card = read_card(model_path)
    precision = resolve_precision(precision or "auto", card, inference_engine())
    classifier = ""
    if classify:
        from ..classify.classifier import resolve_classifier_path

        classifier = str(resolve_classifier_path(classify).resolve())
    if overrides.get("batch_size") is None:
        # one tile per forward pass: on the CPU as fast as the card's batch and ~30 % less
        # peak memory (benchmarks/results/wsi_cpu.txt)
        overrides["batch_size"] = 1
    if overrides.get("tile") is None:
        overrides["tile"] = slide_tile(card.inference.tile)
    seg = Segmenter.from_card(None, card, **overrides)
    slide = open_slide(slide_path, mpp=mpp)
    try:
        level, scale = working_resolution(slide, card.inference.microns_per_pixel)
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
            "format": labels_store.FORMAT_VERSION, "slide": str(Path(slide_path).resolve()),
            "slide_bytes": stat.st_size, "slide_mtime": int(stat.st_mtime),
            "mpp": slide.mpp, "level": level, "scale": scale, "shape": list(shape),
            "model": str(model_path), "model_sha256": card.sha256 or _file_id(model_path),
            "tile": list(tile), "halo": halo, "block": list(block), "margin": int(margin),
            "postprocess": dict(params), "tissue": bool(tissue), "precision": precision,
        }
        if seg.tta:  # a store written without it matches a run without it
            fingerprint["tta"] = True
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


#: Default peak memory of a whole-slide run (bytes).
SLIDE_MEMORY_BUDGET = 3_000_000_000
#: Largest tile side whose run stays within a peak of (bytes), measured with the UNet on this
#: CPU (benchmarks/results/wsi_cpu.txt: tile 1280 peaked at 2.1-2.5 GB on 4k-16k slides,
#: tile 2176 at 3.0-3.9 GB); the smaller steps are extrapolated downwards, conservatively.
SLIDE_TILES = ((2_600_000_000, 1280), (2_000_000_000, 1024), (0, 768))


def slide_tile(card_tile: int, available: int | None = None) -> int:
    """The tile side of a whole-slide run when none is given: the card's, capped so the run
    stays within :data:`SLIDE_MEMORY_BUDGET` or half the memory available, whichever is
    less."""
    from ..io.images import available_memory

    available = available_memory() if available is None else available
    budget = min(SLIDE_MEMORY_BUDGET, available // 2) if available else SLIDE_MEMORY_BUDGET
    cap = next(side for need, side in SLIDE_TILES if budget >= need)
    return min(card_tile, cap)


def _file_id(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}-{int(st.st_mtime)}"


def store_settings_match(job: SlideJob) -> bool | None:
    """None when ``job.out`` does not exist; else whether it holds this job's run (so
    :func:`segment_slide` resumes or reuses it) - False also for a foreign folder."""
    return labels_store.settings_match(job.out, job.fingerprint)


def _call(func: Callable, run_: SlideRun, job: SlideJob, i: int, j: int, *deps: Any) -> dict:
    return func(run_, job, i, j)


# ---------------------------------------------------------------- driver
def build_graph(job: SlideJob, run_: SlideRun) -> tuple[dict, list[str]]:
    """The dask task graph (a plain dict) and its keys, stage by stage."""
    dsk: dict[str, tuple] = {}
    keys: list[str] = []
    todo = set(job.blocks)
    for i, j in job.blocks:
        key = f"predict-{i}-{j}"
        dsk[key] = (_call, predict_block, run_, job, i, j)
        keys.append(key)
    label_blocks = [b for b in job.all_blocks() if any(n in todo for n in job.neighbours(*b))]
    for i, j in label_blocks:
        key = f"label-{i}-{j}"
        deps = [f"predict-{a}-{b}" for a, b in job.neighbours(i, j) if (a, b) in todo]
        dsk[key] = (_call, label_block, run_, job, i, j, *deps)
        keys.append(key)
    if job.exports:
        labelled = set(label_blocks)
        for i, j in label_blocks:
            key = f"export-{i}-{j}"
            deps = [f"label-{a}-{b}" for a, b in job.neighbours(i, j) if (a, b) in labelled]
            dsk[key] = (_call, export_block, run_, job, i, j, *deps)
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
    group, complete = labels_store.open_store(
        job.out, job.fingerprint, shape=job.shape, chunk=job.core, id_dtype=job.id_dtype,
        exports=job.exports, overwrite=overwrite)
    if complete:
        attrs = labels_store.read_attrs(job.out) or {}
        yield 0, 0, "already complete"
        return {"out": job.out, "shape": job.shape, "n_nuclei": attrs.get("n_nuclei"),
                "complete": True, "tasks_run": 0, "tasks_skipped": 0, "seconds": 0.0,
                "blocks": len(job.blocks), "background_blocks": len(job.skipped)}
    run_ = run_for()
    try:
        dsk, keys = build_graph(job, run_)
        results = yield from _execute(dsk, keys, run_, scheduler, workers, should_stop)
    finally:
        run_.close()
    yield len(keys), len(keys), "building the label pyramid"
    levels = labels_store.build_pyramid(group)
    n_nuclei = sum(r.get("nuclei", 0) for k, r in results.items() if k.startswith("label-"))
    outputs = labels_store.join_parts(job.out, job.exports,
                                      ("class",) if job.classifier else ())
    attrs = {"fingerprint": labels_store.jsonable(job.fingerprint), "n_nuclei": n_nuclei,
             "to_level0": job.to_level0, "shape": list(job.shape), "exports": outputs}
    labels_store.finish_store(job.out, attrs, levels,
                              job.slide_mpp * job.to_level0 if job.slide_mpp else None,
                              keep_probabilities)
    ran = sum(1 for r in results.values() if r.get("ran"))
    return {"out": job.out, "shape": job.shape, "n_nuclei": n_nuclei, "complete": True,
            "blocks": len(job.blocks), "background_blocks": len(job.skipped),
            "tasks_run": ran, "tasks_skipped": len(results) - ran,
            "seconds": time.perf_counter() - t0, "exports": outputs}


def _execute(dsk, keys, run_: SlideRun, scheduler, workers, should_stop
             ) -> Generator[Progress, None, dict]:
    total = len(keys)
    if scheduler is None:
        return (yield from _execute_threads(dsk, keys, run_, workers, should_stop))
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


def _execute_threads(dsk, keys, run_: SlideRun, workers, should_stop
                     ) -> Generator[Progress, None, dict]:
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
                run_.cancel.set()
            if key is None:
                break
            if key:
                finished += 1
                yield finished, total, _describe(str(key))
    finally:
        if thread.is_alive():
            run_.cancel.set()
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
