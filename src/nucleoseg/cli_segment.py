"""``nucleoseg segment``: images in memory and whole slides, with their exports."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .cli import UsageError, _progress_bar


# ---------------------------------------------------------------- segment
def cmd_segment(args: argparse.Namespace) -> int:
    from .io.outputs import default_output, output_stem
    from .io.wsi import is_slide

    images = [Path(p) for p in args.images]
    if len(images) > 1 and not args.out_dir:
        raise UsageError("several images need --out-dir DIR (one labels output per image)")
    slides = [is_slide(p) or (args.format == ".zarr") or bool(
        args.output and Path(args.output).suffix.lower() == ".zarr") for p in images]
    outs = []
    for path, slide in zip(images, slides, strict=True):
        if args.output and not args.out_dir:
            outs.append(Path(args.output))
        else:
            outs.append(default_output(path, slide=slide, fmt=args.format or ".tif",
                                       out_dir=args.out_dir))
    _check_outputs(images, outs)
    if args.classify:
        from .classify.classifier import resolve_classifier_path

        resolve_classifier_path(args.classify)  # an unknown name fails before any work
    for path, slide, out in zip(images, slides, outs, strict=True):
        if slide and out.suffix.lower() != ".zarr":
            raise UsageError(f"{path.name} is a whole slide: its labels go to a .zarr folder "
                             f"(-o {output_stem(path)}_nuclei.zarr)")
        _check_writable(out)
    if any(slides):
        _segment_slides([(p, o) for p, o, s in zip(images, outs, slides, strict=True) if s],
                        args)
    rest = [(p, o) for p, o, s in zip(images, outs, slides, strict=True) if not s]
    if rest:
        _segment_images(rest, args)
    return 0


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    from .models.card import InferenceSettings, PostprocessParams, setting_values

    return {**setting_values(args, InferenceSettings, PostprocessParams),
            "tta": args.tta or None, "stain": args.stain}


def _segment_images(pairs: list[tuple[Path, Path]], args: argparse.Namespace) -> None:
    """Images in memory, one after another; the next one is read and the last one
    post-processed and written while the model works (:func:`~nucleoseg.inference.batch.
    segment_many`), so a folder of any size holds at most three images in memory."""
    from .inference.batch import segment_many
    from .inference.segment import Segmenter
    from .io.images import open_image, probe_image
    from .io.labels import write_labels

    for path, _ in pairs:  # fail fast on what the headers tell, before Keras
        probe_image(path)
    bars: dict[int, Any] = {}

    def progress(i: int, done: int, total: int, msg: str) -> None:
        if i not in bars:
            for bar, _ in bars.values():
                bar.close()
            bars.clear()
            bars[i] = _progress_bar(pairs[i][0].name, not args.quiet)
        bars[i][1](done, total, msg)
        if total > 0 and done == total:  # the model is done with it: clear the line
            bars.pop(i)[0].close()

    def save(i: int, image, labels) -> list[str]:
        out = pairs[i][1]
        write_labels(out, labels)
        return [f"{pairs[i][0].name}: {int(labels.max())} nuclei -> {out}",
                *_exports(args, out, labels, image)]

    def load() -> Segmenter:  # runs while the first image is read
        return Segmenter.load(args.model, precision=args.precision, **_settings(args))

    failed = []
    try:
        for outcome in segment_many(load, [p for p, _ in pairs], open_image, save,
                                    progress=progress):
            name = pairs[outcome.index][0].name
            if outcome.error is not None:
                failed.append((name, outcome.error))
                if len(pairs) > 1:
                    reason = str(outcome.error) or type(outcome.error).__name__
                    print(f"nucleoseg: {name} failed: {reason}", file=sys.stderr)
                continue
            print("\n".join(outcome.saved))
    finally:
        for bar, _ in bars.values():
            bar.close()
    if failed and (len(pairs) == 1 or os.environ.get("NUCLEOSEG_DEBUG")):
        raise failed[0][1]
    if failed:
        names = ", ".join(name for name, _ in failed[:5]) + (", ..." if len(failed) > 5 else "")
        raise UsageError(f"{len(failed)} of {len(pairs)} images failed ({names}); "
                         "the others were written")


def _segment_slides(pairs: list[tuple[Path, Path]], args: argparse.Namespace) -> None:
    """Whole slides, block-wise into zarr; all slides are planned (and checked) first."""
    import warnings

    from .inference.predict import Cancelled, run
    from .inference.wsi import plan_slide, segment_slide

    jobs = []
    for path, out in pairs:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            job = plan_slide(path, out, args.model, mpp=args.mpp, block=args.block,
                             margin=args.margin, tissue=not args.no_tissue_mask,
                             geojson=args.geojson, measurements=args.measurements,
                             precision=args.precision, classify=args.classify,
                             **_settings(args))
        for w in caught:
            print(f"nucleoseg: warning: {w.message}", file=sys.stderr)
        jobs.append((path, job))
    client = None
    if args.scheduler:
        try:
            from distributed import Client
        except ImportError:
            raise UsageError("--scheduler needs dask.distributed: pip install "
                             "'napari-nucleoseg[distributed]'") from None
        try:
            client = Client(args.scheduler, timeout="20s")
        except OSError as exc:
            raise UsageError(f"cannot reach the dask scheduler at {args.scheduler}: {exc}") \
                from None
    try:
        for path, job in jobs:
            h, w = job.shape
            print(f"{path.name}: {w}x{h} px at the model's resolution (level {job.level}, "
                  f"x{job.scale:.3g}), {len(job.blocks)} block(s) of "
                  f"{job.block[1]}x{job.block[0]} px"
                  + (f", {len(job.skipped)} without tissue" if job.skipped else ""))
            bar, update = _progress_bar(path.name, not args.quiet)
            bar.unit = "task"
            started = []

            def report(done: int, total: int, msg: str, update=update, started=started) -> None:
                started.append(True)
                update(done, total, msg)

            try:
                summary = run(segment_slide(job, scheduler=client, workers=args.workers,
                                            overwrite=args.overwrite,
                                            keep_probabilities=args.keep_probabilities),
                              report)
            except (Cancelled, KeyboardInterrupt, Exception) as exc:
                bar.close()
                if started and Path(job.out).exists():
                    print(f"nucleoseg: {job.out} is incomplete; run the same command again "
                          "to resume", file=sys.stderr)
                raise exc
            bar.close()
            note = (" (already complete)" if summary.get("tasks_run") == 0 and not
                    summary.get("tasks_skipped") else
                    f" ({summary['tasks_skipped']} finished task(s) reused)"
                    if summary.get("tasks_skipped") else "")
            print(f"{path.name}: {summary['n_nuclei']} nuclei -> {job.out}{note}")
            for kind, target in (summary.get("exports") or {}).items():
                print(f"  {kind} -> {target}")
    finally:
        if client is not None:
            client.close()


def _exports(args: argparse.Namespace, out: Path, labels, image) -> list[str]:
    """QuPath GeoJSON and the per-nucleus CSV beside a labels file, when asked for; returns
    a line per file written."""
    from .io.geojson import measure_nuclei, write_geojson, write_measurements_csv

    stem = out.with_suffix("")
    lines = []
    classes = None
    if getattr(args, "classify", None):
        from .classify.classifier import NucleusClassifier

        clf = getattr(args, "_classifier", None)
        if clf is None:
            clf = args._classifier = NucleusClassifier.load(args.classify)
        ids, idx = clf.predict(image, labels)
        classes = {int(i): (clf.classes[int(k)], clf.colors[int(k)])
                   for i, k in zip(ids, idx, strict=True)}
        counts = np.bincount(idx, minlength=len(clf.classes)) if len(idx) else \
            np.zeros(len(clf.classes), int)
        lines.append("  classes: " + ", ".join(f"{n} {int(c)}" for n, c in
                                               zip(clf.classes, counts, strict=True)))
    if args.measurements:
        rows = measure_nuclei(labels, image, args.mpp)
        if classes is not None:
            for row in rows:
                row["class"] = classes.get(row["id"], ("", ""))[0]
        lines.append(f"  measurements -> {write_measurements_csv(f'{stem}_nuclei.csv', rows)}")
    if args.geojson:
        lines.append(f"  QuPath GeoJSON -> "
                     f"{write_geojson(f'{stem}.geojson', labels, classes=classes)}")
    return lines


def _check_outputs(images: list[Path], outs: list[Path]) -> None:
    """No output replaces an input, no two inputs share an output, every output is a file
    name with a labels suffix: checked before any work."""
    from .io.labels import LABEL_SUFFIXES

    inputs = {p.resolve() for p in images}
    seen: dict[Path, Path] = {}
    for path, out in zip(images, outs, strict=True):
        target = out.resolve()
        if target in inputs:
            raise UsageError(f"{out} is an input image; writing labels there would replace it "
                             "(choose another -o or --out-dir)")
        if target in seen:
            raise UsageError(f"{seen[target].name} and {path} would both write {out}; give "
                             "inputs distinct names or segment them separately")
        seen[target] = path
        if out.is_dir() and out.suffix.lower() != ".zarr":
            raise UsageError(f"{out} is a folder; give a file name (or --out-dir {out})")
        if out.suffix.lower() not in (*LABEL_SUFFIXES, ".zarr"):
            raise UsageError(f"cannot write labels as {out.suffix or 'a file without suffix'}; "
                             f"use one of {', '.join((*LABEL_SUFFIXES, '.zarr'))}")


def _check_writable(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"cannot write {out}: {parent} is not a folder")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write {out}: folder {parent} is not writable")
