"""Give a saved CoNSeP classifier the recipe's later steps, keeping its forest and patch net.

``nucleoseg train-classifier`` now fits a context forest (stacking,
:mod:`nucleoseg.classify.stacking`) beside the first forest and keeps it when the validation
tiles say so, then re-chooses the class weights and the patch-net gate
(:mod:`nucleoseg.classify.gate`). This runs those steps on a classifier trained before they
existed, so its first forest and patch net (25 CPU epochs) stay as they are: the context
forest gets the first forest's settings from the card and is fitted on the fit tiles (the
card's segmentation model's nuclei too); the patch-net weight is chosen again with it
(``recipe.PATCH_WEIGHTS``), then the class weights and the gate (``recipe.choose_on_validation``,
as the recipe does). With ``--gate-only``, only the gate is chosen (the smallest of
``gate.PATCH_GATES`` that keeps the ungated classes). The classifier is written back
(atomically, card included; the old validation record is kept beside the new one). The test
tiles are never read.

    NUCLEOSEG_WRITE_SHIPPED=1 python scripts/classifier_context.py consep_types [--model unet]
        [--gate-only]
"""

import argparse

from nucleoseg.classify.classifier import NucleusClassifier, resolve_classifier_path
from nucleoseg.classify.gate import choose_patch_gate
from nucleoseg.classify.recipe import (
    CONSEP_CLASSES,
    choose_on_validation,
    describe,
    rule_inputs,
)
from nucleoseg.classify.stacking import describe_tiles, fit_context_forest
from nucleoseg.inference.predict import run
from nucleoseg.inference.segment import Segmenter
from nucleoseg.io.consep import list_tiles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("classifier")
    ap.add_argument("--model", default="unet", help="the segmentation model of the recipe")
    ap.add_argument("--data", default=None)
    ap.add_argument("--gate-only", action="store_true", help="choose only the patch-net gate")
    args = ap.parse_args()
    path = resolve_classifier_path(args.classifier)
    clf = NucleusClassifier.load(path)
    before = dict(clf.card.get("validation", {}))
    seg = Segmenter.load(args.model, precision="float32")

    def segment(im):
        return run(seg.segment(im))

    on = f"{args.model}_nuclei"
    val_tiles = list_tiles("val", args.data)
    if args.gate_only:
        validation = dict(before)
        inputs = rule_inputs(clf, val_tiles, segment, side_by_side=True)
        choose_patch_gate(clf, inputs, validation, on)
        if clf.patch_gate is None:
            raise SystemExit("no gate qualifies; the classifier is left as it was")
        if on in before:
            validation[f"{on}_before_gate"] = before[on]
        validation["patch_gate"]["nuclei"] = (
            f"the shipped {args.model} model's (weights sha256 "
            f"{(seg.card.sha256 or '?')[:12]}), float32")
        clf.card["description"] = describe(clf)
    else:
        settings = clf.card["training"]
        trees, seed = int(settings["trees"]), int(settings["seed"])
        if settings.get("max_depth") != 16 or settings.get("min_samples_leaf") != 2:
            raise SystemExit("the context forest copies the recipe's first forest (depth 16, "
                             "leaves of 2); this classifier was trained otherwise")
        maps, _ = describe_tiles(list_tiles("fit", args.data), segment)
        context = fit_context_forest(maps, len(CONSEP_CLASSES), trees, seed)
        validation = {**choose_on_validation(clf, context, val_tiles, segment, on, trees, seed),
                      "validation_before_context": before}
    clf.card["validation"] = validation
    clf.save(path.parent, path.stem)  # shipped: needs NUCLEOSEG_WRITE_SHIPPED=1
    back = NucleusClassifier.load(path)
    print(f"wrote {path}: context forest {'on' if back.context_forest else 'off'}, "
          f"class weights {back.class_weights}, patch-net gate {back.patch_gate}; "
          f"validation {validation[on]}")


if __name__ == "__main__":
    main()
