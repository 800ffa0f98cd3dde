"""``nucleoseg segment | evaluate | train | tune | benchmark | models`` over the core.

Bad input ends with one line ``nucleoseg: error: ...`` and exit status 2, never a traceback
(set ``NUCLEOSEG_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__


class UsageError(Exception):
    """A problem with the user's input, reported in one line."""


def _quiet_tensorflow() -> None:
    # TF_ENABLE_ONEDNN_OPTS stays TensorFlow's own choice (made from the CPU's features):
    # forced on an AVX2-only CPU (Zen 3) it made the UNet's TensorFlow forward pass over
    # 10x slower (docs/performance.md, session 35)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
        val = m["card"].scores or {}
        which = "test" if m["card"].record.get("test") else "validation"
        extra = f"  {which} Dice {val['dice']:.3f} AJI {val['aji']:.3f}" if val else ""
        print(f"  {m['name']:<20} {m['source']:<8} {m['path']}{extra}")
    print("architectures (nucleoseg train --model):", ", ".join(MODELS))
    return 0


# ---------------------------------------------------------------- parser
def _add_stain(parser: argparse.ArgumentParser) -> None:
    from .io.stain import STAIN_METHODS

    parser.add_argument("--stain", choices=STAIN_METHODS, default="none",
                        help="stain normalisation before the model (images in memory): "
                             "reinhard = match the training data's colour statistics "
                             "(default none: it did not help on the validation tiles)")


def _add_backend(parser: argparse.ArgumentParser) -> None:
    from .backend import BACKENDS, DEVICES

    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="Keras backend, or openvino (CPU inference through OpenVINO; "
                             "training stays on TensorFlow). Default: $NUCLEOSEG_BACKEND, "
                             "else auto = a GPU-capable backend that sees a GPU, else "
                             "OpenVINO on the CPU (TensorFlow when OpenVINO is missing)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto, cpu, or gpu (an error when the backend sees none)")


def _add_precision(parser: argparse.ArgumentParser) -> None:
    from .models.precision import PRECISIONS

    parser.add_argument(
        "--precision", default="auto", choices=PRECISIONS,
        help="compute precision: auto = bfloat16 on CPUs with native bfloat16 (about 1.7x "
             "faster, Dice within 0.001 of float32 on MoNuSeg), float32 elsewhere")


