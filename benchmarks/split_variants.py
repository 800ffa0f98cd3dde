"""Can post-processing alone split the nuclei a model merges? Variants on validation tiles.

The default UNet's probabilities on the MoNuSeg and CoNSeP validation tiles are turned into
labels by the shipped post-processing and by variants aimed at merged nuclei: markers split
further by the h-maxima of their distance transform, a flooding surface mixing the interior
probability with the distance to background, a smoothed interior channel, and splitting only
the nuclei whose shape is concave (solidity below a gate). Prints pooled
Dice, AJI and the merged/split shares (README "Metrics") per data set. The test tiles are
never read.

    python benchmarks/split_variants.py [--model unet]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def labels_of(probs: np.ndarray, params, split_h: float = 0.0, surface: float = 0.0,
              smooth: float = 0.0, gate: float = 0.0) -> np.ndarray:
    """The shipped post-processing (all options 0) or one of the variants."""
    from scipy import ndimage as ndi
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    from nucleoseg.inference.postprocess import (
        drop_small_and_relabel,
        fill_holes,
        flood_markers,
        probabilities_to_labels,
    )

    if gate:
        return split_concave(probabilities_to_labels(probs, params), gate, split_h or 1.0)
    if not (split_h or surface or smooth):
        return probabilities_to_labels(probs, params)
    fg = fill_holes(probs[..., 0] >= params.threshold)
    interior = ndi.gaussian_filter(probs[..., 1], smooth) if smooth else probs[..., 1]
    markers, n = ndi.label((interior >= params.interior_threshold) & fg)
    sizes = np.bincount(markers.ravel(), minlength=n + 1)
    small = sizes < params.min_marker_size
    small[0] = False
    markers[small[markers]] = 0
    if split_h:
        dist = ndi.distance_transform_edt(markers > 0)
        peaks, _ = ndi.label(h_maxima(dist, split_h) & (markers > 0))
        markers = watershed(-dist, peaks, mask=markers > 0)
    if surface:
        interior = interior + surface * np.minimum(ndi.distance_transform_edt(fg), 10) / 10
    flooded = flood_markers(interior, markers, fg, number_unmarked=True, invert=True)
    return drop_small_and_relabel(flooded, params.min_size)


def split_concave(labels: np.ndarray, gate: float, h: float) -> np.ndarray:
    """Split only the nuclei whose shape says "two": solidity (area / convex hull area)
    below ``gate``; the pieces are the watershed basins of the distance transform's
    h-maxima inside the nucleus (shape-based declumping)."""
    from scipy import ndimage as ndi
    from skimage.measure import regionprops
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    out = labels.copy()
    next_id = int(labels.max()) + 1
    for region in regionprops(labels):
        if region.area < 30 or region.solidity >= gate:
            continue
        sl = region.slice
        padded = np.pad(region.image, 1)
        dist = ndi.distance_transform_edt(padded)
        peaks, n = ndi.label(h_maxima(dist, h) & padded)
        if n < 2:
            continue
        parts = watershed(-dist, peaks, mask=padded)[1:-1, 1:-1]
        view = out[sl]
        for k in range(2, n + 1):
            view[parts == k] = next_id
            next_id += 1
    return out


VARIANTS = {
    "shipped": {},
    "markers split, h-maxima h=1": {"split_h": 1},
    "markers split, h-maxima h=2": {"split_h": 2},
    "surface + 0.5 x distance": {"surface": 0.5},
    "surface + 1.0 x distance": {"surface": 1.0},
    "interior smoothed, sigma 1": {"smooth": 1.0},
    "concave split, solidity<0.80": {"gate": 0.80},
    "concave split, solidity<0.85": {"gate": 0.85},
    "concave split, solidity<0.90": {"gate": 0.90},
    "concave split, <0.85, h=2": {"gate": 0.85, "split_h": 2},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet")
    ap.add_argument("--data", default=None)
    ap.add_argument("--only", default="", help="run only variants whose name contains this")
    args = ap.parse_args()

    from nucleoseg.evaluation.metrics import Counts, counts
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.io.datasets import list_tiles

    seg = Segmenter.load(args.model)
    tiles = {ds: [(run(seg.probabilities(t.image())), t.labels())
                  for t in list_tiles(ds, "val", args.data)] for ds in ("monuseg", "consep")}
    print(f"{args.model}, validation tiles; pooled Dice / AJI / merged / split")
    print(f"{'variant':<30}" + "".join(f"{ds:>34}" for ds in tiles))
    only = [v for v in VARIANTS if not args.only or args.only in v]
    for name, options in ((v, VARIANTS[v]) for v in only):
        cells = []
        for pairs in tiles.values():
            total = Counts()
            for probs, truth in pairs:
                total = total + counts(labels_of(probs, seg.params, **options), truth)
            s = total.scores()
            cells.append(f"{s['dice']:.4f} / {s['aji']:.4f} / {s['merged']:.3f} / "
                         f"{s['split']:.3f}")
        print(f"{name:<30}" + "".join(f"{c:>34}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
