"""Does an output that encodes the separation split touching nuclei? (issue 14)

HoVer-Net (Graham et al. 2019) regresses, for every nucleus pixel, its horizontal and
vertical distance to the nucleus's centroid, each normalised to [-1, 1] within the nucleus.
Where two nuclei touch the maps jump from +1 to -1, so their gradient marks the contact even
where the nucleus probability leaves no gap. This experiment adds that two-channel *HV* head
to the shipped UNet (a 3x3 convolution block on the decoder's last features and a linear
1x1 convolution; the nucleus and interior channels stay) and fine-tunes the whole network
with the recipe of the session-26 control run (MoNuSeg + CoNSeP fit tiles, strong
augmentation, 8 epochs x 100 steps x batch 8, cosine from 2e-4, bfloat16), with HoVer-Net's
loss added for the new channels (MSE + MSE of their Sobel gradients on nucleus pixels).

The validation tiles (never the test tiles) then compare:
- the shipped UNet with its card's post-processing;
- the fine-tuned net's own nucleus/interior channels with the same post-processing (what
  the fine-tune alone does: the session-26 control);
- HoVer-Net's post-processing on the fine-tuned net's nucleus channel and HV maps
  (markers = nucleus minus the pixels whose HV gradient exceeds ``edge``);
- the shipped markers (interior >= its threshold) minus the HV edge pixels, flooded as the
  product floods (the HV maps only cut markers apart).

Run: ``python benchmarks/hv_head.py --out /tmp/hv`` (CPU: ~40 min of training on 2 cores);
``--evaluate-only`` re-scores a saved ``/tmp/hv/hv_unet.weights.h5``. What the 8 CPU epochs
did not settle, a GPU run from random weights with a longer training can
(``scripts/gpu_session.sh``: ``--scratch --train-only --time-budget S``, then
``--evaluate-only`` here; ``--hv-weight 0`` is its control). The thresholds of the card's
post-processing, used for the nucleus/interior row, were chosen for the shipped weights.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

EDGES = (0.3, 0.4, 0.5, 0.6)
SOBEL_SIGMA = 2.24  # the smoothing of OpenCV's 21-tap Sobel that HoVer-Net uses (binomial)


def hv_targets(ids: np.ndarray) -> np.ndarray:
    """``(H, W, 2) float32``: each nucleus pixel's horizontal and vertical offset from its
    nucleus's centroid, negative and positive sides each scaled to reach +-1 (HoVer-Net's
    targets); 0 on the background."""
    out = np.zeros((*ids.shape, 2), np.float32)
    fg = ids > 0
    if not fg.any():
        return out
    _, inv = np.unique(ids[fg], return_inverse=True)
    rows, cols = np.nonzero(fg)
    n = int(inv.max()) + 1
    area = np.bincount(inv, minlength=n).astype(np.float64)
    for k, coord in enumerate((cols, rows)):  # channel 0: horizontal (x), 1: vertical (y)
        d = coord - np.bincount(inv, coord, n)[inv] / area[inv]
        low = np.zeros(n)
        high = np.zeros(n)
        np.minimum.at(low, inv, d)
        np.maximum.at(high, inv, d)
        scale = np.where(d < 0, -low[inv], high[inv])
        out[rows, cols, k] = np.where(scale > 0, d / np.maximum(scale, 1e-9), 0)
    return out


def _ids_to_channels(labels: np.ndarray) -> np.ndarray:
    """Instance ids as two uint8 channels (low, high byte): they survive the sampler's
    nearest-neighbour zoom and dihedral moves, and the HV targets are computed after."""
    lab = np.asarray(labels).astype(np.int64)
    if lab.max() >= 2**16:
        _, lab = np.unique(lab, return_inverse=True)
        lab = lab.reshape(labels.shape)
    return np.stack([lab & 255, lab >> 8], -1).astype(np.uint8)


def with_hv(y: np.ndarray) -> np.ndarray:
    """``(B, P, P, 4)`` targets (nucleus, interior, id low, id high) to (nucleus, interior,
    h, v)."""
    ids = y[..., 2].astype(np.int64) + 256 * y[..., 3].astype(np.int64)
    out = y.copy()
    for k in range(y.shape[0]):
        out[k, ..., 2:] = hv_targets(ids[k])
    return out


def sobel_kernel() -> np.ndarray:
    """HoVer-Net's 5x5 gradient kernels, ``(5, 5, 2, 1)``: d/dx for h, d/dy for v."""
    r = np.arange(-2, 3, dtype=np.float32)
    v, h = np.meshgrid(r, r, indexing="ij")
    kx = h / (h * h + v * v + 1e-15)
    ky = v / (h * h + v * v + 1e-15)
    return np.stack([kx, ky], -1)[..., None].astype(np.float32)


