"""Do the CoNSeP type forests gain from more training tiles? A learning curve by tile folds.

The shipped classifier's forests were fitted on the 22 CoNSeP fit tiles; the 5 validation
tiles hold 148 of the training set's 371 ``other`` nuclei. Whether refitting on all 27 tiles
(once the recipe's choices are made) should help is measured here without the test tiles and
without trusting the 5 validation tiles alone: the 27 training tiles are split into 5 folds
(tile ``k`` of the natural order in fold ``k % 5``); each fold is classified by forests fitted
on the other folds' tiles (all of them, ~22: ``all``), and by forests fitted on a random
``--fraction`` of those tiles (``--repeats`` draws: ``subset``). Every tile is scored once,
out-of-fold, on the segmentation model's nuclei, pooled over all 27 tiles.

The forests are the recipe's (first forest and context forest: 100 trees, depth 16, leaves of
2, out-of-fold stacking), trained on the true nuclei and the model's paired ones as the recipe
does, decided with the shipped class weights. The patch CNN is left out (fitting one per fold
costs ~20 min of this CPU each, and the shipped one saw the fit tiles). The test tiles are
never read.

    python benchmarks/type_more_tiles.py [--model unet] [--fraction 0.78] [--repeats 2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet")
    ap.add_argument("--data", default=None)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--fraction", type=float, default=0.78,
                    help="share of the other folds' tiles in a subset (22 of 27 is 0.81)")
    ap.add_argument("--repeats", type=int, default=2, help="subset draws per fold")
    ap.add_argument("--cache", default="/tmp/nucleoseg_type_more_tiles",
                    help="folder for the model's label maps (reused between runs)")
    args = ap.parse_args()

    from nucleoseg.classify.classifier import NucleusClassifier
    from nucleoseg.classify.context import NEIGHBOUR_SIGMAS, context_inputs
    from nucleoseg.classify.forest import Forest
    from nucleoseg.classify.recipe import CONSEP_CLASSES, pooled_type_scores
    from nucleoseg.classify.stacking import describe_tiles, fit_context_forest, training_set
    from nucleoseg.evaluation.classification import TypeCounts
    from nucleoseg.io.consep import list_tiles

    t0 = time.perf_counter()
    tiles = list_tiles("train", args.data)
    cache = Path(args.cache) / args.model
    cache.mkdir(parents=True, exist_ok=True)
    seg = None

    def segment(image: np.ndarray) -> np.ndarray:
        nonlocal seg
        path = cache / f"{hashlib.sha1(image.tobytes()).hexdigest()[:16]}.npy"
        if path.is_file():
            return np.load(path)
        if seg is None:
            from nucleoseg.inference.segment import Segmenter

            seg = Segmenter.load(args.model, precision="float32")
        from nucleoseg.inference.predict import run

        labels = run(seg.segment(image))
        np.save(path, labels)
        return labels

    maps, _ = describe_tiles(tiles, segment)  # per tile: its true nuclei, then the model's
    print(f"{len(tiles)} tiles described ({time.perf_counter() - t0:.0f}s)", flush=True)
    truth = {m.tile: m for m in maps[0::2]}
    model = {m.tile: m for m in maps[1::2]}
    weights = np.asarray(NucleusClassifier.load("consep_types").class_weights or [1.0] * 4)
    n = len(CONSEP_CLASSES)
    rng = np.random.default_rng(0)
    counts: dict[str, dict[str, TypeCounts]] = {}
    sizes: dict[str, list[tuple[int, int]]] = {}

    def score(name: str, fit_tiles: list[int], held: list[int]) -> None:
        train = [m for m in maps if m.tile in fit_tiles]
        x, y = training_set(train)
        first = Forest.fit(x, y, n, args.trees, 16, 2, 0, n_jobs=2)
        context = fit_context_forest(train, n, args.trees, 0, log=lambda _: None)
        sizes.setdefault(name, []).append((len(fit_tiles), int((y == 0).sum())))
        for k in held:
            m, t = model[k], truth[k]
            p1 = first.predict_proba(m.features)
            p2 = context.predict_proba(context_inputs(m.features, p1, m.centres,
                                                      NEIGHBOUR_SIGMAS))
            for stage, p in (("forest", p1), ("context", p2)):
                for rule, w in (("argmax", np.ones(n)), ("weighted", weights)):
                    total = counts.setdefault(name, {}).setdefault(f"{stage}, {rule}",
                                                                   TypeCounts())
                    total.add(t.centres, t.targets + 1, m.centres, (p * w).argmax(1) + 1)

    for f in range(args.folds):
        held = [k for k in truth if k % args.folds == f]
        rest = [k for k in truth if k % args.folds != f]
        score("all", rest, held)
        for _ in range(args.repeats):
            pick = sorted(rng.choice(rest, round(args.fraction * len(rest)), replace=False))
            score("subset", [int(k) for k in pick], held)
        print(f"fold {f + 1}/{args.folds} ({time.perf_counter() - t0:.0f}s)", flush=True)

    cols = ["f_d", "accuracy", *[f"f_{c}" for c in CONSEP_CLASSES], "mean_f_c"]
    print(f"\n{args.model} nuclei, all 27 CoNSeP training tiles out-of-fold ({args.folds} "
          f"folds by tile), shipped class weights {weights.tolist()} for 'weighted'; "
          f"subset = {args.fraction} of the other folds' tiles, {args.repeats} draws "
          "(their counts pooled, each draw weighing the same)")
    print(f"{'training tiles':<26}{'tiles':>6}{'other':>7}  {'decision':<18}" +
          "".join(f"{c:>16}" for c in cols))
    for name, by in counts.items():
        t_mean = np.mean([s[0] for s in sizes[name]])
        o_mean = np.mean([s[1] for s in sizes[name]])
        for decision, total in by.items():
            s = pooled_type_scores([total])
            print(f"{name:<26}{t_mean:>6.1f}{o_mean:>7.0f}  {decision:<18}" +
                  "".join(f"{s[c]:>16.4f}" for c in cols))
    print(f"({time.perf_counter() - t0:.0f}s; 'other' = the training set's other nuclei, "
          "true and the model's paired ones)")


if __name__ == "__main__":
    main()
