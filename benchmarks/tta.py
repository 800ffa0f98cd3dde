"""Test-time augmentation (4 flips) against the plain forward pass, on the validation tiles.

    python benchmarks/tta.py [MODEL ...] [--data ../shared/data]

Prints, per model and data set, pooled Dice, AJI, precision, recall and seconds per tile
with and without TTA (the card's post-processing, default precision). Validation tiles only:
the setting is judged where choices are made, never on the test tiles.
"""

import argparse
import time

from nucleoseg.evaluation.metrics import Counts, counts
from nucleoseg.inference.predict import run
from nucleoseg.inference.segment import Segmenter
from nucleoseg.io.datasets import list_tiles


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=["unet"])
    ap.add_argument("--data")
    args = ap.parse_args()
    print("model       data set  tta    Dice     AJI   precision  recall  s/tile")
    for name in args.models:
        seg = Segmenter.load(name)
        for ds in ("monuseg", "consep"):
            tiles = list_tiles(ds, "val", args.data)
            pairs = [(t.image(), t.labels()) for t in tiles]
            for tta in (False, True):
                seg.update(tta=tta)
                run(seg.segment(pairs[0][0][:256, :256]))  # trace outside the timing
                total, seconds = Counts(), 0.0
                for image, truth in pairs:
                    t0 = time.perf_counter()
                    labels = run(seg.segment(image))
                    seconds += time.perf_counter() - t0
                    total = total + counts(labels, truth)
                s = total.scores()
                print(f"{name:<11} {ds:<9} {'yes' if tta else 'no ':<4} {s['dice']:.4f}  "
                      f"{s['aji']:.4f}  {s['precision']:.4f}     {s['recall']:.4f}  "
                      f"{seconds / len(pairs):.2f}")


if __name__ == "__main__":
    main()
