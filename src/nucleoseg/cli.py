"""``nucleoseg segment | evaluate | train | tune | benchmark | models`` over the core.

Bad input ends with one line ``nucleoseg: error: ...`` and exit status 2, never a traceback
(set ``NUCLEOSEG_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__


class UsageError(Exception):
    """A problem with the user's input, reported in one line."""


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def _progress_bar(desc: str, enabled: bool):
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit="tile", disable=not enabled, leave=False,
               file=sys.stderr)

    def update(done: int, total: int, msg: str) -> None:
        if total > 0:
            bar.total = total
            bar.n = done
        bar.set_postfix_str(msg, refresh=True)

    return bar, update


# ---------------------------------------------------------------- segment
def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def cmd_segment(args: argparse.Namespace) -> int:
    from .io.wsi import is_slide

    images = [Path(p) for p in args.images]
    if len(images) > 1 and not args.out_dir:
        raise UsageError("several images need --out-dir DIR (one labels output per image)")
    slides = [is_slide(p) or (args.format == ".zarr") or bool(
        args.output and Path(args.output).suffix.lower() == ".zarr") for p in images]
    outs = []
    for path, slide in zip(images, slides, strict=True):
        if args.out_dir:
            suffix = ".zarr" if slide else (args.format or ".tif")
            outs.append(Path(args.out_dir) / (f"{_stem(path)}.zarr" if slide
                                             else f"{_stem(path)}_labels{suffix}"))
        elif args.output:
            outs.append(Path(args.output))
        else:
            outs.append(path.with_name(f"{_stem(path)}.zarr" if slide
                                       else f"{_stem(path)}_labels{args.format or '.tif'}"))
    _check_outputs(images, outs)
    if args.classify:
        from .classify.classifier import resolve_classifier_path

        resolve_classifier_path(args.classify)  # an unknown name fails before any work
    for path, slide, out in zip(images, slides, outs, strict=True):
        if slide and out.suffix.lower() != ".zarr":
            raise UsageError(f"{path.name} is a whole slide: its labels go to a .zarr folder "
                             f"(-o {_stem(path)}.zarr)")
        _check_writable(out)
    if any(slides):
        _segment_slides([(p, o) for p, o, s in zip(images, outs, slides, strict=True) if s],
                        args)
    rest = [(p, o) for p, o, s in zip(images, outs, slides, strict=True) if not s]
    if rest:
        _segment_images(rest, args)
    return 0


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"tile": args.tile, "halo": args.halo, "batch_size": args.batch_size,
            "threshold": args.threshold, "interior_threshold": args.interior_threshold,
            "min_size": args.min_size, "tta": args.tta or None}


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


# ---------------------------------------------------------------- evaluate
def _pairs(pred: Path, truth: Path) -> list[tuple[str, Path, Path]]:
    if pred.is_dir() != truth.is_dir():
        raise UsageError("give two files or two folders")
    if not pred.is_dir():
        return [(pred.stem, pred, truth)]
    from .io.labels import LABEL_SUFFIXES

    def index(folder: Path) -> dict[str, Path]:
        out = {}
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in LABEL_SUFFIXES:
                out[p.stem.removesuffix("_labels")] = p
        return out

    a, b = index(pred), index(truth)
    common = sorted(set(a) & set(b))
    if not common:
        raise UsageError(f"no file names in common between {pred} and {truth}")
    return [(k, a[k], b[k]) for k in common]


def _is_xml(path: Path) -> bool:
    return path.suffix.lower() == ".xml"


