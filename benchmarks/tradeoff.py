"""Accuracy per FLOP: the shipped models side by side (issue: speed, "lighter configuration").

Prints per shipped model: parameters, FLOPs per pixel (counted, as in throughput.py), the
validation and MoNuSeg-test Dice / AJI recorded in its model card (by ``nucleoseg train`` and
``scripts/record_test_metrics.py``; the slow test ``tests/test_shipped_weights.py`` re-computes
the test numbers), and the measured time of ``nucleoseg segment`` on a ``--size``² image in
this process, in the default precision (best of ``--rounds`` interleaved rounds), with the
speed relative to the first model. Usage:

    python benchmarks/tradeoff.py [--size 4096] [--rounds 2] [MODEL ...]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="default: every shipped model")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--data", default=None)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds")
    args = ap.parse_args()
    from nucleoseg.models.weights import shipped_models

    args.models = args.models or shipped_models()

    import tifffile
    from throughput import flops_per_pixel
    from tiling import big_image

    from nucleoseg.cli import main as cli
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.models.precision import resolve_precision
    from nucleoseg.models.weights import shipped_dir

    image = big_image(args.size, args.data)
    tmp = Path(tempfile.mkdtemp())
    tifffile.imwrite(tmp / "image.tif", image)
    mp = image.shape[0] * image.shape[1] / 1e6

    rows = {}
    for name in args.models:
        card = json.loads((shipped_dir() / f"{name}.json").read_text())
        rows[name] = {"card": card, "precision": resolve_precision("auto", card),
                      "kflop": flops_per_pixel(Segmenter.load(name, precision="float32").model)
                      / 1e3, "seconds": float("inf")}
        cli(["segment", str(tmp / "image.tif"), "-o", str(tmp / "labels.tif"), "-m", name, "-q"])
    for _ in range(args.rounds):  # interleaved: this CPU's speed drifts within minutes
        for name, row in rows.items():
            t0 = time.perf_counter()
            cli(["segment", str(tmp / "image.tif"), "-o", str(tmp / "labels.tif"), "-m", name,
                 "-q"])
            row["seconds"] = min(row["seconds"], time.perf_counter() - t0)

    first = next(iter(rows.values()))["seconds"]
    print(f"`nucleoseg segment` on a {args.size}x{args.size} image ({mp:.1f} MP), default "
          f"precision, best of {args.rounds} interleaved rounds; metrics from the model cards")
    print(f"{'model':<11}{'params':>8}{'kFLOP/px':>9}{'val Dice':>9}{'val AJI':>8}"
          f"{'test Dice':>10}{'test AJI':>9}{'precision':>10}{'segment s':>10}{'MP/s':>6}"
          f"{'speed':>7}")
    for name, row in rows.items():
        card, val = row["card"], row["card"]["validation"]
        test = card["test"].get(row["precision"], card["test"])
        print(f"{name:<11}{card['parameters'] / 1e6:>7.2f}M{row['kflop']:>9.0f}"
              f"{val['dice']:>9.4f}{val['aji']:>8.4f}{test['dice']:>10.4f}{test['aji']:>9.4f}"
              f"{row['precision']:>10}{row['seconds']:>10.2f}{mp / row['seconds']:>6.2f}"
              f"{first / row['seconds']:>6.2f}x")
    print("test = the 14 official MoNuSeg 2018 test tiles in the precision that ran (the card's "
          "float32 numbers where it has none for it); speed relative to the first row")


if __name__ == "__main__":
    main()
