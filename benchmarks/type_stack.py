"""Would a second forest that sees the neighbours' predicted classes classify better?

Stacking, trained on the CoNSeP fit tiles only and scored on the validation tiles (nothing is
chosen on them, so no leave-one-out is needed), with the library's pieces
(:func:`nucleoseg.classify.stacking.fit_context_forest`):

1. stage 1 = the shipped classifier's forest setting (100 trees, depth 16) on the per-nucleus
   features; its out-of-fold probabilities on the fit tiles come from 5 folds grouped by
   tile, over the true nuclei and the model's nuclei as the recipe uses them;
2. stage 2 = a forest on [features, own stage-1 probabilities, Gaussian-weighted mean of the
   other nuclei's stage-1 probabilities at sigma 15, 30, 60 px (``--sigmas``)].

On the validation tiles, stage 1 is the shipped first forest. Both pipelines then average
with the shipped patch net (its weight) and apply the shipped class weights; the table also shows
class weights re-chosen for each pipeline on the validation tiles (in-sample, both alike).
The test tiles are never read.

    python benchmarks/type_stack.py [--model unet] [--sigmas 15,30,60] [--trees 100]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet")
    ap.add_argument("--data", default=None)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--sigmas", default="15,30,60", help="neighbourhood scales, px")
    args = ap.parse_args()
    sigmas = tuple(float(v) for v in args.sigmas.split(","))

    from nucleoseg.classify.classifier import NucleusClassifier
    from nucleoseg.classify.context import context_inputs
    from nucleoseg.classify.features import nucleus_features
    from nucleoseg.classify.recipe import (
        CONSEP_CLASSES,
        class_weight_candidates,
        pooled_type_scores,
    )
    from nucleoseg.classify.stacking import describe_tiles, fit_context_forest
    from nucleoseg.evaluation.classification import TypeCounts, centroids
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.io.consep import list_tiles

    t0 = time.perf_counter()
    seg = Segmenter.load(args.model, precision="float32")
    clf = NucleusClassifier.load("consep_types")
    fit, val = list_tiles("fit", args.data), list_tiles("val", args.data)
    maps, _ = describe_tiles(fit, lambda im: run(seg.segment(im)))
    print(f"fit tiles described ({time.perf_counter() - t0:.0f}s)", flush=True)
    stage2 = fit_context_forest(maps, len(CONSEP_CLASSES), args.trees, sigmas=sigmas,
                                log=lambda m: None)
    print(f"stage 2 trained on {sum(m.rows.size for m in maps)} nuclei "
          f"({time.perf_counter() - t0:.0f}s)", flush=True)

    w_patch = clf.patch_weight
    shipped_weights = np.asarray(clf.class_weights or [1.0] * 4)
    clf.class_weights = None
    clf.context_forest = None  # the benchmark builds its own second stage
    probs = {"shipped": [], "stacked": []}
    truths = []
    for t in val:
        image, truth, types = t.image(), t.labels(), t.types()
        pred = run(seg.segment(image))
        ids, feats = nucleus_features(image, pred)
        p1 = clf._forest_proba(feats)
        clf.patch_weight = 1.0
        patch = clf.predict_proba(image, pred, (ids, feats))[1]
        clf.patch_weight = w_patch
        _, pc = centroids(pred)
        p2 = stage2.predict_proba(context_inputs(feats, p1, pc, sigmas))
        probs["shipped"].append((1 - w_patch) * p1 + w_patch * patch)
        probs["stacked"].append((1 - w_patch) * p2 + w_patch * patch)
        tid, tc = centroids(truth)
        truths.append((tc, np.array([types.get(int(i), 0) for i in tid], int), pc))

    def counts_for(name, weights):
        return [TypeCounts().add(tc, tt, pc, (p * weights).argmax(1) + 1)
                for p, (tc, tt, pc) in zip(probs[name], truths, strict=True)]

    keys = ["f_d", "accuracy", *[f"f_{n}" for n in CONSEP_CLASSES], "mean_f_c"]
    print(f"{args.model} nuclei, CoNSeP validation tiles ({len(val)}); stage 2 trained on "
          f"the {len(fit)} fit tiles ({time.perf_counter() - t0:.0f}s in all)")
    print(f"{'pipeline':<44}" + "".join(f"{k:>16}" for k in keys))
    candidates = class_weight_candidates(CONSEP_CLASSES)
    for name in probs:
        for label, w in (("shipped class weights", shipped_weights),
                         ("no class weights", np.ones(4))):
            s = pooled_type_scores(counts_for(name, w))
            print(f"{name + ', ' + label:<44}" + "".join(f"{s[k]:>16.4f}" for k in keys))
        best = max(candidates, key=lambda w: pooled_type_scores(counts_for(name, w))["mean_f_c"])
        s = pooled_type_scores(counts_for(name, best))
        print(f"{name + ', re-chosen ' + str(best.tolist()):<44}"
              + "".join(f"{s[k]:>16.4f}" for k in keys))


if __name__ == "__main__":
    main()
