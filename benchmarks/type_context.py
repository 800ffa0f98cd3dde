"""Would the classes of a nucleus's neighbours help classify it? Validation tiles only.

Lymphocytes come in infiltrates, epithelial nuclei in glands, spindle nuclei in stroma: a
nucleus's neighbours say something about its class that its own features miss. This smooths
the shipped classifier's (class-weighted) probabilities over the nuclei around each one,

    p'_i = (1 - lam) * p_i + lam * sum_j g_ij p_j / sum_j g_ij,   g_ij = exp(-d_ij^2 / 2 s^2)

(j != i, centroid distance d_ij < 3 s), and measures HoVer-Net's per-class F_c on a model's
nuclei of the CoNSeP validation tiles for a grid of ``(s, lam)``: chosen on all five tiles
(in-sample) and leave-one-tile-out (chosen on four, scored on the fifth, pooled). The test
tiles are never read.

    python benchmarks/type_context.py [--model unet] [--sigmas 15,25] [--lambdas 0,0.2]
"""

from __future__ import annotations

import argparse
import itertools
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: The first grid measured (session 27); the recipe's is ``recipe.NEIGHBOUR_GRID``.
SIGMAS = (15.0, 25.0, 40.0, 60.0)
LAMBDAS = (0.0, 0.2, 0.35, 0.5, 0.65)


def smooth_over_neighbours(proba: np.ndarray, centres: np.ndarray, sigma: float,
                           lam: float) -> np.ndarray:
    """``(1 - lam) p_i + lam * (Gaussian-weighted mean of the other nuclei's p)``; a nucleus
    without neighbours within ``3 * sigma`` keeps ``p_i``."""
    from nucleoseg.classify.context import neighbour_means

    if lam == 0:
        return proba
    mean = neighbour_means(proba, centres, (sigma,))
    has = mean.sum(axis=1) > 0
    out = proba.copy()
    out[has] = (1 - lam) * proba[has] + lam * mean[has]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet")
    ap.add_argument("--classifier", default="consep_types")
    ap.add_argument("--data", default=None)
    ap.add_argument("--sigmas", default=",".join(f"{s:g}" for s in SIGMAS))
    ap.add_argument("--lambdas", default=",".join(f"{v:g}" for v in LAMBDAS))
    args = ap.parse_args()

    from nucleoseg.classify.classifier import NucleusClassifier
    from nucleoseg.classify.recipe import CONSEP_CLASSES, pooled_type_scores
    from nucleoseg.evaluation.classification import TypeCounts, centroids
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.io.consep import list_tiles

    seg = Segmenter.load(args.model)
    clf = NucleusClassifier.load(args.classifier)
    clf.context_forest = None  # the first forest + patch net, as when this was measured
    tiles = list_tiles("val", args.data)
    settings = list(itertools.product([float(v) for v in args.sigmas.split(",")],
                                      [float(v) for v in args.lambdas.split(",")]))
    counts = []  # [tile][setting]
    for t in tiles:
        image, truth, types = t.image(), t.labels(), t.types()
        labels = run(seg.segment(image))
        _, proba = clf.predict_proba(image, labels)
        tid, tc = centroids(truth)
        _, pc = centroids(labels)
        tt = np.array([types.get(int(i), 0) for i in tid], int)
        counts.append([TypeCounts().add(tc, tt, pc, smooth_over_neighbours(
            proba, pc, s, lam).argmax(1) + 1) for s, lam in settings])
        print(f"{t.name}: {len(pc)} nuclei", flush=True)

    def best(on: list[int]) -> int:
        return max(range(len(settings)), key=lambda c: (
            pooled_type_scores([counts[k][c] for k in on])["mean_f_c"], -settings[c][1]))

    every = list(range(len(tiles)))
    keys = ["f_d", "accuracy", *[f"f_{n}" for n in CONSEP_CLASSES], "mean_f_c"]
    print(f"{args.model} nuclei, CoNSeP validation tiles ({len(tiles)}), classifier "
          f"{args.classifier} (class weights {clf.class_weights})")
    print(f"{'sigma px':>9}{'lambda':>8}" + "".join(f"{k:>16}" for k in keys))
    for c, (s, lam) in enumerate(settings):
        sc = pooled_type_scores([counts[k][c] for k in every])
        print(f"{s:>9g}{lam:>8g}" + "".join(f"{sc[k]:>16.4f}" for k in keys))
    held = []
    for k in every:
        c = best([j for j in every if j != k])
        held.append(counts[k][c])
        print(f"leave out {tiles[k].name}: sigma {settings[c][0]:g} lambda {settings[c][1]:g}")
    c = best(every)
    print(f"best on all tiles: sigma {settings[c][0]:g} lambda {settings[c][1]:g}")
    sc = pooled_type_scores(held)
    print(f"{'leave-one-tile-out':<17}" + "".join(f"{sc[k]:>16.4f}" for k in keys))


if __name__ == "__main__":
    main()