def _parse_shape(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--shape expects HxW (e.g. 1000x1000), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise UsageError(f"--shape must be positive, got {text!r}")
    return h, w


def _evaluate_classes(args: argparse.Namespace, rows_in: list) -> None:
    """Nucleus-type metrics (HoVer-Net's) of one prediction/truth pair with class tables."""
    from .evaluation.classification import named_type_scores
    from .io.consep import read_classes

    if not (args.pred_classes and args.truth_classes):
        raise UsageError("give both --pred-classes and --truth-classes")
    if len(rows_in) != 1:
        raise UsageError("class tables go with one prediction and one ground truth file")
    _, pred, truth = rows_in[0]
    s, names = named_type_scores(truth, read_classes(args.truth_classes), pred,
                                 read_classes(args.pred_classes))
    print(f"nucleus types (centroid pairing <= 12 px): F_d {s['f_d']:.4f}  accuracy "
          f"{s['accuracy']:.4f}  paired {s['paired']}  unpaired prediction "
          f"{s['unpaired_pred']}  unpaired truth {s['unpaired_true']}")
    print("  " + "  ".join(f"F_{n} {s['f_' + n]:.4f}" for n in names))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation.metrics import ALL_KEYS, evaluate_set
    from .io.labels import read_labels, xml_image_shape

    shape = _parse_shape(args.shape) if args.shape else None
    rows_in = []
    pairs = _pairs(Path(args.prediction), Path(args.truth))
    print(f"prediction: {args.prediction}   ground truth: {args.truth}")
    for name, p, t in pairs:
        # outlines (XML) are drawn at the image's own size, never at the other file's
        pred = read_labels(p, shape or (xml_image_shape(p) if _is_xml(p) else None))
        truth = read_labels(t, shape or (xml_image_shape(t) if _is_xml(t) else None))
        if pred.shape != truth.shape:
            raise UsageError(f"{name}: prediction {pred.shape} and ground truth {truth.shape} "
                             "differ in shape")
        rows_in.append((name, pred, truth))
    per_image, overall = evaluate_set([(p, t) for _, p, t in rows_in],
                                      names=[n for n, _, _ in rows_in])
    if args.pred_classes or args.truth_classes:
        _evaluate_classes(args, rows_in)
    keys = list(ALL_KEYS)
    rows = per_image + ([{"name": "overall", **overall}] if len(per_image) > 1 else [])
    print("  ".join([f"{'image':<28}"] + [f"{k:>9}" for k in keys]))
    for r in rows:
        print("  ".join([f"{r['name'][:28]:<28}"] + [f"{r[k]:>9.4f}" for k in keys]))
    if args.csv:
        import csv

        from .io.atomic import atomic_write

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=["name", *keys], extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)

        atomic_write(args.csv, write)
    return 0


