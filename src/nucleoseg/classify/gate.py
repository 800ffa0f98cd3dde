"""The patch-net gate: the patch CNN runs only on the nuclei the forests are unsure of.

:attr:`~nucleoseg.classify.classifier.NucleusClassifier.patch_gate` is a margin (best minus
second best of the class-weighted forest probabilities) below which the CNN runs. No gate is
exact (a large class weight lets the CNN flip any nucleus), so it is chosen on validation
tiles: the smallest of :data:`PATCH_GATES` that keeps the ungated classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..evaluation.classification import TypeCounts
from .classifier import NucleusClassifier
from .forest import forest_margin
from .recipe import pooled_type_scores, rounded_scores

#: Patch-net gates tried on the validation tiles (:attr:`NucleusClassifier.patch_gate`),
#: smallest first: the first that keeps :data:`GATE_AGREEMENT` of the ungated classes and
#: loses at most :data:`GATE_F_C_LOSS` of mean F_c is chosen.
PATCH_GATES = (0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
GATE_AGREEMENT = 0.99
GATE_F_C_LOSS = 0.002


def mixed(clf: NucleusClassifier, proba: np.ndarray) -> np.ndarray:
    """The ungated mix of side-by-side probabilities (forests', patch net's: ``rule_inputs``
    with ``side_by_side``)."""
    n = len(clf.classes)
    return (1 - clf.patch_weight) * proba[:, :n] + clf.patch_weight * proba[:, n:]


def gated_classes(clf: NucleusClassifier, proba: np.ndarray, gate: float | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(class indices (N,), where the net ran (N,) bool)`` of ``clf`` (its patch weight and
    class weights) with this patch-net gate, from side-by-side probabilities (:func:`mixed`)."""
    n = len(clf.classes)
    weights = np.asarray(clf.class_weights if clf.class_weights is not None else [1.0] * n)
    forest = proba[:, :n]
    runs = np.ones(len(proba), bool) if gate is None else \
        forest_margin(clf._weighted(forest)) < gate
    chosen = np.where(runs[:, None], mixed(clf, proba), forest)
    return (chosen * weights).argmax(1), runs


def choose_patch_gate(clf: NucleusClassifier, inputs: list[tuple], validation: dict[str, Any],
                      on: str, log: Callable[[str], None] = print) -> None:
    """Set ``clf``'s patch-net gate: the smallest of :data:`PATCH_GATES` whose classes on
    ``inputs`` (``rule_inputs(..., side_by_side=True)`` of the validation tiles) agree with
    the ungated ones on :data:`GATE_AGREEMENT` of the nuclei and whose pooled mean F_c is at
    most :data:`GATE_F_C_LOSS` below; none when no gate qualifies or the context forest takes the
    net's probabilities. Records the trial in ``validation["patch_gate"]`` and the chosen
    setting's scores in ``validation[on]``."""
    clf.patch_gate = None
    if clf.patch_net is None or clf.context_with_patch_net or not clf.patch_weight:
        return
    base_classes = [gated_classes(clf, p, None)[0] for p, *_ in inputs]
    base = pooled_type_scores([TypeCounts().add(tc, tt, pc, c + 1) for c, (_, pc, tc, tt)
                               in zip(base_classes, inputs, strict=True)])
    total = max(sum(len(c) for c in base_classes), 1)
    trial, chosen = {}, None
    for g in PATCH_GATES:
        parts, agree, ran = [], 0, 0
        for c0, (p, pc, tc, tt) in zip(base_classes, inputs, strict=True):
            c, runs = gated_classes(clf, p, g)
            parts.append(TypeCounts().add(tc, tt, pc, c + 1))
            agree += int((c == c0).sum())
            ran += int(runs.sum())
        scores = pooled_type_scores(parts)
        trial[str(g)] = {"agreement": round(agree / total, 4), "net_share": round(ran / total, 4),
                         "mean_f_c": round(scores["mean_f_c"], 4)}
        log(f"patch-net gate {g}: {trial[str(g)]}")
        if chosen is None and agree / total >= GATE_AGREEMENT and \
                scores["mean_f_c"] >= base["mean_f_c"] - GATE_F_C_LOSS:
            chosen = g, scores
    record = {"chosen": None, "ungated": rounded_scores(base), "by_gate": trial,
              "rule": f"smallest gate with agreement >= {GATE_AGREEMENT} and mean F_c within "
                      f"{GATE_F_C_LOSS} of the ungated classifier's"}
    validation["patch_gate"] = record
    if chosen is None:
        log("no patch-net gate keeps the ungated classes; the net runs on every nucleus")
        return
    clf.patch_gate, scores = chosen
    record["chosen"] = clf.patch_gate
    validation[on] = rounded_scores({k: v for k, v in scores.items() if k != "mean_f_c"})
    log(f"chosen patch-net gate {clf.patch_gate}: the net runs on "
        f"{trial[str(clf.patch_gate)]['net_share']:.0%} of the nuclei; validation: "
        f"{validation[on]}")
