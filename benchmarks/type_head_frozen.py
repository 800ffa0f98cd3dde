"""Can a nucleus-type head on the frozen default UNet replace or help the shipped classifier?

A small head (1x1 projections of the decoder's last three levels to 32 channels, summed
while upsampling, two 3x3 convolutions, softmax over the four CoNSeP classes; ~6 % of the
UNet's FLOPs per pixel) is trained on the frozen UNet's features of the CoNSeP fit tiles,
each nucleus weighted equally (pixels weighted by 1 / its area, classes by the inverse square
root of their pixel counts). A nucleus's class is the mean of the head's probabilities over
its pixels. Scored on the CoNSeP *validation* tiles (HoVer-Net metrics, the UNet's own
nuclei), alone and averaged with the shipped ``consep_types`` classifier. The test tiles
are never read.

    python benchmarks/type_head_frozen.py [--steps 1500]

About 15 minutes on a 2-core CPU (features of 27 tiles, then the head).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

LEVELS = ("dec0_1_relu", "dec1_1_relu", "dec2_1_relu")
CROP = 256


def features(data: str | None):
    """Frozen UNet features, per-pixel types, inverse areas and the UNet's labels per tile."""
    import keras

    from nucleoseg.inference.postprocess import probabilities_to_labels, suppress_fill
    from nucleoseg.inference.predict import normalize
    from nucleoseg.io.consep import list_tiles, type_map
    from nucleoseg.models.weights import load_model

    unet, card = load_model("unet")
    net = keras.Model(unet.input, [unet.get_layer(n).output for n in LEVELS] + [unet.output])
    out = {}
    for split in ("fit", "val"):
        for t in list_tiles(split, data):
            image, labels = t.image(), t.labels()
            h, w = image.shape[:2]
            padded = np.pad(image, ((0, -h % 16), (0, -w % 16), (0, 0)), mode="reflect")
            *levels, probs = (o[0] for o in net.predict(normalize(padded)[None], verbose=0))
            probs = suppress_fill(probs[:h, :w].astype(np.float32), image)
            area = np.bincount(labels.ravel()).astype(np.float32)
            area[0] = 1
            out[t.name] = {"split": split, "levels": [v.astype(np.float16) for v in levels],
                           "types": type_map(labels, t.types()), "inv_area": 1 / area[labels],
                           "pred": probabilities_to_labels(probs, card.postprocess),
                           "tile": t}
    return out


def build_head(width: int = 32):
    import keras
    from keras import layers

    inputs = [keras.Input((None, None, c)) for c in (32, 64, 128)]
    x = layers.UpSampling2D(2, interpolation="bilinear")(layers.Conv2D(width, 1)(inputs[2]))
    x = layers.Activation("relu")(layers.Add()([x, layers.Conv2D(width, 1)(inputs[1])]))
    x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    x = layers.UpSampling2D(2, interpolation="bilinear")(x)
    x = layers.Activation("relu")(layers.Add()([x, layers.Conv2D(width, 1)(inputs[0])]))
    x = layers.SpatialDropout2D(0.1)(x)
    x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, layers.Conv2D(4, 1, activation="softmax", dtype="float32")(x))


def train_head(tiles: dict, steps: int, seed: int = 0):
    import keras
    from keras import ops

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    fit = [v for v in tiles.values() if v["split"] == "fit"]
    pixels = np.bincount(np.concatenate([v["types"].ravel() for v in fit]), minlength=5)[1:]
    weights = (pixels.sum() / pixels) ** 0.5
    weights = ops.convert_to_tensor((weights / (weights * pixels).sum() * pixels.sum())
                                    .astype("float32"))

    def loss(y, p):
        cls = ops.cast(y[..., 0], "int32")
        on = ops.cast(cls > 0, "float32") * y[..., 1]
        idx = ops.maximum(cls - 1, 0)
        ce = keras.losses.sparse_categorical_crossentropy(idx, p)
        return ops.sum(ce * ops.take(weights, idx) * on) / (ops.sum(on) + 1e-3)

    head = build_head()
    head.compile(optimizer=keras.optimizers.AdamW(
        keras.optimizers.schedules.CosineDecay(1e-3, steps), weight_decay=1e-4), loss=loss)
    for step in range(steps):
        xs, ys = [[], [], []], []
        for _ in range(8):
            v = fit[rng.integers(len(fit))]
            h, w = v["types"].shape
            r, c = (rng.integers(0, (s - CROP) // 4) * 4 for s in (h, w))
            for k, level in enumerate(v["levels"]):
                f = 2**k
                xs[k].append(level[r // f:(r + CROP) // f, c // f:(c + CROP) // f])
            ys.append(np.stack([v["types"][r:r + CROP, c:c + CROP],
                                100 * v["inv_area"][r:r + CROP, c:c + CROP]], -1))
        value = head.train_on_batch([np.stack(x).astype("float32") for x in xs],
                                    np.stack(ys).astype("float32"))
        if step % 250 == 0 or step == steps - 1:
            print(f"step {step} loss {float(value):.3f}", flush=True)
    return head


def score(tiles: dict, head) -> None:
    from nucleoseg.classify.classifier import NucleusClassifier
    from nucleoseg.classify.recipe import CONSEP_CLASSES
    from nucleoseg.evaluation.classification import TypeCounts, type_counts

    shipped = NucleusClassifier.load("consep_types")
    mix = (0.0, 0.25, 0.5, 0.75, 1.0)
    totals = {a: TypeCounts() for a in mix}
    for v in (v for v in tiles.values() if v["split"] == "val"):
        t = v["tile"]
        truth, types, pred = t.labels(), t.types(), v["pred"]
        probs = head.predict([lv[None].astype("float32") for lv in v["levels"]], verbose=0)[0]
        probs = probs[:pred.shape[0], :pred.shape[1]]
        n = int(pred.max()) + 1
        sums = np.stack([np.bincount(pred.ravel(), probs[..., j].ravel(), n)
                         for j in range(4)], 1)
        ids, forest = shipped.predict_proba(t.image(), pred)
        mine = sums[ids] / np.maximum(sums[ids].sum(1, keepdims=True), 1e-6)
        for a, total in totals.items():
            cls = (a * mine + (1 - a) * forest).argmax(1) + 1
            type_counts(truth, types, pred, {int(i): int(c) for i, c in
                                              zip(ids, cls, strict=True)},
                        into=total)
    names = {k + 1: n for k, n in enumerate(CONSEP_CLASSES)}
    print("head weight  accuracy  " + "  ".join(f"F_{n}" for n in CONSEP_CLASSES) + "  mean F_c")
    for a, total in totals.items():
        s = total.scores(names)
        f_c = [s[f"f_{n}"] for n in CONSEP_CLASSES]
        print(f"{a:11.2f}  {s['accuracy']:.4f}  " + "  ".join(f"{f:.4f}" for f in f_c)
              + f"  {np.mean(f_c):.4f}")
    print("head weight 0 = the shipped classifier alone; 1 = the head alone")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="CoNSeP folder (default $NUCLEOSEG_DATA/consep)")
    p.add_argument("--steps", type=int, default=1500)
    args = p.parse_args()
    t0 = time.perf_counter()
    tiles = features(args.data)
    print(f"features of {len(tiles)} tiles in {time.perf_counter() - t0:.0f}s", flush=True)
    head = train_head(tiles, args.steps)
    print(f"head trained in {time.perf_counter() - t0:.0f}s", flush=True)
    score(tiles, head)


if __name__ == "__main__":
    main()