def hv_loss_fn(weight: float = 1.0):
    """The card's loss on (nucleus, interior) plus ``weight`` x HoVer-Net's on the HV maps
    (``weight`` 0: a control trained without them)."""
    from keras import ops

    from nucleoseg.training.train import bce_dice_loss

    kernel = ops.convert_to_tensor(sobel_kernel())

    def loss(y_true, y_pred):
        seg = bce_dice_loss(y_true[..., :2], y_pred[..., :2])
        t, p = y_true[..., 2:], ops.cast(y_pred[..., 2:], "float32")
        mse = ops.mean(ops.square(p - t))
        gt = ops.depthwise_conv(t, kernel, padding="same")
        gp = ops.depthwise_conv(p, kernel, padding="same")
        fg = y_true[..., :1]
        msge = ops.sum(fg * ops.square(gp - gt)) / (2 * ops.sum(fg) + 1e-8)
        return seg + weight * (mse + msge)

    return loss


def build_hv(base):
    """The shipped network plus an HV head on the features its output head reads."""
    import keras
    from keras import layers

    head = base.get_layer("head_probs")
    features = head.input
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="hv_conv")(features)
    x = layers.BatchNormalization(name="hv_bn")(x)
    x = layers.Activation("relu", name="hv_relu")(x)
    hv = layers.Conv2D(2, 1, name="hv_maps")(x)
    out = layers.Concatenate(name="outputs", dtype="float32")([base.output, hv])
    return keras.Model(base.input, out, name="hv_unet")


