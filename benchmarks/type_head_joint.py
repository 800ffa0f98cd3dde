"""A nucleus-type head trained *with* the UNet: both issue-15 targets at once? (issue 15)

The frozen-feature head (``benchmarks/type_head_frozen.py``) lost to the shipped forest: the
UNet's features were trained to find nuclei, not to tell them apart. Here the same head (the
decoder's last three levels projected to 32 channels, two 3x3 convolutions, softmax over the
four CoNSeP classes) is added to the shipped UNet and the whole network is fine-tuned, the
segmentation loss on MoNuSeg + CoNSeP fit tiles and the type loss on the CoNSeP ones (each
nucleus weighted equally within its patch, classes by the inverse square root of their pixel
counts). Recipe as the session-26 control run: strong augmentation, 8 epochs x 100 steps x
batch 8, cosine from 2e-4, bfloat16. A nucleus's class is then the mean of the head's
probabilities over its pixels, one ``bincount`` per class: nearly free next to the
segmentation.

Scored on the validation tiles only: segmentation (Dice / AJI, both data sets) of the shipped
UNet and of the fine-tuned net with the card's post-processing, and HoVer-Net's type metrics
on CoNSeP for (a) the shipped UNet + ``consep_types``, (b) the fine-tuned net + its head,
(c) its nuclei + ``consep_types``, (d) their average.

Run: ``python benchmarks/type_head_joint.py --out /tmp/th`` (~30 min on 2 cores).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from hv_head import _ids_to_channels, base_unet, fine_tune, fine_tune_parser  # noqa: E402
from type_head_frozen import LEVELS, build_head  # noqa: E402

MIX = (0.0, 0.25, 0.5, 0.75, 1.0)


def type_weights(ys: np.ndarray) -> np.ndarray:
    """``(B, P, P, 5)`` targets (nucleus, interior, type, id low, id high) to (nucleus,
    interior, type, weight): weight = 100 / the nucleus's area within the patch."""
    out = np.empty((*ys.shape[:-1], 4), np.float32)
    out[..., :3] = ys[..., :3]
    ids = ys[..., 3].astype(np.int64) + 256 * ys[..., 4].astype(np.int64)
    for k in range(ys.shape[0]):
        _, inv = np.unique(ids[k], return_inverse=True)
        area = np.bincount(inv.ravel()).astype(np.float32)
        out[k, ..., 3] = np.where(ids[k] > 0, 100 / area[inv.reshape(ids[k].shape)], 0)
    return out


def joint_loss(class_weights: np.ndarray):
    import keras
    from keras import ops

    from nucleoseg.training.train import bce_dice_loss

    w = ops.convert_to_tensor(class_weights.astype("float32"))

    def loss(y_true, y_pred):
        seg = bce_dice_loss(y_true[..., :2], y_pred[..., :2])
        cls = ops.cast(y_true[..., 2], "int32")
        on = ops.cast(cls > 0, "float32") * y_true[..., 3]
        idx = ops.maximum(cls - 1, 0)
        ce = keras.losses.sparse_categorical_crossentropy(idx, ops.cast(y_pred[..., 2:], "float32"))
        return seg + ops.sum(ce * ops.take(w, idx) * on) / (ops.sum(on) + 1e-3)

    return loss


def build_joint(base):
    import keras
    from keras import layers

    head = build_head()
    types = head([base.get_layer(n).output for n in LEVELS])
    out = layers.Concatenate(name="outputs", dtype="float32")([base.output, types])
    return keras.Model(base.input, out, name="unet_types")


