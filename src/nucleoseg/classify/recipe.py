"""The shipped CoNSeP type classifier: trained on the CoNSeP fit tiles' true nuclei and on a
segmentation model's nuclei paired to them (centroid <= 12 px, the true type), so it knows
both the annotators' outlines and the ones it will be given; chosen and reported on the
validation tiles (true nuclei, and the model's nuclei paired as the metric does). Adding the
model's nuclei raised validation accuracy on them from 0.727 to 0.742 and F_inflammatory from
0.339 to 0.386 (unet_lite's nuclei added, shipped MoNuSeg-only UNet evaluated). A context
forest (:mod:`~nucleoseg.classify.stacking`) is fitted on the fit tiles beside the first one;
whether it runs and the patch net's weight are chosen on the validation nuclei, then the class
weights on the probabilities (:data:`CLASS_WEIGHT_GRID`). The test tiles are never read here.
"""

from __future__ import annotations

import itertools
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.classification import TypeCounts, type_counts
from ..io.consep import CLASS_NAMES, list_tiles
from .classifier import NucleusClassifier
from .context import NEIGHBOUR_SIGMAS
from .forest import Forest
from .stacking import describe_tiles, fit_context_forest, training_set

#: CoNSeP class names (type numbers 1..4) and their colours.
CONSEP_CLASSES = list(CLASS_NAMES[1:])
CONSEP_COLORS = ["#ffd400", "#00c8ff", "#ff3030", "#30ff60"]
#: Class weights tried on the validation tiles (:attr:`NucleusClassifier.class_weights`) for
#: the classes the trees under-predict; the others stay 1. "other" is 1.6 % of the training
#: nuclei. Weighting inflammatory too overfitted the five validation tiles
#: (``benchmarks/type_priors.py``).
CLASS_WEIGHT_GRID = {"other": (1, 2, 4, 8, 16, 32), "spindle": (0.5, 0.75, 1, 1.5, 2, 3, 4)}
#: Weights of the patch net against the forests tried on the validation tiles.
PATCH_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: What the card says of how the context forest was trained.
CONTEXT_TRAINING = {"folds": 5, "training": "the first forest's settings; out-of-fold "
                    "probabilities from 5 folds of the fit tiles (tile k in fold k % 5)"}


def evaluate_classifier(clf: NucleusClassifier, tiles, segment: Callable | None = None,
                        weights: tuple[float, ...] | None = None) -> Any:
    """HoVer-Net metrics of ``clf`` on ``tiles``: on their true nuclei, or on the nuclei of
    ``segment(image) -> labels`` when given. With ``weights``, ``{weight: metrics}`` for
    each patch-net weight (one pass over the tiles)."""
    totals = {w: TypeCounts() for w in (weights or (clf.patch_weight,))}
    for t in tiles:
        image, truth, types = t.image(), t.labels(), t.types()
        labels = truth if segment is None else segment(image)
        for w, total in totals.items():
            clf.patch_weight = w
            ids, proba = clf.predict_proba(image, labels)
            pred_types = {int(i): int(c) + 1 for i, c in zip(ids, proba.argmax(1), strict=True)}
            type_counts(truth, types, labels, pred_types, into=total)
    names = {k + 1: n for k, n in enumerate(CONSEP_CLASSES)}
    scores = {w: rounded_scores(total.scores(names)) for w, total in totals.items()}
    return scores if weights else next(iter(scores.values()))


def class_weight_candidates(classes: list[str], grid: dict[str, tuple] = CLASS_WEIGHT_GRID
                            ) -> list[np.ndarray]:
    """Every combination of :data:`CLASS_WEIGHT_GRID` weights, one per class (1 elsewhere)."""
    axes = [grid.get(c, (1.0,)) for c in classes]
    return [np.array(w, float) for w in itertools.product(*axes)]


def rule_inputs(clf: NucleusClassifier, tiles, segment: Callable | None = None,
                side_by_side: bool = False) -> list[tuple]:
    """Per tile, what a decision rule sees and is scored against: ``(probabilities, predicted
    centres, true centres, true types)`` of ``clf`` with its own rules off, on the true nuclei
    of ``tiles`` or on those of ``segment(image) -> labels`` (each tile segmented once). With
    ``side_by_side``, the probabilities are ``(N, 2C)``: the forests' and the patch net's,
    ungated (:mod:`~nucleoseg.classify.gate`)."""
    from ..evaluation.classification import centroids

    saved = clf.class_weights, clf.patch_weight, clf.patch_gate
    clf.class_weights = None
    if side_by_side:
        clf.patch_gate = None
    try:
        out = []
        for t in tiles:
            image, truth, types = t.image(), t.labels(), t.types()
            labels = truth if segment is None else segment(image)
            parts = []
            for w in ((0.0, 1.0) if side_by_side else (clf.patch_weight,)):
                clf.patch_weight = w
                parts.append(clf.predict_proba(image, labels)[1])
            tid, tc = centroids(truth)
            _, pc = centroids(labels)  # the same ids, in the same order, as predict_proba's
            out.append((np.hstack(parts), pc, tc,
                        np.array([types.get(int(i), 0) for i in tid], int)))
        return out
    finally:
        clf.class_weights, clf.patch_weight, clf.patch_gate = saved


