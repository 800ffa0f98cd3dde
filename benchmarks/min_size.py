"""How small a nucleus should post-processing keep? Detection metrics against the minimum size.

Until session 40 the post-processing search (``training/postprocess_choice.py``) picked the
minimum object size from (8, 16, 32) by pooled Dice + AJI, which hardly see a tiny object: a
fragment of a few pixels costs Dice almost nothing, yet it is one more nucleus in every
count, density and object-level score. This prints, for each shipped model on the
validation tiles of MoNuSeg and CoNSeP (the test tiles are never read), pooled Dice, AJI,
object F1, PQ, HoVer-Net's detection F1 (centroids <= 12 px) and the predicted / true
nucleus count at each minimum size, the card's other settings kept.

    python benchmarks/min_size.py [--models unet segnet ...] [--sizes 8,16,24,32,48,64]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODELS = ["unet", "unet_lite", "segnet", "deeplabv3", "se_unet"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--data", default=None)
    ap.add_argument("--sizes", default="8,16,24,32,40,48,64")
    args = ap.parse_args()
    sizes = [int(v) for v in args.sizes.split(",")]

    from nucleoseg.evaluation.classification import TypeCounts, centroids
    from nucleoseg.evaluation.metrics import Counts, counts
    from nucleoseg.inference.postprocess import probabilities_to_labels
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.training.recipe import load_split

    t0 = time.perf_counter()
    split = {ds: load_split("val", args.data, (ds,))[1:] for ds in ("monuseg", "consep")}
    truths = {ds: [centroids(lab)[1] for lab in labels] for ds, (_, labels) in split.items()}
    cols = ("dice", "aji", "object_f1", "pq", "f_d", "count")
    print(f"validation tiles: MoNuSeg {len(split['monuseg'][0])}, CoNSeP "
          f"{len(split['consep'][0])}; count = predicted / true nuclei; the card's settings "
          "otherwise (float32)")
    print(f"{'model':<10}{'min_size':>9}  " +
          "".join(f"{ds[:7] + ' ' + c:>18}" for ds in split for c in cols))
    for name in args.models:
        seg = Segmenter.load(name, precision="float32")
        probs = {ds: [run(seg.probabilities(im)) for im in images]
                 for ds, (images, _) in split.items()}
        marks = {m: "*" if m == seg.params.min_size else "" for m in sizes}
        for m in sizes:
            params = seg.params.replace(min_size=m)
            line = []
            for ds, (_, labels) in split.items():
                total, det = Counts(), TypeCounts()
                for prob, lab, tc in zip(probs[ds], labels, truths[ds], strict=True):
                    pred = probabilities_to_labels(prob, params)
                    total = total + counts(pred, lab)
                    pc = centroids(pred)[1]
                    det.add(tc, [1] * len(tc), pc, [1] * len(pc))
                s = total.scores()
                s["f_d"] = det.scores({1: "n"})["f_d"]
                s["count"] = total.n_pred / max(total.n_true, 1)
                line += [s[c] for c in cols]
            print(f"{name:<10}{str(m) + marks[m]:>9}  " + "".join(f"{v:>18.4f}" for v in line),
                  flush=True)
    print(f"(* = the card's minimum size; {time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
