"""Where each class's F_c is lost: classification errors against detection errors.

HoVer-Net's F_c = 2TP_c / (2TP_c + 2FP_c + 2FN_c + FP_d,c + FN_d,c). FP_c and FN_c are paired
nuclei given the wrong class, and FP_d,c and FN_d,c are unpaired ones of that class. This prints
the terms for a shipped model's nuclei and ``consep_types`` on the CoNSeP validation tiles, with
two bounds: F_c if every paired nucleus had its true class ("perfect classes"), and F_c without
the unpaired terms ("perfect detection"). The test tiles are never read.

    python benchmarks/type_errors.py [--model unet]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet")
    ap.add_argument("--data", default=None)
    args = ap.parse_args()

    from nucleoseg.classify.classifier import NucleusClassifier
    from nucleoseg.classify.recipe import CONSEP_CLASSES
    from nucleoseg.evaluation.classification import TypeCounts, type_counts
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.io.consep import list_tiles

    seg = Segmenter.load(args.model, precision="float32")
    clf = NucleusClassifier.load("consep_types")
    total = TypeCounts()
    for t in list_tiles("val", args.data):
        image, truth, types = t.image(), t.labels(), t.types()
        labels = run(seg.segment(image))
        ids, idx = clf.predict(image, labels)
        pred = {int(i): int(c) + 1 for i, c in zip(ids, idx, strict=True)}
        type_counts(truth, types, labels, pred, into=total)
    pt, pp = np.array(total.paired_true), np.array(total.paired_pred)
    ut, up = np.array(total.unpaired_true), np.array(total.unpaired_pred)
    print(f"{args.model} nuclei (min_size {seg.params.min_size}), consep_types, CoNSeP "
          "validation tiles")
    print(f"{'class':<14}{'F_c':>7}{'paired':>8}{'TP':>6}{'2FP':>6}{'2FN':>6}{'FP_d':>6}"
          f"{'FN_d':>6}{'perfect classes':>17}{'perfect detection':>19}")
    for c, name in enumerate(CONSEP_CLASSES, 1):
        tp = int(((pt == c) & (pp == c)).sum())
        fp = int(((pt != c) & (pp == c)).sum())
        fn = int(((pt == c) & (pp != c)).sum())
        fp_d, fn_d = int((up == c).sum()), int((ut == c).sum())
        paired = int((pt == c).sum())
        f_c = 2 * tp / max(2 * tp + 2 * fp + 2 * fn + fp_d + fn_d, 1)
        classes = 2 * paired / max(2 * paired + fp_d + fn_d, 1)
        detection = 2 * tp / max(2 * tp + 2 * fp + 2 * fn, 1)
        print(f"{name:<14}{f_c:>7.3f}{paired:>8}{tp:>6}{2 * fp:>6}{2 * fn:>6}{fp_d:>6}"
              f"{fn_d:>6}{classes:>17.3f}{detection:>19.3f}")


if __name__ == "__main__":
    main()