def counts_by_rule(inputs: list[tuple], rules: list[Callable]) -> list[list[TypeCounts]]:
    """``[tile][rule]`` HoVer-Net counts; ``rule(probabilities, centres) -> class indices``,
    ``inputs`` from :func:`rule_inputs`."""
    return [[TypeCounts().add(tc, tt, pc, rule(proba, pc) + 1) for rule in rules]
            for proba, pc, tc, tt in inputs]


def class_weight_rule(weights: np.ndarray) -> Callable:
    """The decision of a classifier with these class weights."""
    def rule(proba: np.ndarray, centres: np.ndarray) -> np.ndarray:
        return (proba * weights).argmax(1)
    return rule


def counts_by_class_weights(clf: NucleusClassifier, tiles, candidates: list[np.ndarray],
                            segment: Callable | None = None) -> list[list[TypeCounts]]:
    """``[tile][candidate]`` HoVer-Net counts of ``clf`` with each candidate as its class
    weights (see :func:`rule_inputs`)."""
    return counts_by_rule(rule_inputs(clf, tiles, segment),
                          [class_weight_rule(w) for w in candidates])


def pooled_type_scores(parts: list[TypeCounts]) -> dict[str, Any]:
    """HoVer-Net scores of the pooled ``parts`` (CoNSeP classes) with their ``mean_f_c``."""
    total = sum(parts, TypeCounts())
    scores = total.scores({k + 1: n for k, n in enumerate(CONSEP_CLASSES)})
    return {**scores, "mean_f_c": _mean_f_c(scores)}


def best_rule(counts: list[list[TypeCounts]], tiles: list[int]) -> int:
    """The rule index with the best pooled mean F_c over the given tile indices (the first
    of equals)."""
    return max(range(len(counts[0])),
               key=lambda c: pooled_type_scores([counts[k][c] for k in tiles])["mean_f_c"])


def choose_stages(clf: NucleusClassifier, context: Forest | None, tiles,
                  segment: Callable | None, weights: tuple[float, ...], on: str,
                  log: Callable[[str], None] = print, context_net: Forest | None = None
                  ) -> dict[str, Any]:
    """Set ``clf``'s patch-net weight (from ``weights``) and which context forest runs:
    none, ``context``, or ``context_net`` (one that also takes the patch net's
    probabilities): the best pooled mean F_c on ``tiles`` (the validation tiles). Returns
    the validation record (the chosen setting's scores under ``on``)."""
    stages = {"off": (None, False)}
    if context is not None:
        stages["on"] = (context, False)
    if context_net is not None and clf.patch_net is not None:
        stages["with patch net"] = (context_net, True)

    def use(name: str) -> None:
        forest, with_net = stages[name]
        clf.context_forest, clf.context_with_patch_net = forest, with_net
        clf.context_sigmas = NEIGHBOUR_SIGMAS if forest is not None else ()

    by: dict[tuple[str, float], dict[str, Any]] = {}
    for name in stages:
        use(name)
        for w, scores in evaluate_classifier(clf, tiles, segment, weights=weights).items():
            by[(name, w)] = scores
            log(f"validation, {on}, context forest {name}, patch-net weight {w}: {scores}")
    name, w = max(by, key=lambda k: _mean_f_c(by[k]))
    use(name)
    clf.patch_weight = w
    if w == 0.0 and not clf.context_with_patch_net:
        clf.patch_net = None
    record = {on: by[(name, w)],
              "by_patch_weight": {str(k[1]): v for k, v in by.items() if k[0] == name}}
    if context is not None:
        record["context_forest"] = {"used": name != "off", "without": by[("off", w)],
                                    "with": by[(name if name != "off" else "on", w)]}
        if "with patch net" in stages:
            record["context_forest"]["with_patch_net"] = by[("with patch net", w)]
            record["context_forest"]["patch_net_inputs"] = name == "with patch net"
    log(f"chosen: context forest {name}, patch-net weight {w}; validation: {record[on]}")
    return record


