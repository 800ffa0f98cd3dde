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
TABLE_KEYS = ("dice", "iou", "accuracy", "precision", "recall", "object_f1", "pq", "aji",
              "merged", "split")
#: Table titles of the data sets.
TITLES = {"monuseg": "MoNuSeg 2018", "consep": "CoNSeP",
          "dsb2018_he": "DSB2018 H&E-like samples (labs in neither training set)"}


def benchmark(
    models: list[str],
    data: str | Path | None = None,
    split: str = "test",
    include_baseline: bool = True,
    limit: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    precision: str = "auto",
    dataset: str = "monuseg",
    classifier: str | None = None,
    stain: str = "none",
    tta: bool = False,
) -> Generator[Progress, None, list[dict[str, Any]]]:
    """Evaluate ``models`` on a split of ``dataset`` (a progress generator).

    ``stain`` (:mod:`nucleoseg.io.stain`) normalises the models' input (not the
    baseline's); ``tta`` runs the models with the quality setting (4 flips per tile, rows
    record ``"tta": true``). ``precision`` is passed to :meth:`Segmenter.load` (rows record it as
    ``compute_precision``; ``precision`` is the metric). With ``classifier`` (a name or path)
    and a data set whose tiles carry nucleus types, every model's nuclei are classified and
    the row gets ``"types"``: the HoVer-Net classification metrics
    (:mod:`nucleoseg.evaluation.classification`) and ``classify_seconds_per_tile``.

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
    clf = None
    if classifier is not None and all(hasattr(t, "types") for t in tiles):
        from ..classify.classifier import NucleusClassifier
        from .classification import TypeCounts, type_counts

        clf = NucleusClassifier.load(classifier)
        true_types = [t.types() for t in tiles]
        number = {name: k + 1 for k, name in enumerate(clf.classes)}
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

            seg = Segmenter.load(name, precision=precision, stain=stain, tta=tta)
            run(seg.segment(images[0][:256, :256]))  # compile outside the timing

            def segment(img, seg=seg):
                return run(seg.segment(img, should_stop))
        pooled = Counts()
        per_image = []
        seconds = classify_seconds = 0.0
        typed = TypeCounts() if clf is not None else None
        for k, (tile, img, truth) in enumerate(zip(tiles, images, truths, strict=True)):
            t0 = time.perf_counter()
            pred = segment(img)
            seconds += time.perf_counter() - t0
            if clf is not None:
                t0 = time.perf_counter()
                ids, idx = clf.predict(img, pred)
                classify_seconds += time.perf_counter() - t0
                pred_types = {int(i): number[clf.classes[int(j)]]
                              for i, j in zip(ids, idx, strict=True)}
                type_counts(truth, true_types[k], pred, pred_types, into=typed)
            c = counts(pred, truth)
            pooled = pooled + c
            per_image.append({"name": tile.name, **c.scores()})
            done += 1
            yield done, total, f"{name}: {tile.name}"
        row = {"model": name, **pooled.scores()}
        if name != BASELINE:
            row["compute_precision"] = seg.precision
            row["engine"] = seg.engine
            row["tta"] = seg.flips > 1
        row["dice_mean"] = sum(r["dice"] for r in per_image) / len(per_image)
        row["aji_mean"] = sum(r["aji"] for r in per_image) / len(per_image)
        row["seconds_per_tile"] = seconds / len(tiles)
        if typed is not None:
            row["types"] = typed.scores({k + 1: n for k, n in enumerate(clf.classes)})
            row["types"]["classifier"] = str(classifier)
            row["classify_seconds_per_tile"] = classify_seconds / len(tiles)
        row["per_image"] = per_image
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """Render benchmark rows as a fixed-width (or Markdown) table."""
    head = ["model", "Dice (=F1)", "IoU", "accuracy", "precision", "recall", "object F1", "PQ",
            "AJI", "merged", "split", "s/tile"]
    lines = []
    for r in rows:
        lines.append([r["model"]] + [f"{r[k]:.4f}" for k in TABLE_KEYS]
                     + [f"{r['seconds_per_tile']:.2f}"])
    return _render(head, lines, markdown)


def format_types_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """The classification columns (F_d, accuracy, F_c per class, time) of rows that have them."""
    rows = [r for r in rows if "types" in r]
    if not rows:
        return ""
    classes = [k[2:] for k in rows[0]["types"] if k.startswith("f_") and k != "f_d"]
    head = ["model", "F_d", "accuracy", *[f"F_{c}" for c in classes], "classify s/tile",
            "share of segment time"]
    lines = []
    for r in rows:
        t = r["types"]
        lines.append([r["model"], f"{t['f_d']:.4f}", f"{t['accuracy']:.4f}",
                      *[f"{t['f_' + c]:.4f}" for c in classes],
                      f"{r['classify_seconds_per_tile']:.3f}",
                      f"{r['classify_seconds_per_tile'] / r['seconds_per_tile']:.1%}"])
    return _render(head, lines, markdown)


def _render(head: list[str], lines: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head)] + [fmt.format(*line) for line in lines])
