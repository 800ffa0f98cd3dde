"""Give a saved CoNSeP classifier the recipe's patch-net gate, keeping its other parts.

``nucleoseg train-classifier`` now chooses a gate (``recipe.choose_patch_gate``): the patch
net runs only on the nuclei the forests are unsure of. This runs that step on a classifier
trained before it existed: its validation tiles are segmented with the card's segmentation
model, the forests' and the patch net's probabilities computed once, and the smallest gate of
``recipe.PATCH_GATES`` that keeps the ungated classes (agreement and mean F_c) is written to
the card (atomically; the trial is kept under ``validation.patch_gate``). The test tiles are
never read.

    NUCLEOSEG_WRITE_SHIPPED=1 python scripts/classifier_gate.py consep_types [--model unet]
"""

import argparse

from nucleoseg.classify.classifier import NucleusClassifier, resolve_classifier_path
from nucleoseg.classify.recipe import choose_patch_gate, describe, gate_inputs
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
    seg = Segmenter.load(args.model, precision="float32")
    on = f"{args.model}_nuclei"
    validation = dict(clf.card.get("validation", {}))
    inputs = gate_inputs(clf, list_tiles("val", args.data), lambda im: run(seg.segment(im)))
    choose_patch_gate(clf, inputs, validation, on)
    if clf.patch_gate is None:
        raise SystemExit("no gate qualifies; the classifier is left as it was")
    if on in clf.card.get("validation", {}):
        validation[f"{on}_before_gate"] = clf.card["validation"][on]
    validation["patch_gate"]["nuclei"] = (
        f"the shipped {args.model} model's (weights sha256 {(seg.card.sha256 or '?')[:12]}), "
        "float32")
    clf.card["validation"] = validation
    clf.card["description"] = describe(clf)
    clf.save(path.parent, path.stem)  # shipped: needs NUCLEOSEG_WRITE_SHIPPED=1
    back = NucleusClassifier.load(path)
    print(f"wrote {path}: patch-net gate {back.patch_gate}; validation {validation[on]}")


if __name__ == "__main__":
    main()
