"""Would a second forest that sees the neighbours' predicted classes classify better?

Stacking, trained on the CoNSeP fit tiles only and scored on the validation tiles (nothing is
chosen on them, so no leave-one-out is needed):

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

def describe_tile(image, truth, types, pred):
    """Per nucleus set (true, predicted): features, centres, and for the predicted set the
    index of each paired nucleus with its true class."""
    from nucleoseg.classify.features import nucleus_features
    from nucleoseg.evaluation.classification import centroids, pair_centroids

    tid, tf = nucleus_features(image, truth)
    _, tc = centroids(truth)
    ty = np.array([types.get(int(i), 1) - 1 for i in tid], int)
    pid, pf = nucleus_features(image, pred)
    _, pc = centroids(pred)
    pairs = pair_centroids(tc, pc)
    return {"true": (tid, tf, tc, ty), "pred": (pid, pf, pc, pairs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet")
    ap.add_argument("--data", default=None)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--sigmas", default="15,30,60", help="neighbourhood scales, px")
    args = ap.parse_args()
    sigmas = tuple(float(v) for v in args.sigmas.split(","))

    def neighbour_means(proba, centres):
        from nucleoseg.classify.context import neighbour_means as means

        return means(proba, centres, sigmas)

    from sklearn.ensemble import RandomForestClassifier

    from nucleoseg.classify.classifier import NucleusClassifier
    from nucleoseg.classify.features import nucleus_features
    from nucleoseg.classify.recipe import (
        CONSEP_CLASSES,
        class_weight_candidates,
        pooled_type_scores,
    )
    from nucleoseg.evaluation.classification import TypeCounts, centroids
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.io.consep import list_tiles

    t0 = time.perf_counter()
    seg = Segmenter.load(args.model, precision="float32")
    clf = NucleusClassifier.load("consep_types")
    fit, val = list_tiles("fit", args.data), list_tiles("val", args.data)
    tiles = []
    for t in fit:
        image, truth = t.image(), t.labels()
        tiles.append(describe_tile(image, truth, t.types(), run(seg.segment(image))))
    print(f"fit tiles described ({time.perf_counter() - t0:.0f}s)", flush=True)

    def rows(k, proba_true, proba_pred):
        """Stage-1 training rows of tile k (true nuclei + paired predicted ones)."""
        tid, tf, tc, ty = tiles[k]["true"]
        pid, pf, pc, pairs = tiles[k]["pred"]
        x = np.concatenate([tf, pf[pairs[:, 1]]])
        y = np.concatenate([ty, ty[pairs[:, 0]]])
        if proba_true is None:
            return x, y
        z = np.concatenate([
            np.hstack([tf, proba_true, neighbour_means(proba_true, tc)]),
            np.hstack([pf, proba_pred, neighbour_means(proba_pred, pc)])[pairs[:, 1]]])
        return z, y

    def forest(x, y, seed=0):
        return RandomForestClassifier(n_estimators=args.trees, max_depth=16, min_samples_leaf=2,
                                      max_features="sqrt", random_state=seed,
                                      n_jobs=2).fit(x, y)

    def full_proba(model, x, n_classes=4):
        out = np.zeros((len(x), n_classes))
        out[:, model.classes_] = model.predict_proba(x)
        return out

    folds = np.arange(len(tiles)) % 5
    oof = [None] * len(tiles)
    for f in range(5):
        train = [k for k in range(len(tiles)) if folds[k] != f]
        x, y = map(np.concatenate, zip(*(rows(k, None, None) for k in train), strict=True))
        m = forest(x, y)
        for k in range(len(tiles)):
            if folds[k] == f:
                oof[k] = (full_proba(m, tiles[k]["true"][1]), full_proba(m, tiles[k]["pred"][1]))
    z, y = map(np.concatenate, zip(*(rows(k, *oof[k]) for k in range(len(tiles))),
                                   strict=True))
    stage2 = forest(z, y)
    print(f"stage 2 trained on {len(y)} nuclei ({time.perf_counter() - t0:.0f}s)", flush=True)

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
        p2 = full_proba(stage2, np.hstack([feats, p1, neighbour_means(p1, pc)]))
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