# ---------------------------------------------------------------- train / tune
def _parse_config(items: list[str]) -> dict[str, Any]:
    config = {}
    for item in items or []:
        if "=" not in item:
            raise UsageError(f"--config expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            config[k] = json.loads(v)
        except ValueError:
            config[k] = v
    return config


def cmd_train(args: argparse.Namespace) -> int:
    from .io.datasets import parse_datasets
    from .models.registry import resolve
    from .models.weights import check_model_name, user_dir
    from .training.data import STRONG_AUGMENTATION, Augmentation
    from .training.recipe import train_recipe

    resolve(args.model)
    check_model_name(args.name or args.model)
    try:
        datasets = parse_datasets(args.datasets)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    augmentation = {"strong": STRONG_AUGMENTATION, "classic": Augmentation(),
                    None: None}[args.augment]
    out = Path(args.out) if args.out else user_dir()
    train_recipe(
        args.model, out, save_name=args.name, data=args.data, datasets=datasets,
        init=args.init, schedule=args.schedule, augmentation=augmentation,
        precision=args.precision, epochs=args.epochs,
        steps_per_epoch=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
        seed=args.seed, config=_parse_config(args.config), time_budget=args.time_budget,
        workers=args.workers, jit_compile=True if args.jit else "auto",
    )
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from .io.images import open_image
    from .io.labels import read_labels
    from .models.weights import check_model_name, resolve_model_path
    from .training.finetune import fine_tune

    check_model_name(args.name)
    resolve_model_path(args.base)  # an unknown base fails before any reading
    if len(args.image) != len(args.labels):
        raise UsageError(f"give one --labels per --image ({len(args.image)} images, "
                         f"{len(args.labels)} label files)")
    pairs = []
    for img_path, lab_path in zip(args.image, args.labels, strict=True):
        image = open_image(img_path)
        labels = read_labels(lab_path, image.shape[:2] if _is_xml(Path(lab_path)) else None)
        if labels.shape != image.shape[:2]:
            raise UsageError(f"{lab_path}: labels {labels.shape} and image "
                             f"{image.shape[:2]} differ in size")
        pairs.append((image, labels))
    bar, update = _progress_bar("fine-tune", not args.quiet)
    path = fine_tune(args.base, pairs, args.name, epochs=args.epochs,
                     steps_per_epoch=args.steps, batch_size=args.batch_size,
                     learning_rate=args.lr, freeze_encoder=args.freeze_encoder,
                     out_dir=args.out, holdout=args.holdout,
                     progress=lambda s, t, logs: update(s, t, f"loss {logs.get('loss', 0):.3f}"))
    bar.close()
    card = json.loads(path.with_suffix(".json").read_text())
    val = card["fine_tune"].get("validation")
    if val:
        b, a = val["before"], val["after"]
        print(f"held-out {val['held_out']}: Dice {b['dice']:.4f} -> {a['dice']:.4f}, "
              f"AJI {b['aji']:.4f} -> {a['aji']:.4f} (epoch {val['best_epoch']} kept)")
        if not val["improved"]:
            print(f"nucleoseg: warning: {args.name} is not better than {args.base} on the "
                  "held-out part; keep using the base model, or correct more and retrain",
                  file=sys.stderr)
    else:
        print("no held-out check: the corrected images are too small to hold part back")
    print(f"saved {path}")
    return 0


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from .classify.classifier import user_classifier_dir
    from .classify.recipe import train_consep_classifier
    from .models.weights import check_model_name, check_not_shipped

    check_model_name(args.name)
    out = Path(args.out) if args.out else user_classifier_dir()
    check_not_shipped(out, "classifier")
    seg = None if args.segmentation_model.lower() == "none" else args.segmentation_model
    train_consep_classifier(out, args.name, args.data, segmentation_model=seg,
                            trees=args.trees, seed=args.seed)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .inference.predict import run
    from .inference.segment import Segmenter
    from .io.atomic import atomic_write_bytes
    from .models.weights import check_not_shipped, resolve_model_path
    from .training.recipe import load_split, select_postprocess

    path = resolve_model_path(args.model)
    seg = Segmenter.load(str(path), precision="float32")  # card values independent of the CPU
    _, images, labels = load_split("val", args.data)
    probs = [run(seg.probabilities(im)) for im in images]
    best, scores, trials = select_postprocess(probs, labels)
    print(f"validation: {best.to_dict()} -> AJI {scores['aji']:.4f} Dice {scores['dice']:.4f}")
    if args.write:
        check_not_shipped(path.parent, "model card")
        card = dict(seg.card)
        card["postprocess"] = best.to_dict()
        card["validation"] = {k: round(v, 4) for k, v in scores.items()}
        card["postprocess_search"] = trials
        atomic_write_bytes(path.with_suffix(".json"), (json.dumps(card, indent=2) + "\n").encode())
        print(f"updated {path.with_suffix('.json')}")
    return 0


# ---------------------------------------------------------------- benchmark
def cmd_benchmark(args: argparse.Namespace) -> int:
    from .evaluation.benchmark import TITLES, benchmark, format_table, format_types_table
    from .inference.predict import run
    from .io.datasets import parse_datasets, present
    from .models.weights import available_models

    models = args.models or [m["name"] for m in available_models() if m["source"] == "shipped"]
    if not models:
        raise UsageError("no models to benchmark")
    try:
        datasets = parse_datasets(args.datasets) if args.datasets else present(args.data)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not datasets:
        raise UsageError("no data set found (set NUCLEOSEG_DATA or pass --data)")
    tables = {}
    for ds in datasets:
        bar, update = _progress_bar(f"benchmark {ds}", not args.quiet)
        rows = run(benchmark(models, args.data, split=args.split,
                             include_baseline=not args.no_baseline, limit=args.limit,
                             precision=args.precision, dataset=ds,
                             classifier=None if args.no_classify else args.classifier), update)
        bar.close()
        used = sorted({r["compute_precision"] for r in rows if "compute_precision" in r})
        print(f"{TITLES.get(ds, ds)} {args.split} tiles ({len(rows[0]['per_image'])}), metrics "
              f"pooled over all pixels/nuclei of the set; precision {', '.join(used) or '-'}")
        print(format_table(rows, markdown=args.markdown))
        types = format_types_table(rows, markdown=args.markdown)
        if types:
            print(f"\nnucleus types ({rows[0]['types']['classifier']}; HoVer-Net metrics: "
                  "centroid pairing <= 12 px)")
            print(types)
        print()
        tables[ds] = rows
    if args.json:
        from .io.atomic import atomic_write_bytes

        payload = tables if len(tables) > 1 else next(iter(tables.values()))
        atomic_write_bytes(args.json, (json.dumps(payload, indent=2) + "\n").encode())
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from . import backend

    print(f"nucleoseg {__version__}")
    print("\n".join(backend.describe()))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models.registry import MODELS
    from .models.weights import available_models

    print("trained models:")
    for m in available_models():
        val = m["card"].get("test") or m["card"].get("validation") or {}
        which = "test" if m["card"].get("test") else "validation"
        extra = f"  {which} Dice {val['dice']:.3f} AJI {val['aji']:.3f}" if val else ""
        print(f"  {m['name']:<20} {m['source']:<8} {m['path']}{extra}")
    print("architectures (nucleoseg train --model):", ", ".join(MODELS))
    return 0


# ---------------------------------------------------------------- parser
def _add_backend(parser: argparse.ArgumentParser) -> None:
    from .backend import BACKENDS, DEVICES

    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="Keras backend (default: $NUCLEOSEG_BACKEND, else auto = a "
                             "GPU-capable backend that sees a GPU, else TensorFlow on the CPU)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto, cpu, or gpu (an error when the backend sees none)")