def choose_on_validation(clf: NucleusClassifier, context: Forest | None, tiles,
                         segment: Callable | None, on: str, trees: int, seed: int,
                         log: Callable[[str], None] = print,
                         context_net: Forest | None = None) -> dict[str, Any]:
    """The recipe's choices on the validation ``tiles``, in order: whether the ``context``
    forest runs with the patch-net weight (:func:`choose_stages`), then the class weights
    (:func:`choose_rules`). Sets them on ``clf`` with its card's description and context
    forest entry; returns the validation record (true nuclei too when ``on`` is a model's)."""
    weights = PATCH_WEIGHTS if clf.patch_net is not None else (0.0,)
    clf.class_weights = None
    validation = choose_stages(clf, context, tiles, segment, weights, on, log, context_net)
    if clf.patch_net is None or clf.context_with_patch_net:
        choose_rules(clf, rule_inputs(clf, tiles, segment), validation, on, log)
    else:  # the rule inputs are the gate's mixed probabilities: one pass over the tiles
        from .gate import choose_patch_gate, mixed

        inputs = rule_inputs(clf, tiles, segment, side_by_side=True)
        choose_rules(clf, [(mixed(clf, p), *rest) for p, *rest in inputs], validation, on, log)
        choose_patch_gate(clf, inputs, validation, on, log)
    if segment is not None:
        validation["true_nuclei"] = evaluate_classifier(clf, tiles)
    clf.card.pop("context_forest", None)
    if clf.context_forest is not None:
        clf.card["context_forest"] = CONTEXT_TRAINING | {"trees": trees, "seed": seed}
        if clf.context_with_patch_net:
            clf.card["context_forest"]["patch_net_training"] = (
                "out-of-fold probabilities of patch nets trained like the shipped one on the "
                "other folds (the same folds)")
    clf.card["description"] = describe(clf)
    return validation


def choose_rules(clf: NucleusClassifier, inputs: list[tuple], validation: dict[str, Any],
                 on: str, log: Callable[[str], None] = print) -> None:
    """Set ``clf``'s class weights: the :data:`CLASS_WEIGHT_GRID` candidate with the best
    pooled mean F_c on ``inputs`` (:func:`rule_inputs` of the validation tiles); record them
    and their scores in ``validation`` (``validation[on]``)."""
    names = {k + 1: n for k, n in enumerate(CONSEP_CLASSES)}
    candidates = class_weight_candidates(CONSEP_CLASSES)
    counts = counts_by_rule(inputs, [class_weight_rule(w) for w in candidates])
    best = best_rule(counts, list(range(len(inputs))))
    chosen = candidates[best]
    if not (chosen == 1).all():
        clf.class_weights = chosen.tolist()
        validation["class_weights"] = {"chosen": clf.class_weights,
                                       "grid": {c: list(v) for c, v in CLASS_WEIGHT_GRID.items()}}
    # the chosen candidate's counts are its validation scores: no second pass over the tiles
    validation[on] = rounded_scores(sum((c[best] for c in counts), TypeCounts()).scores(names))
    log(f"class weights {clf.class_weights}; validation: {validation[on]}")


def describe(clf: NucleusClassifier) -> str:
    """The card's one-line description of a CoNSeP classifier."""
    parts = ["a random forest over per-nucleus shape, colour and context features"]
    if clf.patch_net is not None:
        parts.append("a two-scale patch CNN (the 48 px patch and the 96 px window around it "
                     "at half resolution)" if clf.patch_context else "a patch CNN (48 px)")
    if clf.context_forest is not None:
        parts.append("a second forest classifies again from the features, " +
                     ("both" if clf.context_with_patch_net else "the first forest's") +
                     " probabilities and the neighbours'")
    if clf.patch_net is not None and clf.patch_weight:
        parts.append(f"the CNN's probabilities averaged in (weight {clf.patch_weight})" +
                     (f" where the forests' class-weighted margin is below {clf.patch_gate}"
                      if clf.patch_gate is not None else ""))
    if clf.class_weights is not None:
        parts.append(f"class probabilities weighted {clf.class_weights}")
    return ("CoNSeP nucleus types (other, inflammatory, epithelial, spindle): " +
            "; ".join(parts) + " (stages and weights chosen on the validation tiles)")


def _mean_f_c(scores: dict[str, Any]) -> float:
    """Mean F_c over the classes present (a class neither true nor predicted has no F_c)."""
    f = [scores[f"f_{c}"] for c in CONSEP_CLASSES]
    return float(np.nanmean(f)) if not np.isnan(f).all() else 0.0