def main(argv: list[str] | None = None) -> int:
    ap = fine_tune_parser(__doc__, "/tmp/th")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)


    from nucleoseg.classify.classifier import NucleusClassifier
    from nucleoseg.classify.recipe import CONSEP_CLASSES
    from nucleoseg.evaluation.classification import TypeCounts, type_counts
    from nucleoseg.evaluation.metrics import Counts, counts
    from nucleoseg.inference.postprocess import probabilities_to_labels
    from nucleoseg.inference.predict import predict_whole
    from nucleoseg.io.consep import list_tiles, type_map
    from nucleoseg.models.weights import load_model
    from nucleoseg.training.data import STRONG_AUGMENTATION, PatchSampler, make_targets
    from nucleoseg.training.recipe import load_split

    base, card = base_unet(args)
    model = build_joint(base)
    weights = out / "unet_types.weights.h5"
    t0 = time.perf_counter()
    if not args.evaluate_only:
        _, mimages, mlabels = load_split("fit", args.data, ["monuseg"])
        ctiles = list_tiles("fit", args.data)
        images, targets, groups = [], [], []
        for image, lab, types in [(i, lb, None) for i, lb in zip(mimages, mlabels, strict=True)] \
                + [(t.image(), t.labels(), t.types()) for t in ctiles]:
            tmap = np.zeros(lab.shape, np.uint8) if types is None else type_map(lab, types)
            images.append(image)
            targets.append(np.concatenate([make_targets(lab), tmap[..., None],
                                           _ids_to_channels(lab)], -1))
            groups.append(0 if types is None else 1)
        pixels = np.bincount(np.concatenate([t[..., 2].ravel() for t in targets]),
                             minlength=5)[1:].astype(np.float64)
        cw = (pixels.sum() / pixels) ** 0.5
        cw = cw / (cw * pixels).sum() * pixels.sum()
        sampler = PatchSampler(images, targets, 256, True, 0,
                               augmentation=STRONG_AUGMENTATION, groups=groups)

        fine_tune(model, sampler, type_weights, joint_loss(cw), args, weights, t0)
        if args.train_only:
            return 0
    model.load_weights(weights)
    reference = load_model("unet")[0]  # the fine-tune trained base's layers in place

    shipped_clf = NucleusClassifier.load("consep_types")
    names = {k + 1: n for k, n in enumerate(CONSEP_CLASSES)}
    seg: dict[str, dict[str, Counts]] = {"shipped UNet": {}, "fine-tuned with type head": {}}
    typ = {"(a) shipped UNet + consep_types": TypeCounts(),
           **{f"fine-tuned, head weight {a}": TypeCounts() for a in MIX}}
    _, mimages, mlabels = load_split("val", args.data, ["monuseg"])
    val = [("monuseg", i, lb, None) for i, lb in zip(mimages, mlabels, strict=True)]
    val += [("consep", t.image(), t.labels(), t.types()) for t in list_tiles("val", args.data)]
    if args.val_limit:
        val = [v for v in val if v[0] == "monuseg"][:args.val_limit] + \
            [v for v in val if v[0] == "consep"][:args.val_limit]
    for ds, image, truth, types in val:
        shipped = probabilities_to_labels(predict_whole(reference, image), card.postprocess)
        pred = predict_whole(model, image)
        mine = probabilities_to_labels(pred[..., :2], card.postprocess)
        for key, lab in (("shipped UNet", shipped), ("fine-tuned with type head", mine)):
            seg[key][ds] = seg[key].get(ds, Counts()) + counts(lab, truth)
        if types is None:
            continue
        ids, forest = shipped_clf.predict_proba(image, shipped)
        type_counts(truth, types, shipped, {int(i): int(c) + 1 for i, c in
                                             zip(ids, forest.argmax(1), strict=True)},
                    into=typ["(a) shipped UNet + consep_types"])
        ids, forest = shipped_clf.predict_proba(image, mine)
        n = int(mine.max()) + 1
        sums = np.stack([np.bincount(mine.ravel(), pred[..., 2 + j].ravel(), n)
                         for j in range(4)], 1)[ids]
        head = sums / np.maximum(sums.sum(1, keepdims=True), 1e-6)
        for a in MIX:
            cls = (a * head + (1 - a) * forest).argmax(1) + 1
            type_counts(truth, types, mine, {int(i): int(c) for i, c in
                                              zip(ids, cls, strict=True)},
                        into=typ[f"fine-tuned, head weight {a}"])
        print(f"scored a {ds} tile ({time.perf_counter() - t0:.0f}s)", flush=True)

    seg_table = {k: {ds: {m: round(x, 4) for m, x in c.scores().items()} for ds, c in d.items()}
                 for k, d in seg.items()}
    type_table = {k: {m: round(float(x), 4) for m, x in c.scores(names).items()}
                  for k, c in typ.items()}
    (out / "scores.json").write_text(json.dumps({"segmentation": seg_table,
                                                 "types": type_table}, indent=1))
    print(f"\n# python benchmarks/type_head_joint.py  (validation tiles; {args.epochs}x"
          f"{args.steps} steps, batch {args.batch_size}, lr {args.lr}, {args.precision}; "
          f"{os.cpu_count()} cores)")
    print("| net | MoNuSeg Dice / AJI | CoNSeP Dice / AJI |\n|---|---|---|")
    for k, d in seg_table.items():
        print(f"| {k} | " + " | ".join(f"{d[ds]['dice']:.4f} / {d[ds]['aji']:.4f}"
                                       for ds in ("monuseg", "consep")) + " |")
    cols = ["f_d", "accuracy", *[f"f_{c}" for c in CONSEP_CLASSES]]
    print("\n| types | " + " | ".join(cols) + " | mean F_c |\n" + "|---" * (len(cols) + 2) + "|")
    for k, s in type_table.items():
        f_c = np.mean([s[f"f_{c}"] for c in CONSEP_CLASSES])
        print(f"| {k} | " + " | ".join(f"{s[c]:.4f}" for c in cols) + f" | {f_c:.4f} |")
    print("head weight 0 = consep_types on the fine-tuned net's nuclei (c); 1 = the head alone (b)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
