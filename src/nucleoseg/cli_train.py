"""``nucleoseg train | finetune | train-classifier | tune``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .cli import UsageError, _progress_bar
from .cli_evaluate import _is_xml


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
    from .models.card import TrainSettings, setting_values
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
    settings = TrainSettings(**setting_values(args, TrainSettings))  # checks bounds
    if args.contact_weight is not None and (args.loss != "bce_dice_contact"
                                            or not 0 < args.contact_weight <= 100):
        raise UsageError("--contact-weight goes with --loss bce_dice_contact and lies in "
                         "(0, 100]")
    train_recipe(
        args.model, out, save_name=args.name, data=args.data, datasets=datasets,
        init=args.init, schedule=args.schedule, augmentation=augmentation,
        precision=args.precision, loss=args.loss, contact_weight=args.contact_weight,
        **settings.to_dict(),
        config=_parse_config(args.config), time_budget=args.time_budget,
        workers=args.workers, jit_compile=True if args.jit else "auto",
    )
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from .io.images import open_image
    from .io.labels import read_labels
    from .models.card import FineTuneSettings, setting_values
    from .models.weights import check_model_name, resolve_model_path
    from .training.finetune import fine_tune

    check_model_name(args.name)
    settings = FineTuneSettings(**setting_values(args, FineTuneSettings))  # checks bounds
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
    path = fine_tune(args.base, pairs, args.name, **settings.to_dict(), out_dir=args.out,
                     holdout=args.holdout, precision=args.precision,
                     keep_corrections=args.keep_corrections,
                     previous_corrections=args.with_previous,
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
    ft = card["fine_tune"]
    if ft.get("earlier_pairs"):
        print(f"round {ft['round']}: trained on {ft['earlier_pairs']} pair(s) of earlier rounds "
              f"and {ft['pairs'] - ft['earlier_pairs']} new")
    if ft.get("corrections"):
        print(f"kept {ft['corrections']['pairs']} pair(s) in "
              f"{path.parent / ft['corrections']['folder']} for later rounds")
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
                            trees=args.trees, seed=args.seed,
                            patch_epochs=args.patch_epochs,
                            patch_context=not args.no_patch_context,
                            patch_folds=args.patch_folds)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .inference.predict import run
    from .inference.segment import Segmenter
    from .io.datasets import parse_datasets
    from .models.weights import check_not_shipped, resolve_model_path, write_card
    from .training.postprocess_choice import scores_by_data_set, select_postprocess
    from .training.recipe import data_sets_of, load_split

    path = resolve_model_path(args.model)
    if args.write:
        check_not_shipped(path.parent, "model card")  # before any work, not after it
    seg = Segmenter.load(str(path), precision="float32")  # card values independent of the CPU
    datasets = (parse_datasets(args.datasets) if args.datasets
                else seg.card.record.get("training", {}).get("datasets") or ["monuseg"])
    names, images, labels = load_split("val", args.data, datasets)
    probs = [run(seg.probabilities(im)) for im in images]
    groups = data_sets_of(names) if len(datasets) > 1 else None
    partial = args.markers_only or args.min_size_only
    best, scores, trials = select_postprocess(
        probs, labels, groups=groups, start=seg.params if partial else None,
        min_size_only=args.min_size_only)

    after = scores_by_data_set(probs, labels, names, best, datasets)
    before = scores_by_data_set(probs, labels, names, seg.params, datasets) if partial else None
    print(f"validation ({', '.join(datasets)}): {best.to_dict()} -> AJI {scores['aji']:.4f} "
          f"Dice {scores['dice']:.4f} PQ {scores['pq']:.4f}")
    for ds, s in after.items():
        was = (f" (card: Dice {before[ds]['dice']:.4f}, AJI {before[ds]['aji']:.4f}, PQ "
               f"{before[ds]['pq']:.4f})" if before else "")
        print(f"  {ds}: Dice {s['dice']:.4f}, AJI {s['aji']:.4f}, PQ {s['pq']:.4f}, precision "
              f"{s['precision']:.4f}, recall {s['recall']:.4f}{was}")
    if args.write:
        record = dict(seg.card.record)
        if partial:
            step = "marker" if args.markers_only else "min_size"
            record[f"{step}_search"] = trials
            record[f"validation_before_{step}_search"] = {
                "postprocess": seg.params.to_dict(),
                "validation": record.get("validation"),
                "validation_by_dataset": record.get("validation_by_dataset")}
        else:
            record["postprocess_search"] = trials
        record["validation"] = {k: round(v, 4) for k, v in scores.items()}
        record["validation_by_dataset"] = after
        write_card(path, seg.card.replace(postprocess=best, record=record))
        print(f"updated {path.with_suffix('.json')}")
    return 0
