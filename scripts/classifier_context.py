"""Give a saved CoNSeP classifier the recipe's context forest, keeping its other parts.

``nucleoseg train-classifier`` now fits a context forest (stacking,
:mod:`nucleoseg.classify.stacking`) beside the first forest and keeps it when the validation
tiles say so, then re-chooses the class weights. This runs those steps on a classifier
trained before they existed, so its first forest and patch net (25 CPU epochs) stay as they
are: the context forest gets the first forest's settings from the card and is fitted on the
fit tiles (the card's segmentation model's nuclei too); the patch-net weight is chosen again
with it (``recipe.PATCH_WEIGHTS``), then the class weights (``recipe.choose_on_validation``,
as the recipe does). The classifier is written back (atomically, card included; the old
validation numbers kept under ``validation_before_context``). The test tiles are never read.

    NUCLEOSEG_WRITE_SHIPPED=1 python scripts/classifier_context.py consep_types [--model unet]
"""

import argparse

from nucleoseg.classify.classifier import NucleusClassifier, resolve_classifier_path
from nucleoseg.classify.recipe import CONSEP_CLASSES, choose_on_validation
from nucleoseg.classify.stacking import describe_tiles, fit_context_forest
from nucleoseg.inference.predict import run
from nucleoseg.inference.segment import Segmenter
from nucleoseg.io.consep import list_tiles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("classifier")
    ap.add_argument("--model", default="unet", help="the segmentation model of the recipe")
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    path = resolve_classifier_path(args.classifier)
    clf = NucleusClassifier.load(path)
    before = dict(clf.card.get("validation", {}))
    settings = clf.card["training"]
    trees, seed = int(settings["trees"]), int(settings["seed"])
    if settings.get("max_depth") != 16 or settings.get("min_samples_leaf") != 2:
        raise SystemExit("the context forest copies the recipe's first forest (depth 16, "
                         "leaves of 2); this classifier was trained otherwise")
    seg = Segmenter.load(args.model, precision="float32")

    def segment(im):
        return run(seg.segment(im))

    maps, _ = describe_tiles(list_tiles("fit", args.data), segment)
    context = fit_context_forest(maps, len(CONSEP_CLASSES), trees, seed)
    on = f"{args.model}_nuclei"
    validation = choose_on_validation(clf, context, list_tiles("val", args.data), segment, on,
                                      trees, seed)
    clf.card["validation"] = {**validation, "validation_before_context": before}
    clf.save(path.parent, path.stem)  # shipped: needs NUCLEOSEG_WRITE_SHIPPED=1
    back = NucleusClassifier.load(path)
    print(f"wrote {path}: context forest {'on' if back.context_forest else 'off'}, "
          f"class weights {back.class_weights}; validation {validation[on]}")


if __name__ == "__main__":
    main()