def unit(a: np.ndarray) -> np.ndarray:
    """Min-max scaling to [0, 1] (OpenCV's ``NORM_MINMAX``, as HoVer-Net uses it)."""
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def hv_contact(hv: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """HoVer-Net's contact energy in [0, 1]: where the HV maps fall steeply (nucleus
    outlines and the lines where nuclei touch), 0 off the nucleus mask ``fg``."""
    from scipy import ndimage as ndi

    sh = 1 - unit(ndi.gaussian_filter(unit(hv[..., 0]), SOBEL_SIGMA, order=(0, 1)))
    sv = 1 - unit(ndi.gaussian_filter(unit(hv[..., 1]), SOBEL_SIGMA, order=(1, 0)))
    return np.maximum(np.maximum(sh, sv) - (1 - fg), 0)


def hover_labels(fg_prob: np.ndarray, hv: np.ndarray, edge: float, threshold: float = 0.5,
                 min_size: int = 10) -> np.ndarray:
    """HoVer-Net's ``process_np_hv`` in scipy/scikit-image (its 21-tap Sobel as a Gaussian
    derivative): markers are the nucleus mask minus the contact energy above ``edge``,
    flooded over the smoothed energy."""
    from scipy import ndimage as ndi
    from skimage.morphology import disk, remove_small_objects
    from skimage.segmentation import watershed

    blb = remove_small_objects(ndi.label(fg_prob >= threshold)[0], min_size) > 0
    overall = hv_contact(hv, blb)
    dist = -ndi.gaussian_filter((1 - overall) * blb, 0.8)
    marker = ndi.binary_fill_holes(blb & (overall < edge))
    marker = ndi.binary_opening(marker, disk(2))
    marker = remove_small_objects(ndi.label(marker)[0], min_size)
    return watershed(dist, marker, mask=blb)


def fine_tune(model, sampler, targets_of, loss, args, weights: Path, t0: float) -> None:
    """Fit ``model`` (in ``args.precision``) on ``sampler``'s patches, their targets made by
    ``targets_of``, the weights saved and a line logged to ``train.log`` beside them after
    every epoch.

    The learning rate follows a cosine from ``args.lr`` to 0 over ``args.epochs x
    args.steps`` batches or, with ``args.time_budget``, over that many seconds of training
    (set at each epoch's start; the run stops before an epoch would overrun the budget), so
    a GPU run completes its schedule whatever its speed. Batches are drawn by
    ``args.workers`` threads, each from its own generator seeded by (epoch, batch).
    """
    import math

    import keras

    from nucleoseg.models.precision import with_precision
    from nucleoseg.training.train import compile_model

    budget = args.time_budget

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=args.workers, use_multiprocessing=False)
            self.epoch = 0

        def __len__(self):
            return args.steps

        def __getitem__(self, i):
            x, y = sampler.batch(args.batch_size, np.random.default_rng((0, self.epoch, i)))
            return x, targets_of(y)

        def on_epoch_end(self):
            self.epoch += 1

    keras.utils.set_random_seed(0)
    fit_model = with_precision(model, args.precision)
    compile_model(fit_model, args.lr, loss,
                  decay_steps=None if budget else args.epochs * args.steps)
    start = time.perf_counter()

    class Log(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.began = time.perf_counter()
            if budget:
                done = min(1.0, (self.began - start) / budget)
                fit_model.optimizer.learning_rate = args.lr * 0.5 * (1 + math.cos(math.pi * done))

        def on_epoch_end(self, epoch, logs=None):
            model.set_weights(fit_model.get_weights())
            model.save_weights(weights)
            now = time.perf_counter()
            lr = float(keras.ops.convert_to_numpy(fit_model.optimizer.learning_rate))
            line = (f"epoch {epoch + 1}/{args.epochs} loss {logs['loss']:.4f} lr {lr:.2e} "
                    f"({now - t0:.0f}s)")
            print(line, flush=True)
            with open(weights.parent / "train.log", "a") as log:
                log.write(line + "\n")
            if budget and now - start + (now - self.began) > budget:
                self.model.stop_training = True

    fit_model.fit(Batches(), epochs=args.epochs, callbacks=[Log()], verbose=0)


def fine_tune_parser(doc: str, out: str) -> argparse.ArgumentParser:
    """The options of a fine-tuning experiment: :func:`fine_tune`'s recipe (the session-26
    control run's by default), where it writes, re-scoring and smoke runs."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", default=out)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--precision", default="bfloat16")
    ap.add_argument("--evaluate-only", action="store_true",
                    help="re-score the weights a run saved in --out")
    ap.add_argument("--val-limit", type=int, default=None,
                    help="score only the first N tiles of each data set (smoke runs)")
    ap.add_argument("--scratch", action="store_true",
                    help="train from random weights (a GPU run) instead of the shipped UNet's")
    ap.add_argument("--data", default=None,
                    help="data root (default NUCLEOSEG_DATA), e.g. a packed copy on a GPU")
    ap.add_argument("--train-only", action="store_true",
                    help="save the weights and stop: score them later with --evaluate-only "
                         "(a GPU run carries the fit tiles alone)")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds of training: the cosine spans them, --epochs is a cap")
    ap.add_argument("--workers", type=int, default=1, help="threads drawing batches")
    return ap


def base_unet(args):
    """The network to extend, ``(model, card)``: the shipped UNet, or its architecture with
    random weights under ``--scratch``."""
    from nucleoseg.models.registry import build
    from nucleoseg.models.weights import load_model, read_card, shipped_dir

    if args.scratch:  # the card alone: a GPU run carries no weights
        card = read_card(shipped_dir() / "unet.keras")
        return build("unet", **card.config), card
    return load_model("unet")


def main(argv: list[str] | None = None) -> int:
    ap = fine_tune_parser(__doc__, "/tmp/hv")
    ap.add_argument("--hv-weight", type=float, default=1.0,
                    help="weight of the HV loss (0: the control, nucleus/interior alone)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)


    from nucleoseg.evaluation.metrics import Counts, counts
    from nucleoseg.inference.postprocess import probabilities_to_labels
    from nucleoseg.inference.predict import predict_whole
    from nucleoseg.io.labels import drop_small_and_relabel
    from nucleoseg.models.weights import load_model
    from nucleoseg.training.data import STRONG_AUGMENTATION, PatchSampler, make_targets
    from nucleoseg.training.recipe import load_split

    datasets = ["monuseg", "consep"]
    base, card = base_unet(args)
    model = build_hv(base)
    weights = out / "hv_unet.weights.h5"
    t0 = time.perf_counter()
    if not args.evaluate_only:
        names, images, labels = load_split("fit", args.data, datasets)
        groups = [datasets.index(n.split("/")[0]) for n in names]
        targets = [np.concatenate([make_targets(lb), _ids_to_channels(lb)], -1) for lb in labels]
        sampler = PatchSampler(images, targets, 256, True, 0,
                               augmentation=STRONG_AUGMENTATION, groups=groups)

        fine_tune(model, sampler, with_hv, hv_loss_fn(args.hv_weight), args, weights, t0)
        if args.train_only:
            return 0
    model.load_weights(weights)
    reference = load_model("unet")[0]  # the fine-tune trained base's layers in place

    names, images, labels = load_split("val", args.data, datasets)
    if args.val_limit:
        keep = [i for ds in datasets
                for i in [k for k, n in enumerate(names) if n.startswith(ds)][:args.val_limit]]
        names, images, labels = ([v[i] for i in keep] for v in (names, images, labels))
    params = card.postprocess
    rows: dict[str, dict[str, Counts]] = {}

    def add(variant, ds, pred, truth):
        rows.setdefault(variant, {}).setdefault(ds, Counts())
        rows[variant][ds] = rows[variant][ds] + counts(pred, truth)

    for name, image, truth in zip(names, images, labels, strict=True):
        ds = name.split("/")[0]
        shipped = predict_whole(reference, image)
        add("shipped UNet, card post-processing", ds,
            probabilities_to_labels(shipped, params), truth)
        pred = predict_whole(model, image)
        probs = pred[..., :2]
        hv = pred[..., 2:]
        add("fine-tuned with HV head: own nucleus/interior, card post-processing", ds,
            probabilities_to_labels(probs, params), truth)
        contact = hv_contact(hv, probs[..., 0] >= params.threshold)  # one map for every edge
        for edge in EDGES:
            add(f"HoVer-Net post-processing, edge {edge}", ds,
                hover_labels(probs[..., 0], hv, edge), truth)
            cut = contact >= edge
            carved = probs.copy()
            carved[..., 1] = np.where(cut, 0, carved[..., 1])
            lab = probabilities_to_labels(carved, params.replace(marker_dynamic=0.0))
            add(f"card markers minus HV edge {edge}", ds,
                drop_small_and_relabel(lab, params.min_size, raster_order=True), truth)
        print(f"scored {name} ({time.perf_counter() - t0:.0f}s)", flush=True)

    table = {v: {ds: {k: round(x, 4) for k, x in c.scores().items()} for ds, c in d.items()}
             for v, d in rows.items()}
    (out / "scores.json").write_text(json.dumps(table, indent=1))
    print(f"\n# python benchmarks/hv_head.py  (validation tiles; {args.epochs}x{args.steps} "
          f"steps, batch {args.batch_size}, lr {args.lr}, {args.precision}; "
          f"{os.cpu_count()} cores)")
    print("| variant | MoNuSeg Dice / AJI / merged / split | CoNSeP Dice / AJI / merged / split |")
    print("|---|---|---|")
    for v, d in table.items():
        cells = [" / ".join(f"{d[ds][k]:.4f}" for k in ("dice", "aji", "merged", "split"))
                 for ds in datasets]
        print(f"| {v} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
