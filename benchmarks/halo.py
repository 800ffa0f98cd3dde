"""Tile size and halo: accuracy against time, on the validation tiles (never the test set).

The six validation tiles are stitched into one 2000 x 3000 mosaic (ground truth too), so tile
seams fall inside tissue; each (tile, halo[, grid]) setting segments it with the same model
and post-processing. ``grid`` is ``fit`` (the in-memory default: equal tiles edge to edge,
context only where tiles meet) or ``slide`` (the whole-slide grid: reflect-padded by the halo,
equal cores). Prints Dice / AJI / PQ on the mosaic, the largest probability change against
the first setting, the pixels the model computed per image pixel, and the time.

    python benchmarks/halo.py [--model unet] [--settings 1280:64 1280:64:slide 512:32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def mosaic(data: str | None) -> tuple[np.ndarray, np.ndarray]:
    from nucleoseg.io.monuseg import list_tiles

    tiles = list_tiles("val", data)
    images, labels, offset = [], [], 0
    for t in tiles:
        lab = t.labels().astype(np.int64)
        labels.append(np.where(lab > 0, lab + offset, 0))
        offset += int(lab.max())
        images.append(t.image())
    rows = [np.concatenate(images[k : k + 3], axis=1) for k in (0, 3)]
    lrows = [np.concatenate(labels[k : k + 3], axis=1) for k in (0, 3)]
    return np.concatenate(rows, axis=0), np.concatenate(lrows, axis=0).astype(np.int32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet")
    ap.add_argument("--settings", nargs="+", default=["1280:64", "1280:32", "512:64", "512:32"])
    ap.add_argument("--data")
    args = ap.parse_args()

    from nucleoseg.evaluation.metrics import evaluate_pair
    from nucleoseg.inference.postprocess import probabilities_to_labels
    from nucleoseg.inference.predict import predict_padded, run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.inference.tiling import fit_grid, make_grid, pad_image

    image, truth = mosaic(args.data)
    seg = Segmenter.load(args.model)
    first_tile, first_halo = (int(v) for v in args.settings[0].split(":")[:2])
    seg.update(tile=first_tile, halo=first_halo)
    run(seg.probabilities(image))  # warm-up: the first full run is slower on this CPU
    print(f"{args.model} on the validation mosaic {image.shape[1]}x{image.shape[0]}; "
          f"post-processing {seg.params.to_dict()}")
    print("| tile | halo | grid | tile px used | model px / image px | s | Dice | AJI | PQ | "
          "max |Δp| vs first | mean |Δp| |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    reference = None
    for setting in args.settings:
        tile, halo, kind = (setting.split(":") + ["fit"])[:3]
        tile, halo = int(tile), int(halo)
        seg.update(tile=tile, halo=halo)
        grid = (fit_grid if kind == "fit" else make_grid)(image.shape[:2], tile, halo,
                                                          seg.stride)

        def probabilities(grid=grid):
            return run(predict_padded(seg.model, pad_image(image, grid), grid, seg.batch_size))

        run(seg.probabilities(image[: grid.tile[0], : grid.tile[1]]))  # trace this shape
        t0 = time.perf_counter()
        probs = probabilities()
        labels = probabilities_to_labels(probs, seg.params)
        seconds = time.perf_counter() - t0
        m = evaluate_pair(labels, truth)
        if reference is None:
            reference = probs
        diff = np.abs(probs - reference)
        used = len(grid) * grid.tile[0] * grid.tile[1] / image.shape[0] / image.shape[1]
        print(f"| {tile} | {halo} | {kind} | {grid.tile[0]}x{grid.tile[1]} | {used:.3f} | "
              f"{seconds:.1f} | {m['dice']:.4f} | {m['aji']:.4f} | {m['pq']:.4f} | "
              f"{diff.max():.3f} | {diff.mean():.2e} |")


if __name__ == "__main__":
    main()
