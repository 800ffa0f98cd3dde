"""Tiled-inference throughput of the shipped models on this machine (CPU or GPU).

Prints, per model: bare forward MP/s (the model alone on tile batches covering the image),
tiled MP/s (nucleoseg's predict_tiled: padding, tiling, normalisation, stitching), the
overhead of tiling, post-processing MP/s, and peak RSS. The image is built from real MoNuSeg
tiles mirrored side by side. Usage:

    python benchmarks/tiling.py [--size 4096] [--tile 1024] [--batch 4] [MODEL ...]

Set KERAS_BACKEND=jax on a GPU machine (the same Keras code runs there).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np


def big_image(size: int, data: str | None) -> np.ndarray:
    """A ``size x size`` RGB image tiled from real MoNuSeg training tiles (mirrored)."""
    from nucleoseg.io.monuseg import list_tiles

    tiles = [t.image() for t in list_tiles("train", data)[:8]]
    rows = []
    k = 0
    for _ in range(-(-size // 1000)):
        row = []
        for c in range(-(-size // 1000)):
            t = tiles[k % len(tiles)]
            k += 1
            row.append(t[:, ::-1] if c % 2 else t)
        rows.append(np.concatenate(row, axis=1))
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:size, :size])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="default: every shipped model")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--halo", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--data", default=None)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    from nucleoseg.models.weights import shipped_models

    args.models = args.models or shipped_models()

    import keras

    from nucleoseg.inference.postprocess import probabilities_to_labels
    from nucleoseg.inference.predict import normalize, predict_batch, run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.inference.tiling import fit_grid

    image = big_image(args.size, args.data)
    mp = image.shape[0] * image.shape[1] / 1e6
    print(f"backend {keras.backend.backend()}, image {image.shape[0]}x{image.shape[1]} "
          f"({mp:.1f} MP), tile {args.tile}, halo {args.halo}, batch {args.batch}")
    rows = []
    for name in args.models:
        seg = Segmenter.load(name, tile=args.tile, halo=args.halo, batch_size=args.batch)
        # bare: the model alone on non-overlapping tiles that cover exactly the image pixels
        n_bare = (-(-image.shape[0] // args.tile)) * (-(-image.shape[1] // args.tile))
        x = normalize(image[: args.tile, : args.tile])[None].repeat(args.batch, axis=0)
        predict_batch(seg.model, x)  # compile
        bare = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(0, n_bare, args.batch):
                predict_batch(seg.model, x)
            bare.append(time.perf_counter() - t0)
        bare_mps = n_bare * args.tile**2 / 1e6 / min(bare)
        grid = fit_grid(image.shape[:2], seg.tile, seg.halo, seg.stride)
        tiled = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            probs = run(seg.probabilities(image))
            tiled.append(time.perf_counter() - t0)
        tiled_mps = mp / min(tiled)
        t0 = time.perf_counter()
        labels = probabilities_to_labels(probs, seg.params)
        post_s = time.perf_counter() - t0
        rows.append((name, bare_mps, tiled_mps, 100 * (bare_mps / tiled_mps - 1), mp / post_s,
                     int(labels.max()), len(grid), grid.tile[0]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'model':<12}{'bare MP/s':>11}{'tiled MP/s':>12}{'overhead %':>12}"
          f"{'post MP/s':>11}{'nuclei':>9}{'tiles':>7}{'tile px':>9}")
    for name, b, t, o, p, n, k, ts in rows:
        print(f"{name:<12}{b:>11.3f}{t:>12.3f}{o:>12.1f}{p:>11.2f}{n:>9}{k:>7}{ts:>9}")
    print(f"peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
