"""Split touching nuclei only where the outline says there are several: a convexity gate
between the two marker rules, on the validation tiles.

The dynamic marker rule (``marker_dynamic``) separates touching nuclei the threshold rule
merged, but also cuts some large, pale, vesicular nuclei in two or three. A single nucleus
is convex; two touching ones make a waisted outline. The gate keeps the threshold rule's
nuclei inside every connected piece of the nucleus mask whose solidity (area over convex
hull area) is at least ``g``, and the dynamic rule's elsewhere. Both rules share the mask, so
Dice is unchanged; pooled AJI, merged and split shares per data set and gate. Validation
tiles only.

    python benchmarks/convex_gate.py [MODEL] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GATES = (0.0, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97)


def gated(dynamic: np.ndarray, threshold: np.ndarray, gate: float) -> np.ndarray:
    """``dynamic``'s nuclei, but ``threshold``'s inside the convex pieces of the mask."""
    from scipy import ndimage as ndi
    from skimage.measure import regionprops

    if gate <= 0:
        return dynamic
    pieces, _ = ndi.label(dynamic > 0)
    out = dynamic.astype(np.int64).copy()
    top = int(out.max()) + 1
    for p in regionprops(pieces):
        if p.solidity < gate:
            continue
        sl = p.slice
        inside = pieces[sl] == p.label
        if np.unique(dynamic[sl][inside]).size < 2:
            continue  # one nucleus under both rules
        local = np.where(inside, threshold[sl], 0)
        keep = local > 0
        # the threshold rule's ids, made distinct from every dynamic id
        out[sl][inside] = 0
        out[sl][keep] = local[keep] + top
        top += int(local.max()) + 1
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(out)[0].astype(np.int32)


def main() -> None:
    from nucleoseg.evaluation.metrics import Counts, counts
    from nucleoseg.inference.postprocess import PostprocessParams, probabilities_to_labels
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.io.datasets import list_tiles

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="unet")
    ap.add_argument("--data")
    args = ap.parse_args()
    seg = Segmenter.load(args.model, precision="float32")
    before = PostprocessParams.from_dict(
        seg.card.record["validation_before_marker_search"]["postprocess"])
    print(f"{args.model}: dynamic rule {seg.params.marker_dynamic:g}, threshold rule "
          f"{before.interior_threshold:g}; validation tiles, pooled")
    print(f"{'gate':<6}{'data set':<10}{'Dice':>8}{'AJI':>8}{'merged':>8}{'split':>8}")
    for ds in ("monuseg", "consep"):
        tiles = list_tiles(ds, "val", args.data)
        maps = []
        for t in tiles:
            p = run(seg.probabilities(t.image()))
            maps.append((probabilities_to_labels(p, seg.params),
                         probabilities_to_labels(p, before), t.labels()))
        for g in GATES:
            total = Counts()
            for dyn, thr, truth in maps:
                total = total + counts(gated(dyn, thr, g), truth)
            s = total.scores()
            print(f"{g:<6g}{ds:<10}{s['dice']:>8.4f}{s['aji']:>8.4f}{s['merged']:>8.4f}"
                  f"{s['split']:>8.4f}", flush=True)


if __name__ == "__main__":
    main()