def build_parser() -> argparse.ArgumentParser:
    from . import cli_evaluate, cli_segment, cli_train
    from .models.card import (
        FineTuneSettings,
        InferenceSettings,
        PostprocessParams,
        TrainSettings,
        add_setting_flags,
    )

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
    add_setting_flags(s.add_argument_group("model settings (default: the model card)"),
                      InferenceSettings, PostprocessParams)
    _add_precision(s)
    s.add_argument("--geojson", action="store_true",
                   help="also write <labels>.geojson (QuPath detections)")
    s.add_argument("--measurements", action="store_true",
                   help="also write <labels>_nuclei.csv (centroid, area, perimeter, ...)")
    s.add_argument("--tta", action="store_true",
                   help="quality setting: average the model over 4 flips (4x the model time)")
    _add_stain(s)
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
    s.set_defaults(func=cli_segment.cmd_segment)

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
    e.set_defaults(func=cli_evaluate.cmd_evaluate)

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
    t.add_argument("--loss", choices=["bce_dice", "bce_dice_contact"], default="bce_dice",
                   help="bce_dice_contact also weights the interior channel where nuclei "
                        "touch, to split touching nuclei")
    t.add_argument("--contact-weight", type=float, metavar="W",
                   help="bce_dice_contact's weight of the contact zone (default 5)")
    t.add_argument("--out", help="output folder (default: the user model folder)")
    t.add_argument("--name", help="saved model name (default: the architecture)")
    add_setting_flags(t, TrainSettings, from_card=False)
    t.add_argument("--time-budget", type=float, help="stop after this many seconds")
    t.add_argument("--workers", type=int, default=1, help="threads preparing batches")
    t.add_argument("--jit", action="store_true", help="XLA-compile the train step (TF)")
    t.add_argument("--config", nargs="*", metavar="KEY=VALUE", help="architecture options")
    _add_backend(t)
    t.set_defaults(func=cli_train.cmd_train)

    f = sub.add_parser("finetune", help="retrain a model on images whose labels you "
                                        "corrected; prints held-out before/after")
    f.add_argument("--base", default="unet", help="model to start from (name or .keras)")
    f.add_argument("--image", action="append", required=True,
                   help="an image (repeat with --labels for several pairs)")
    f.add_argument("--labels", action="append", required=True,
                   help="its corrected labels: TIFF/PNG/NPY or MoNuSeg XML")
    f.add_argument("--name", required=True, help="name of the new model")
    f.add_argument("--out", help="folder (default: the user model folder)")
    add_setting_flags(f, FineTuneSettings, from_card=False)
    f.add_argument("--holdout", type=float, default=0.2,
                   help="share of each pair held out to check the new model (0: off)")
    f.add_argument("--keep-corrections", action="store_true",
                   help="keep these pairs beside the new model (<name>.corrections/) so a "
                        "later round can train on them again")
    f.add_argument("--with-previous", action="store_true",
                   help="also train on the corrections kept with --base by earlier rounds")
    _add_precision(f)
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_backend(f)
    f.set_defaults(func=cli_train.cmd_finetune)

    c = sub.add_parser("train-classifier",
                       help="train the CoNSeP nucleus type classifier: a forest, a context "
                            "forest on its out-of-fold probabilities and the neighbours', a "
                            "patch CNN (fit tiles; what runs and the weights chosen on the "
                            "validation tiles)")
    c.add_argument("--data", help="data root holding consep/ (default $NUCLEOSEG_DATA or "
                                  "../shared/data)")
    c.add_argument("--out", help="folder (default: the user classifier folder)")
    c.add_argument("--name", default="consep_types")
    c.add_argument("--segmentation-model", default="unet",
                   help="model whose nuclei join training and validation ('none': true "
                        "nuclei only)")
    c.add_argument("--trees", type=int, default=100)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--patch-epochs", type=int, default=25,
                   help="epochs of the patch CNN averaged with the forest (0: forest only; "
                        "its weight is chosen on the validation tiles)")
    c.add_argument("--no-patch-context", action="store_true",
                   help="a patch CNN that sees the 48 px patch only (default: also the "
                        "96 px window around it at half resolution)")
    c.add_argument("--patch-folds", type=int, default=0,
                   help="patch CNNs trained on folds of the fit tiles (e.g. 5), whose "
                        "out-of-fold probabilities teach a context forest that takes the "
                        "CNN's too, kept when the validation tiles say so; default 0 "
                        "(none): 5 folds cost ~4x the time and did not help on validation")
    _add_backend(c)
    c.set_defaults(func=cli_train.cmd_train_classifier)

    u = sub.add_parser("tune", help="re-select post-processing on the validation tiles")
    u.add_argument("model")
    u.add_argument("--data")
    u.add_argument("--datasets", help="comma-separated data sets whose validation tiles are "
                                      "used (default: those the model was trained on)")
    only = u.add_mutually_exclusive_group()
    only.add_argument("--markers-only", action="store_true",
                      help="keep the card's thresholds and minimum size; choose only the "
                           "marker rule")
    only.add_argument("--min-size-only", action="store_true",
                      help="keep the card's thresholds and marker rule; choose only the "
                           "minimum size (for Dice + AJI + PQ)")
    u.add_argument("--write", action="store_true", help="store the result in the model card")
    _add_backend(u)
    u.set_defaults(func=cli_train.cmd_tune)

    b = sub.add_parser("benchmark", help="test tables (one per data set) for the shipped "
                                         "models")
    b.add_argument("models", nargs="*", help="model names or paths (default: all shipped)")
    b.add_argument("--data", help="data root holding monuseg/, consep/ (default "
                                  "$NUCLEOSEG_DATA or ../shared/data)")
    b.add_argument("--datasets", help="comma-separated data sets (default: every one found; "
                   "dsb2018_he = the DSB2018 H&E-like samples, labs in neither training set)")
    _add_stain(b)
    b.add_argument("--split", default="test", choices=["test", "val"],
                   help="official test tiles, or the validation tiles held out of training")
    b.add_argument("--limit", type=int, help="first N tiles of each data set only")
    b.add_argument("--no-baseline", action="store_true", help="skip the Otsu+watershed row")
    b.add_argument("--tta", action="store_true",
                   help="run the models with the quality setting (average of 4 flips)")
    b.add_argument("--classifier", default="consep_types",
                   help="nucleus type classifier for data sets with types (CoNSeP)")
    b.add_argument("--no-classify", action="store_true", help="skip the nucleus type metrics")
    _add_precision(b)
    b.add_argument("--markdown", action="store_true", help="print Markdown tables")
    b.add_argument("--json", help="write all numbers (per image too) as JSON: a list of rows "
                                  "for one data set, {data set: rows} for several")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_backend(b)
    b.set_defaults(func=cli_evaluate.cmd_benchmark)

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
