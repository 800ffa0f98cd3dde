"""Post-processing chosen for the quality setting (``--tta``) against the card's, on the
validation tiles.

    python benchmarks/tta_postprocess.py [MODEL] [--data ../shared/data] [--cache DIR]
                                         [--dihedral]

The card's thresholds, minimum size and marker rule were chosen on the plain forward pass.
Averaging four flips smooths the probabilities, so the settings that suit them may differ.
This runs the recipe's search (:func:`~nucleoseg.training.postprocess_choice.select_postprocess`,
the same grids and scores as ``nucleoseg tune``) on the flipped-and-averaged validation
probabilities and prints pooled Dice, AJI, PQ, precision and recall per data set for:
the plain pass with the card's settings, TTA with the card's settings, and TTA with its own.
With ``--dihedral`` also the eight symmetries of the square: the four flips of the image
turned by 90 degrees (turned back), averaged with the four of the image itself, scored with
the card's settings. float32, as ``nucleoseg tune``. Validation tiles only; the test tiles
are never read.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from nucleoseg.inference.predict import run
from nucleoseg.inference.segment import Segmenter
from nucleoseg.training.postprocess_choice import scores_by_data_set, select_postprocess
from nucleoseg.training.recipe import data_sets_of, load_split

DATASETS = ["monuseg", "consep"]


def probabilities(seg: Segmenter, images: list, tta: bool, cache: Path | None,
                  name: str, turned: bool = False) -> list[np.ndarray]:
    """Validation probabilities, read from ``cache`` when a previous run left them;
    ``turned``: of each image turned by 90 degrees, turned back."""
    kind = ("tta" if tta else "plain") + ("_turned" if turned else "")
    path = cache / f"{name}_{kind}.npz" if cache else None
    if path is not None and path.exists():
        with np.load(path) as z:
            return [z[f"p{i}"] for i in range(len(images))]
    seg.update(tta=tta)
    if turned:
        probs = [np.rot90(run(seg.probabilities(np.ascontiguousarray(np.rot90(im)))), -1)
                 for im in images]
    else:
        probs = [run(seg.probabilities(im)) for im in images]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{f"p{i}": p for i, p in enumerate(probs)})
    return probs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="unet")
    ap.add_argument("--data")
    ap.add_argument("--cache", type=Path, help="keep the probabilities here between runs")
    ap.add_argument("--dihedral", action="store_true",
                    help="also the 8 symmetries of the square (the card's settings)")
    ap.add_argument("--json", type=Path, help="also write the rows and the chosen settings")
    args = ap.parse_args()

    seg = Segmenter.load(args.model, precision="float32")
    names, images, labels = load_split("val", args.data, DATASETS)
    groups = data_sets_of(names)
    plain = probabilities(seg, images, False, args.cache, args.model)
    flipped = probabilities(seg, images, True, args.cache, args.model)
    card = seg.params
    own, _, _ = select_postprocess(flipped, labels, groups=groups)
    rows = [("plain, card settings", plain, card), ("tta, card settings", flipped, card),
            ("tta, its own settings", flipped, own)]
    if args.dihedral:
        turned = probabilities(seg, images, True, args.cache, args.model, turned=True)
        eight = [(a + b) / 2 for a, b in zip(flipped, turned, strict=True)]
        rows.append(("8 symmetries, card", eight, card))
    print(f"card: {card.to_dict()}")
    print(f"tta's own: {own.to_dict()}")
    print(f"{'variant':<24}{'data set':<10}{'Dice':>8}{'AJI':>8}{'PQ':>8}{'obj F1':>8}"
          f"{'prec':>8}{'recall':>8}")
    out = []
    for label, probs, params in rows:
        for ds, s in scores_by_data_set(probs, labels, names, params, DATASETS).items():
            print(f"{label:<24}{ds:<10}{s['dice']:>8.4f}{s['aji']:>8.4f}{s['pq']:>8.4f}"
                  f"{s['object_f1']:>8.4f}{s['precision']:>8.4f}{s['recall']:>8.4f}")
            out.append({"variant": label, "dataset": ds, **s})
    if args.json:
        args.json.write_text(json.dumps({"card": card.to_dict(), "tta_own": own.to_dict(),
                                         "rows": out}, indent=1))


if __name__ == "__main__":
    main()