def rounded_scores(scores: dict[str, Any]) -> dict[str, Any]:
    """``scores`` with floats rounded to 4 places (the cards' form)."""
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in scores.items()}


def train_consep_classifier(
    out_dir: str | Path,
    name: str = "consep_types",
    data: str | Path | None = None,
    segmentation_model: str | None = "unet",
    trees: int = 100,
    seed: int = 0,
    patch_epochs: int = 25,
    patch_context: bool = True,
    patch_folds: int = 0,
    log: Callable[[str], None] = print,
) -> Path:
    """Train, validate and save the CoNSeP four-class classifier; returns its ``.npz`` path.

    ``segmentation_model``'s nuclei join the training nuclei and are scored on validation.
    With ``patch_epochs`` > 0 a patch net (:mod:`~nucleoseg.classify.patch_net`) is trained
    on the same nuclei and its weight against the forest is chosen on the validation tiles
    (best mean per-class F_c on the model's nuclei; 0 keeps the forest alone); a two-scale
    one (the nucleus's 96 px surroundings too) with ``patch_context``. With ``patch_folds``
    > 1, as many more nets give out-of-fold probabilities for a context forest that takes
    the net's probabilities too (kept only when the validation tiles say so). Off by
    default: five fold nets cost about 4x the training time and scored below the plain
    context forest on the validation tiles once class weights were chosen
    (``benchmarks/results/patch_stack_val_cpu.txt``).
    """
    from ..inference.predict import run
    from ..inference.segment import Segmenter

    t0 = time.perf_counter()
    fit, val = list_tiles("fit", data), list_tiles("val", data)
    seg = Segmenter.load(segmentation_model, precision="float32") if segmentation_model \
        else None
    segment = (lambda im: run(seg.segment(im))) if seg is not None else None
    maps, patch_list = describe_tiles(fit, segment, patches=patch_epochs > 0,
                                      context=patch_context)
    x, y = training_set(maps)
    log(f"features of {len(y)} nuclei from {len(fit)} fit tiles ({time.perf_counter() - t0:.0f}s)")
    t1 = time.perf_counter()
    clf = NucleusClassifier.fit(x, y, CONSEP_CLASSES, CONSEP_COLORS, trees=trees, seed=seed,
                                class_weight=None)
    context = fit_context_forest(maps, len(CONSEP_CLASSES), trees, seed, log=log)
    fit_s = time.perf_counter() - t1
    patch_s, context_net = 0.0, None
    if patch_epochs > 0:
        from .patch_net import train_patch_net
        from .stacking import oof_patch_proba

        def train(p: np.ndarray, t: np.ndarray) -> Any:
            return train_patch_net(p, t, len(CONSEP_CLASSES), epochs=patch_epochs, seed=seed,
                                   log=log)

        t1 = time.perf_counter()
        clf.patch_net = train(np.concatenate([p[m.rows] for p, m in
                                              zip(patch_list, maps, strict=True)]), y)
        clf.patch_context = patch_context
        if patch_folds > 1:
            oof = oof_patch_proba(maps, patch_list, len(CONSEP_CLASSES), train, patch_folds,
                                  log)
            context_net = fit_context_forest(maps, len(CONSEP_CLASSES), trees, seed,
                                             patch_folds, log=log, patch_proba=oof)
        patch_s = time.perf_counter() - t1
    on = f"{segmentation_model}_nuclei" if segment is not None else "true_nuclei"
    validation = choose_on_validation(clf, context, val, segment, on, trees, seed, log,
                                      context_net)
    clf.card.update({
        "training": {**clf.card.get("training", {}),
                     "data": "CoNSeP training set, fit tiles: true nuclei and types, and "
                             f"the {segmentation_model} model's nuclei paired to them "
                             "(centroid <= 12 px) with the true type",
                     "fit_tiles": [t.name for t in fit],
                     "validation_tiles": [t.name for t in val],
                     "hardware": f"{platform.processor() or platform.machine()} CPU",
                     "seconds_fit": round(fit_s, 1),
                     "seconds_patch_net": round(patch_s, 1), "patch_epochs": patch_epochs,
                     "patch_context": patch_context,
                     "patch_folds": patch_folds if patch_epochs > 0 else 0},
        "validation": validation,
        "metrics": "HoVer-Net: centroid pairing <= 12 px, F_d, per-class F_c, accuracy",
        "license": "Derived from CoNSeP (Apache 2.0)",
    })
    path = clf.save(out_dir, name)
    log(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.0f}s")
    return path
