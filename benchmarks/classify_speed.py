"""Where classifying a tile's nuclei spends its time, against segmenting the tile.

Segments the CoNSeP validation tiles (1000x1000) with a model, then times each stage of a
classifier (default: the shipped one) on its nuclei: features, forest, patch cutting, patch
net (on the nuclei its gate lets through), the context forest's inputs and trees (when it
has one), and the whole ``predict`` call. Best of ``--repeat`` rounds per stage, in ms per
tile, and the whole call as a share of the segment time. Run it from two checkouts
(``PYTHONPATH=<other>/src``) or on two classifiers (``--classifier``) for an A/B on the same
machine. The test tiles are never read.

    python benchmarks/classify_speed.py [--model unet] [--repeat 3] [--classifier NAME|NPZ]
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
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--classifier", default="consep_types", help="name or .npz path")
    args = ap.parse_args()

    import nucleoseg
    from nucleoseg.classify.classifier import NucleusClassifier
    from nucleoseg.classify.features import nucleus_features
    from nucleoseg.classify.patch_net import nucleus_patches
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.io.consep import list_tiles

    seg = Segmenter.load(args.model)
    clf = NucleusClassifier.load(args.classifier)
    images = [t.image() for t in list_tiles("val", args.data)]
    run(seg.segment(images[0][:256, :256]))  # compile outside the timing
    best: dict[str, float] = {}

    def timed(stage, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        best[stage] = min(best.get(stage, float("inf")), time.perf_counter() - t0)
        return out

    def segment(image):
        return run(seg.segment(image))

    per_tile, shares = [], []
    for k, image in enumerate(images):
        best.clear()
        for _ in range(args.repeat):
            labels = timed("segment", segment, image)
            timed("classify (predict)", clf.predict, image, labels)
            ids, feats = timed("features", nucleus_features, image, labels)
            p1 = timed("forest", clf.forest.predict_proba, feats)
            two_scale = getattr(clf, "patch_context", False)
            gated = ids
            if getattr(clf, "patch_gate", None) is not None:  # the nuclei the net runs on
                from nucleoseg.classify.context import nucleus_centres

                ctx = clf._forest_proba(feats, nucleus_centres(labels, ids))
                gated = ids[clf.patch_runs(ctx)]
            patches = timed("patches", nucleus_patches, image, labels, gated,
                            *((None, True) if two_scale else ()))
            clf._runner = clf._runner or clf._patch_runner()
            cnn = timed("patch net", clf._runner, patches)
            if getattr(clf, "context_forest", None) is not None:
                from nucleoseg.classify.context import context_inputs, nucleus_centres

                centres = timed("centres", nucleus_centres, labels, ids)
                if getattr(clf, "context_with_patch_net", False):
                    p1 = np.hstack([p1, cnn])
                x = timed("neighbour means", context_inputs, feats, p1, centres,
                          clf.context_sigmas)
                timed("context forest", clf.context_forest.predict_proba, x)
        shares.append(len(gated) / max(len(ids), 1))
        per_tile.append((len(ids), dict(best)))
        print(f"tile {k}: {len(ids)} nuclei", flush=True)
    stages = list(per_tile[0][1])
    print(f"{args.model} nuclei, {args.classifier}, {len(images)} CoNSeP validation tiles, "
          f"best of {args.repeat}; "
          f"nucleoseg from {os.path.dirname(nucleoseg.__file__)}")
    print(f"{'stage':<22}{'ms/tile':>10}")
    for s in stages:
        ms = 1000 * sum(t[s] for _, t in per_tile) / len(per_tile)
        print(f"{s:<22}{ms:>10.1f}")
    share = sum(t["classify (predict)"] for _, t in per_tile) / sum(
        t["segment"] for _, t in per_tile)
    print(f"patch net on {np.mean(shares):.0%} of the nuclei (its gate: "
          f"{getattr(clf, 'patch_gate', None)})")
    print(f"classify / segment: {share:.1%}")


if __name__ == "__main__":
    main()
