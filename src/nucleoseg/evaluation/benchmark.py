"""The test tables: every shipped model (and the non-learned baseline) on the official test
tiles of each data set (MoNuSeg 14, CoNSeP 14), whole-image metrics pooled over the set, plus
seconds per tile."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from ..inference.predict import Progress
from .metrics import Counts, counts

BASELINE = "otsu_watershed"
TABLE_KEYS = ("dice", "iou", "accuracy", "precision", "recall", "object_f1", "pq", "aji")
#: Table titles of the data sets.
TITLES = {"monuseg": "MoNuSeg 2018", "consep": "CoNSeP"}


def benchmark(
    models: list[str],
    data: str | Path | None = None,
    split: str = "test",
    include_baseline: bool = True,
    limit: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    precision: str = "auto",
    dataset: str = "monuseg",
) -> Generator[Progress, None, list[dict[str, Any]]]:
    """Evaluate ``models`` on a split of ``dataset`` (a progress generator).

    ``precision`` is passed to :meth:`Segmenter.load` (rows record it as
    ``compute_precision``; ``precision`` is the metric).

    Returns
    -------
    list of dict
        Per model: ``{"model", "dice", "f1", "iou", "accuracy", "precision", "recall",
        "object_f1", "pq", "aji", "aji_mean", "dice_mean", "seconds_per_tile",
        "per_image": [...]}``.
    """
    from ..io.datasets import list_tiles

    tiles = list_tiles(dataset, split, data)[:limit]
    images = [t.image() for t in tiles]
    truths = [t.labels() for t in tiles]
    names = list(models) + ([BASELINE] if include_baseline else [])
    total = len(names) * len(tiles)
    done = 0
    rows = []
    for name in names:
        if name == BASELINE:
            from .baseline import otsu_watershed

            def segment(img):
                return otsu_watershed(img)
        else:
            from ..inference.predict import run
            from ..inference.segment import Segmenter

            seg = Segmenter.load(name, precision=precision)
            run(seg.segment(images[0][:256, :256]))  # compile outside the timing

            def segment(img, seg=seg):
                return run(seg.segment(img, should_stop))
        pooled = Counts()
        per_image = []
        seconds = 0.0
        for tile, img, truth in zip(tiles, images, truths, strict=True):
            t0 = time.perf_counter()
            pred = segment(img)
            seconds += time.perf_counter() - t0
            c = counts(pred, truth)
            pooled = pooled + c
            per_image.append({"name": tile.name, **c.scores()})
            done += 1
            yield done, total, f"{name}: {tile.name}"
        row = {"model": name, **pooled.scores()}
        if name != BASELINE:
            row["compute_precision"] = seg.precision
        row["dice_mean"] = sum(r["dice"] for r in per_image) / len(per_image)
        row["aji_mean"] = sum(r["aji"] for r in per_image) / len(per_image)
        row["seconds_per_tile"] = seconds / len(tiles)
        row["per_image"] = per_image
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """Render benchmark rows as a fixed-width (or Markdown) table."""
    head = ["model", "Dice (=F1)", "IoU", "accuracy", "precision", "recall", "object F1", "PQ",
            "AJI", "s/tile"]
    lines = []
    for r in rows:
        lines.append([r["model"]] + [f"{r[k]:.4f}" for k in TABLE_KEYS]
                     + [f"{r['seconds_per_tile']:.2f}"])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head)] + [fmt.format(*line) for line in lines])