def _add_precision(parser: argparse.ArgumentParser) -> None:
    from .models.precision import PRECISIONS

    parser.add_argument(
        "--precision", default="auto", choices=PRECISIONS,
        help="compute precision: auto = bfloat16 on CPUs with native bfloat16 (about 1.7x "
             "faster, Dice within 0.001 of float32 on MoNuSeg), float32 elsewhere")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nucleoseg", description="Nucleus segmentation for H&E.")
    ap.add_argument("--version", action="version", version=f"nucleoseg {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment images into instance labels")
    s.add_argument("images", nargs="+",
                   help="RGB images (TIFF, PNG, JPEG, ...) or whole slides (SVS, pyramidal "
                        "or OME-TIFF, zarr)")
    s.add_argument("-o", "--output",
                   help="labels file (.tif, .png, .npy or MoNuSeg .xml), or a .zarr folder "
                        "(block-wise whole-slide path)")
    s.add_argument("--out-dir", help="folder for one output per input (<name>_labels.tif, "
                                     "or <name>.zarr for slides)")
    s.add_argument("--format", default=None, choices=[".tif", ".png", ".npy", ".xml", ".zarr"],
                   help="labels format of plain images (default .tif; .zarr forces the "
                        "whole-slide path)")
    s.add_argument("-m", "--model", default="unet", help="model name or .keras path")
    s.add_argument("--tile", type=int, help="tile side in pixels (default: model card)")
    s.add_argument("--halo", type=int, help="context margin per tile side")
    s.add_argument("--batch-size", type=int)
    _add_precision(s)
    s.add_argument("--threshold", type=float, help="nucleus probability threshold")
    s.add_argument("--interior-threshold", type=float, help="marker probability threshold")
    s.add_argument("--min-size", type=int, help="smallest nucleus kept (pixels)")
    s.add_argument("--geojson", action="store_true",
                   help="also write <labels>.geojson (QuPath detections)")
    s.add_argument("--measurements", action="store_true",
                   help="also write <labels>_nuclei.csv (centroid, area, perimeter, ...)")
    s.add_argument("--tta", action="store_true",
                   help="quality setting: average the model over 4 flips (4x the model time)")
    s.add_argument("--classify", nargs="?", const="consep_types", metavar="CLASSIFIER",
                   help="classify every nucleus (default classifier: consep_types = other, "
                        "inflammatory, epithelial, spindle): prints counts per class, adds a "
                        "class column to the CSV and a classification to the GeoJSON")
    s.add_argument("--mpp", type=float,
                   help="microns per pixel of the input: the µm columns, and a slide's "
                        "resolution when its file lacks (or misstates) it")
    w = s.add_argument_group("whole slides")
    w.add_argument("--block", type=int, help="block side in pixels (default 2 tiles)")
    w.add_argument("--margin", type=int, default=128,
                   help="post-processing context around each block (pixels, default 128)")
    w.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the blocks on this dask.distributed scheduler (tcp://host:8786)")
    w.add_argument("--workers", type=int, default=2,
                   help="local threads when no --scheduler is given (default 2)")
    w.add_argument("--no-tissue-mask", action="store_true",
                   help="segment background blocks too")
    w.add_argument("--overwrite", action="store_true",
                   help="replace an output written with other settings")
    w.add_argument("--keep-probabilities", action="store_true",
                   help="keep the float16 probability map in the .zarr")
    s.add_argument("-q", "--quiet", action="store_true")
    _add_backend(s)
    s.set_defaults(func=cmd_segment)

    e = sub.add_parser("evaluate", help="compare predicted and ground-truth labels")
    e.add_argument("prediction", help="labels file or folder")
    e.add_argument("truth", help="ground-truth labels file (or MoNuSeg .xml) or folder")
    e.add_argument("--csv", help="also write the table as CSV")
    e.add_argument("--pred-classes", metavar="CSV",
                   help="classes of the predicted nuclei (segment --measurements --classify "
                        "output: id,...,class)")
    e.add_argument("--truth-classes", metavar="CSV",
                   help="classes of the true nuclei (id,class or CoNSeP id,type,name): adds "
                        "F_d, accuracy and F_c per class")
    e.add_argument("--shape", metavar="HxW",
                   help="image size for MoNuSeg XML outlines (default: the image of the same "
                        "name beside the XML or in ../images/)")
    e.set_defaults(func=cmd_evaluate)

    t = sub.add_parser("train", help="train a model on MoNuSeg and/or CoNSeP (validation "
                                     "tiles held out of each)")
    t.add_argument("--model", default="unet", help="architecture (ignored with --init)")
    t.add_argument("--data", help="data root holding monuseg/, consep/ (default "
                                  "$NUCLEOSEG_DATA or ../shared/data)")
    t.add_argument("--datasets", default="monuseg,consep",
                   help="comma-separated data sets to train on (default: monuseg,consep)")
    t.add_argument("--init", help="start from this model (name or .keras path) instead of "
                                  "random weights")
    t.add_argument("--schedule", choices=["plateau", "cosine"], default="plateau",
                   help="learning rate: x0.1 on a validation plateau with early stopping, "
                        "or a cosine decay to 0 over all epochs")
    t.add_argument("--augment", choices=["strong", "classic"],
                   help="augmentation recipe (default: strong for several data sets)")
    t.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                   help="training compute precision (bfloat16: faster on CPUs with "
                        "native bfloat16)")
    t.add_argument("--out", help="output folder (default: the user model folder)")
    t.add_argument("--name", help="saved model name (default: the architecture)")
    t.add_argument("--epochs", type=int, default=400)
    t.add_argument("--steps", type=int, default=200, help="batches per epoch")
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--time-budget", type=float, help="stop after this many seconds")
    t.add_argument("--workers", type=int, default=1, help="threads preparing batches")
    t.add_argument("--jit", action="store_true", help="XLA-compile the train step (TF)")
    t.add_argument("--config", nargs="*", metavar="KEY=VALUE", help="architecture options")
    _add_backend(t)
    t.set_defaults(func=cmd_train)

    f = sub.add_parser("finetune", help="retrain a model on images whose labels you "
                                        "corrected; prints held-out before/after")
    f.add_argument("--base", default="unet", help="model to start from (name or .keras)")
    f.add_argument("--image", action="append", required=True,
                   help="an image (repeat with --labels for several pairs)")
    f.add_argument("--labels", action="append", required=True,
                   help="its corrected labels: TIFF/PNG/NPY or MoNuSeg XML")
    f.add_argument("--name", required=True, help="name of the new model")
    f.add_argument("--out", help="folder (default: the user model folder)")
    f.add_argument("--epochs", type=int, default=5)
    f.add_argument("--steps", type=int, default=20, help="batches per epoch")
    f.add_argument("--batch-size", type=int, default=4)
    f.add_argument("--lr", type=float, default=1e-4)
    f.add_argument("--freeze-encoder", action="store_true", help="train decoder and head only")
    f.add_argument("--holdout", type=float, default=0.2,
                   help="share of each pair held out to check the new model (0: off)")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_backend(f)
    f.set_defaults(func=cmd_finetune)

    c = sub.add_parser("train-classifier",
                       help="train the CoNSeP nucleus type classifier (fit tiles; validation "
                            "tiles for the card)")
    c.add_argument("--data", help="data root holding consep/ (default $NUCLEOSEG_DATA or "
                                  "../shared/data)")
    c.add_argument("--out", help="folder (default: the user classifier folder)")
    c.add_argument("--name", default="consep_types")
    c.add_argument("--segmentation-model", default="unet",
                   help="model whose nuclei join training and validation ('none': true "
                        "nuclei only)")
    c.add_argument("--trees", type=int, default=100)
    c.add_argument("--seed", type=int, default=0)
    _add_backend(c)
    c.set_defaults(func=cmd_train_classifier)

    u = sub.add_parser("tune", help="re-select post-processing on the validation tiles")
    u.add_argument("model")
    u.add_argument("--data")
    u.add_argument("--write", action="store_true", help="store the result in the model card")
    _add_backend(u)
    u.set_defaults(func=cmd_tune)

    b = sub.add_parser("benchmark", help="test tables (one per data set) for the shipped "
                                         "models")
    b.add_argument("models", nargs="*", help="model names or paths (default: all shipped)")
    b.add_argument("--data", help="data root holding monuseg/, consep/ (default "
                                  "$NUCLEOSEG_DATA or ../shared/data)")
    b.add_argument("--datasets", help="comma-separated data sets (default: every one found)")
    b.add_argument("--split", default="test", choices=["test", "val"],
                   help="official test tiles, or the validation tiles held out of training")
    b.add_argument("--limit", type=int, help="first N tiles of each data set only")
    b.add_argument("--no-baseline", action="store_true", help="skip the Otsu+watershed row")
    b.add_argument("--classifier", default="consep_types",
                   help="nucleus type classifier for data sets with types (CoNSeP)")
    b.add_argument("--no-classify", action="store_true", help="skip the nucleus type metrics")
    _add_precision(b)
    b.add_argument("--markdown", action="store_true", help="print Markdown tables")
    b.add_argument("--json", help="write all numbers (per image too) as JSON: a list of rows "
                                  "for one data set, {data set: rows} for several")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_backend(b)
    b.set_defaults(func=cmd_benchmark)

    i = sub.add_parser("info", help="what --backend auto picks and why, the devices seen, "
                                    "and what to install for a GPU")
    i.set_defaults(func=cmd_info)

    m = sub.add_parser("models", help="list trained models and architectures")
    m.set_defaults(func=cmd_models)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    _quiet_tensorflow()
    from .backend import BackendError, apply, choose
    from .classify.classifier import ClassifierError
    from .inference.predict import Cancelled
    from .io.images import ImageError
    from .models.weights import WeightsError

    try:
        if hasattr(args, "backend"):
            apply(choose(args.backend, args.device))
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("nucleoseg: interrupted", file=sys.stderr)
        return 130
    except (UsageError, ImageError, WeightsError, ClassifierError, BackendError, ValueError,
            Cancelled, OSError) as exc:
        if os.environ.get("NUCLEOSEG_DEBUG"):
            raise
        print(f"nucleoseg: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
