"""Inference at another scale: the image resized by s, segmented, the probabilities resized
back; validation tiles, per data set and interior threshold.

    python benchmarks/inference_scale.py [MODEL] [--scales 0.8,0.9,1.0,1.12,1.25]

Would the network separate CoNSeP's touching nuclei better if they looked larger (or
smaller) than the 40x it was trained at? Prints pooled Dice, AJI, precision, recall, merged
and split shares and seconds per tile (default engine and precision). Validation tiles only.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    import numpy as np
    from skimage.transform import resize

    from nucleoseg.evaluation.metrics import Counts, counts
    from nucleoseg.inference.postprocess import probabilities_to_labels
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.io.datasets import list_tiles

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="unet")
    ap.add_argument("--scales", default="0.8,0.9,1.0,1.12,1.25")
    ap.add_argument("--interior", default="0.7,0.8,0.9,0.95",
                    help="interior thresholds tried at each scale (threshold marker rule)")
    ap.add_argument("--data")
    args = ap.parse_args()
    seg = Segmenter.load(args.model)
    base = seg.params.replace(marker_dynamic=0.0)
    print(f"# {args.model}: {seg.engine} {seg.precision}; post-processing {base.to_dict()} "
          "with the interior threshold varied")
    for ds in ("monuseg", "consep"):
        pairs = [(t.image(), t.labels()) for t in list_tiles(ds, "val", args.data)]
        for s in (float(x) for x in args.scales.split(",")):
            probs, seconds = [], 0.0
            for image, _ in pairs:
                h, w = image.shape[:2]
                t0 = time.perf_counter()
                im = image if s == 1.0 else resize(
                    image, (round(h * s), round(w * s), 3), order=1, anti_aliasing=s < 1,
                    preserve_range=True).round().astype(np.uint8)
                p = run(seg.probabilities(im))
                if s != 1.0:
                    p = resize(p, (h, w, p.shape[-1]), order=1, anti_aliasing=s > 1)
                seconds += time.perf_counter() - t0
                probs.append(p.astype(np.float32))
            for it in (float(x) for x in args.interior.split(",")):
                total = Counts()
                for p, (_, truth) in zip(probs, pairs, strict=True):
                    total = total + counts(probabilities_to_labels(
                        p, base.replace(interior_threshold=it)), truth)
                r = total.scores()
                print(f"{ds:<8} s={s:<5} interior>={it:<5} Dice {r['dice']:.4f} AJI "
                      f"{r['aji']:.4f} P {r['precision']:.4f} R {r['recall']:.4f} merged "
                      f"{r['merged']:.4f} split {r['split']:.4f} s/tile "
                      f"{seconds / len(pairs):.2f}", flush=True)


if __name__ == "__main__":
    main()
