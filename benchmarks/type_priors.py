"""Would per-class weights on the classifier's probabilities raise per-class F_c?

The CoNSeP classifier predicted ``argmax(p)``; "other" is 1.6 % of its training nuclei and
was rarely predicted. This measures ``argmax(w * p)`` over a grid of class weights ``w`` on
a model's nuclei of the CoNSeP validation tiles: the weights chosen on all five tiles
(in-sample, optimistic) and chosen leave-one-tile-out (picked on four tiles, scored on the
fifth, pooled: what to expect on new tiles). ``--grid`` picks which classes' weights vary:
``other+spindle`` is :data:`nucleoseg.classify.recipe.CLASS_WEIGHT_GRID`, what the recipe
chooses from. Prints pooled F_d, accuracy, per-class F_c and their mean. The classifier's
own class weights are ignored; the test tiles are never read.

    python benchmarks/type_priors.py [--model unet] [--grid all|other|other+spindle]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet")
    ap.add_argument("--classifier", default="consep_types")
    ap.add_argument("--data", default=None)
    ap.add_argument("--grid", choices=("all", "other", "other+spindle"),
                    default="other+spindle", help="which class weights vary (others stay 1)")
    args = ap.parse_args()

    from nucleoseg.classify.classifier import NucleusClassifier
    from nucleoseg.classify.recipe import (
        CLASS_WEIGHT_GRID,
        CONSEP_CLASSES,
        best_rule,
        class_weight_candidates,
        counts_by_class_weights,
        pooled_type_scores,
    )
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.io.consep import list_tiles

    grid = {"other": CLASS_WEIGHT_GRID["other"]}
    if args.grid != "other":
        grid["spindle"] = CLASS_WEIGHT_GRID["spindle"]
    if args.grid == "all":  # inflammatory tried over the spindle weights
        grid["inflammatory"] = CLASS_WEIGHT_GRID["spindle"]
    seg = Segmenter.load(args.model)
    clf = NucleusClassifier.load(args.classifier)
    tiles = list_tiles("val", args.data)
    candidates = class_weight_candidates(CONSEP_CLASSES, grid)
    counts = counts_by_class_weights(clf, tiles, candidates, lambda im: run(seg.segment(im)))
    every = list(range(len(tiles)))
    plain = next(c for c, w in enumerate(candidates) if (w == 1).all())
    chosen = best_rule(counts, every)
    rows = {"argmax(p)": pooled_type_scores([counts[k][plain] for k in every]),
            f"best on all {len(tiles)} tiles, w={candidates[chosen].tolist()}":
                pooled_type_scores([counts[k][chosen] for k in every])}
    held = []
    for k in every:
        c = best_rule(counts, [j for j in every if j != k])
        held.append(counts[k][c])
        print(f"leave out {tiles[k].name}: weights {candidates[c].tolist()}")
    rows["leave-one-tile-out"] = pooled_type_scores(held)
    keys = ["f_d", "accuracy", *[f"f_{n}" for n in CONSEP_CLASSES], "mean_f_c"]
    print(f"{args.model} nuclei, CoNSeP validation tiles ({len(tiles)}), grid {args.grid}, "
          f"weights (other, inflammatory, epithelial, spindle)")
    print(f"{'decision':<58}" + "".join(f"{k:>16}" for k in keys))
    for name, s in rows.items():
        print(f"{name:<58}" + "".join(f"{s[k]:>16.4f}" for k in keys))


if __name__ == "__main__":
    main()
