"""A folder of images through one model: one image at a time vs reading, the model and
post-processing + writing overlapped (``nucleoseg.inference.batch.segment_many``).

The images are real files (TIFF) read with ``open_image`` and the labels are written with
``write_labels`` into a temporary folder, as ``nucleoseg segment DIR/* --out-dir OUT`` does.
Default input: the 14 MoNuSeg test tiles (1000x1000); ``--size S --count N`` writes N
mirrored mosaics of real training tiles instead. Both ways run in the same process with
the same model, alternating which goes first in each round; the table gives the best time
of each, their ratio, and checks that every labels file is identical.

    python benchmarks/many_images.py [--data DIR] [--size 2048 --count 6] [--rounds 3]
                                     [--precision auto] [MODEL ...]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="default: every shipped model")
    ap.add_argument("--data")
    ap.add_argument("--size", type=int, help="mosaics of this side instead of the test tiles")
    ap.add_argument("--count", type=int, default=6, help="how many mosaics (with --size)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()

    import numpy as np
    import tifffile

    from nucleoseg.inference.batch import segment_many
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.io.images import open_image
    from nucleoseg.io.labels import read_labels, write_labels
    from nucleoseg.models.weights import shipped_models

    tmp = Path(tempfile.mkdtemp())
    if args.size:
        from tiling import big_image

        base = big_image(args.size, args.data)
        images = [np.ascontiguousarray(np.roll(base, 97 * k, axis=(0, 1)))
                  for k in range(args.count)]
    else:
        from nucleoseg.io.monuseg import list_tiles

        images = [t.image() for t in list_tiles("test", args.data)]
    paths = []
    for k, image in enumerate(images):
        paths.append(tmp / f"in{k:03d}.tif")
        tifffile.imwrite(paths[-1], image)
    mp = sum(im.shape[0] * im.shape[1] for im in images) / 1e6
    del images
    print(f"{len(paths)} images of {tifffile.imread(paths[0]).shape[:2]} ({mp:.1f} MP), "
          f"{args.rounds} rounds, best time of each; precision {args.precision}")
    print(f"{'model':<10}{'precision':>10}{'serial s':>10}{'overlapped s':>14}"
          f"{'ratio':>7}{'MP/s':>7}  labels")
    for name in args.models or shipped_models():
        seg = Segmenter.load(name, precision=args.precision)
        list(segment_many(seg, paths[:1], open_image))  # trace the model outside the timing
        times: dict[bool, float] = {}
        for r in range(args.rounds):
            for overlap in ((True, False) if r % 2 else (False, True)):
                out = tmp / ("overlapped" if overlap else "serial")
                out.mkdir(exist_ok=True)

                def save(i, image, labels, out=out):
                    return write_labels(out / f"{i:03d}.tif", labels)

                t0 = time.perf_counter()
                outcomes = list(segment_many(seg, paths, open_image, save, overlap=overlap))
                seconds = time.perf_counter() - t0
                failed = [o.error for o in outcomes if o.error is not None]
                if failed:
                    raise SystemExit(f"{name}: {failed[0]}")
                times[overlap] = min(times.get(overlap, np.inf), seconds)
        same = all(np.array_equal(read_labels(tmp / "serial" / f"{i:03d}.tif"),
                                  read_labels(tmp / "overlapped" / f"{i:03d}.tif"))
                   for i in range(len(paths)))
        print(f"{name:<10}{seg.precision:>10}{times[False]:>10.2f}{times[True]:>14.2f}"
              f"{times[True] / times[False]:>7.2f}{mp / times[True]:>7.2f}  "
              f"{'identical' if same else 'DIFFERENT'}")
    print("ratio = overlapped / serial time (lower is better); MP/s of the overlapped run")


if __name__ == "__main__":
    main()
