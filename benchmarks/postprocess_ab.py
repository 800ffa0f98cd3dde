"""A/B of post-processing: another revision's ``postprocess.py`` against the current one.

Runs both on the same probabilities of a ``--size``² image, per model, checks that the labels
are identical (up to the order of ids, which changed in session 31) and prints the best of
``--rounds`` interleaved timings; ``--workers`` sets the new side's post-processing threads
(default: every core; the old side runs in one pass). Usage:

    git show REV:src/nucleoseg/inference/postprocess.py > /tmp/postprocess_old.py
    python benchmarks/postprocess_ab.py /tmp/postprocess_old.py [--size 4096] [MODEL ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", help="path of the other revision's postprocess.py")
    ap.add_argument("models", nargs="*", help="default: every shipped model")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--data", default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()

    from tiling import big_image

    from nucleoseg.inference import postprocess as new
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.models.weights import shipped_models

    # the file's relative imports ("from ..models", "from .x") read from the installed package
    source = (Path(args.old).read_text().replace("from ..", "from nucleoseg.")
              .replace("from .", "from nucleoseg.inference."))
    old = types.ModuleType("postprocess_old")
    old.__file__ = args.old
    sys.modules[old.__name__] = old  # dataclasses look their module up
    exec(compile(source, args.old, "exec"), old.__dict__)

    image = big_image(args.size, args.data)
    mp = image.shape[0] * image.shape[1] / 1e6
    print(f"post-processing of one {args.size}x{args.size} image ({mp:.1f} MP), seconds, best of "
          f"{args.rounds} interleaved rounds (alternating order)")
    # the old side runs in one pass: its strips (if it has them) would call the new module
    import inspect

    one_pass = {"workers": 1} if "workers" in inspect.signature(
        old.probabilities_to_labels).parameters else {}
    for name in args.models or shipped_models():
        seg = Segmenter.load(name)
        probs = run(seg.probabilities(image))
        sides = {"old": lambda p=probs, q=seg.params: old.probabilities_to_labels(
                     p, q, **one_pass),
                 "new, 1 thread": lambda p=probs, q=seg.params: new.probabilities_to_labels(
                     p, q, workers=1),
                 "new": lambda p=probs, q=seg.params: new.probabilities_to_labels(
                     p, q, workers=args.workers)}
        labels = {key: call() for key, call in sides.items()}  # also compiles, imports
        best = dict.fromkeys(sides, float("inf"))
        for i in range(args.rounds):
            for key, call in list(sides.items())[:: 1 if i % 2 else -1]:  # alternate order
                t0 = time.perf_counter()
                call()
                best[key] = min(best[key], time.perf_counter() - t0)
        same = all(same_objects(labels["old"], b) for b in labels.values())
        print(f"{name:<10} {seg.precision:>9}  old {best['old']:.3f}  new, 1 thread "
              f"{best['new, 1 thread']:.3f}  new {best['new']:.3f}  new/old "
              f"{best['new'] / best['old']:.2f}  labels identical: {same} "
              f"({int(labels['new'].max())} nuclei)")


def same_objects(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images hold the same objects, whatever their ids."""
    from nucleoseg.inference.postprocess import drop_small_and_relabel

    return bool(np.array_equal(drop_small_and_relabel(a, 1, raster_order=True),
                               drop_small_and_relabel(b, 1, raster_order=True)))


if __name__ == "__main__":
    main()
