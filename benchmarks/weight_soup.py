"""Weight interpolation between a shipped model and its fine-tune, on validation tiles.

A fine-tune that helps one data set can cost the other a little (the contact-loss runs of
issue 14 raised CoNSeP AJI and lowered MoNuSeg Dice). Interpolating the two sets of weights,
``(1 - a) * shipped + a * fine_tuned`` (weight-space ensembling, "WiSE-FT"), often keeps
most of the gain at a smaller cost. For each ``a`` this predicts the validation tiles of
MoNuSeg and CoNSeP, chooses post-processing as the recipe does (pooled Dice + AJI over all
validation tiles) and prints Dice, AJI, precision and recall per data set. The test tiles
are never read. ``--save A`` writes the interpolated model with its card (validation
numbers, both parents) for ``a = A``.

    python benchmarks/weight_soup.py FINE_TUNED.keras [--base unet] [--alphas 0,0.5,1]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATASETS = ("monuseg", "consep")


def interpolate(base: list[np.ndarray], tuned: list[np.ndarray], alpha: float) -> list:
    """``(1 - alpha) * base + alpha * tuned`` per weight array (integer arrays from base)."""
    out = []
    for b, t in zip(base, tuned, strict=True):
        if b.shape != t.shape:
            raise ValueError(f"weights differ in shape: {b.shape} vs {t.shape}")
        out.append(b if not np.issubdtype(b.dtype, np.floating)
                   else ((1 - alpha) * b + alpha * t).astype(b.dtype))
    return out


def evaluate(model, card, names, images, labels) -> tuple[dict, dict]:
    """Post-processing chosen on all validation tiles; scores per data set."""
    from nucleoseg.evaluation.metrics import Counts, counts
    from nucleoseg.inference.postprocess import probabilities_to_labels
    from nucleoseg.inference.predict import predict_tiled, run
    from nucleoseg.training.postprocess_choice import select_postprocess

    inf = card.inference
    probs = [run(predict_tiled(model, im, inf.tile, inf.halo, inf.stride, batch_size=2))
             for im in images]
    params, pooled, _ = select_postprocess(probs, labels)
    by = {}
    for ds in DATASETS:
        total = Counts()
        for n, p, lab in zip(names, probs, labels, strict=True):
            if n.startswith(ds + "/"):
                total = total + counts(probabilities_to_labels(p, params), lab)
        by[ds] = {k: round(v, 4) for k, v in total.scores().items()}
    return params.to_dict(), {"pooled": {k: round(v, 4) for k, v in pooled.items()}, **by}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tuned", help="the fine-tuned .keras file (card beside it)")
    parser.add_argument("--base", default="unet", help="shipped model name or .keras path")
    parser.add_argument("--alphas", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--data", default=None)
    parser.add_argument("--save", type=float, default=None, metavar="A",
                        help="save the model interpolated at A (with a card) to --out")
    parser.add_argument("--out", default="weight_soup_out")
    args = parser.parse_args(argv)

    from nucleoseg.models.weights import load_model
    from nucleoseg.training.recipe import load_split

    base_model, base_card = load_model(args.base)
    tuned_model, _ = load_model(args.tuned)
    base_w, tuned_w = base_model.get_weights(), tuned_model.get_weights()
    names, images, labels = load_split("val", args.data, DATASETS)
    alphas = [float(a) for a in args.alphas.split(",")]
    if args.save is not None and args.save not in alphas:
        alphas.append(args.save)
    print(f"base {args.base}, fine-tuned {args.tuned}; {len(names)} validation tiles")
    print("| a | MoNuSeg Dice | MoNuSeg AJI | MoNuSeg P / R | CoNSeP Dice | CoNSeP AJI "
          "| CoNSeP P / R | post-processing | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    results = {}
    for a in alphas:
        t0 = time.perf_counter()
        base_model.set_weights(interpolate(base_w, tuned_w, a))
        params, scores = evaluate(base_model, base_card, names, images, labels)
        results[a] = (params, scores)
        m, c = scores["monuseg"], scores["consep"]
        print(f"| {a:g} | {m['dice']:.4f} | {m['aji']:.4f} | {m['precision']:.3f} / "
              f"{m['recall']:.3f} | {c['dice']:.4f} | {c['aji']:.4f} | {c['precision']:.3f} / "
              f"{c['recall']:.3f} | t {params['threshold']} it {params['interior_threshold']} "
              f"min {params['min_size']} | {time.perf_counter() - t0:.0f} |", flush=True)
    if args.save is not None:
        save_interpolated(base_model, base_card, base_w, tuned_w, args, results[args.save])
    return 0


def save_interpolated(model, base_card, base_w, tuned_w, args, result) -> None:
    """Write the model at ``a = args.save`` with a card naming both parents."""
    import json
    from pathlib import Path

    from nucleoseg.models.weights import save_model

    params, scores = result
    model.set_weights(interpolate(base_w, tuned_w, args.save))
    tuned_card = json.loads(Path(args.tuned).with_suffix(".json").read_text())
    card = dict(tuned_card)
    card["postprocess"] = params
    card["validation"] = scores["pooled"]
    card["validation_by_dataset"] = {ds: scores[ds] for ds in DATASETS}
    card.pop("postprocess_search", None)
    card["training"] = {
        **tuned_card["training"],
        "weight_interpolation": {
            "formula": "(1 - a) * base + a * fine_tuned, every float weight",
            "a": args.save, "base": str(args.base), "base_sha256": base_card.sha256,
            "fine_tuned": Path(args.tuned).name,
            "chosen_by": "benchmarks/weight_soup.py on the validation tiles "
                         "(Dice and AJI of both data sets)",
        },
    }
    card.pop("sha256", None)
    path = save_model(model, Path(args.out), base_card.name, card)
    print(f"saved {path}")


if __name__ == "__main__":
    raise SystemExit(main())
