"""The two marker rules on the validation tiles: interior above a threshold against maxima
of the interior by their dynamic (``marker_dynamic``), per model and data set.

    python benchmarks/marker_rule.py [MODEL ...] [--data ../shared/data] [--rounds 3]

For each model: its card's rule (``postprocess``) and the threshold rule it replaced
(``validation_before_marker_search`` in the card, when there is one), on the same float32
probabilities; pooled Dice, AJI, merged and split shares, and the post-processing time per
1000² tile (best of ``--rounds``). Validation tiles only: the rule is chosen there.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    from nucleoseg.evaluation.metrics import Counts, counts
    from nucleoseg.inference.postprocess import PostprocessParams, probabilities_to_labels
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.io.datasets import list_tiles
    from nucleoseg.models.weights import shipped_models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("--data")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print("model       rule                              data set  Dice    AJI     merged  "
          "split   post ms/tile")
    for name in args.models or shipped_models():
        seg = Segmenter.load(name, precision="float32")
        before = seg.card.record.get("validation_before_marker_search", {}).get("postprocess")
        rules = [("card", seg.params)]
        if before:
            rules.insert(0, ("before", PostprocessParams.from_dict(before)))
        for ds in ("monuseg", "consep"):
            tiles = list_tiles(ds, "val", args.data)
            pairs = [(run(seg.probabilities(t.image())), t.labels()) for t in tiles]
            for what, params in rules:
                total, best = Counts(), float("inf")
                for _ in range(args.rounds):
                    t0 = time.perf_counter()
                    out = [probabilities_to_labels(p, params) for p, _ in pairs]
                    best = min(best, (time.perf_counter() - t0) / len(pairs))
                for labels, (_, truth) in zip(out, pairs, strict=True):
                    total = total + counts(labels, truth)
                s = total.scores()
                rule = (f"dynamic {params.marker_dynamic:g} (sigma {params.marker_sigma:g}, "
                        f">= {params.interior_threshold:g})" if params.marker_dynamic > 0
                        else f"interior >= {params.interior_threshold:g}")
                print(f"{name:<11} {what:<6} {rule:<27} {ds:<9} {s['dice']:.4f}  "
                      f"{s['aji']:.4f}  {s['merged']:.4f}  {s['split']:.4f}  "
                      f"{1000 * best:.0f}", flush=True)


if __name__ == "__main__":
    main()
