"""A small CNN that classifies each nucleus from the pixels around it.

Input: a :data:`PATCH` x :data:`PATCH` crop centred on the nucleus centroid (RGB, reflected at
image borders) plus a fourth channel that marks the nucleus's own pixels, so the network
sees texture, chromatin and surroundings that hand-made features miss. A *two-scale* net
also gets the :data:`CONTEXT` px window around the nucleus at half resolution (RGB and the
mask of every nucleus in it) as four more channels on the same grid: the tissue a nucleus
sits in (gland, stroma, infiltrate) at the cost of one wider first convolution. Output:
class probabilities. It joins the random forest of
:class:`~nucleoseg.classify.classifier.NucleusClassifier` (their probabilities are
averaged with a weight chosen on validation tiles). Prediction runs through OpenVINO on the
CPU (:mod:`nucleoseg.inference.openvino_engine`) from the net's OpenVINO file shipped beside
it, or with Keras where there is none.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Patch side in pixels (40x: 12 micrometres, a nucleus and its immediate surroundings).
PATCH = 48
#: Side of a two-scale net's context window in pixels (24 micrometres), seen at half
#: resolution on the :data:`PATCH` grid.
CONTEXT = 2 * PATCH
#: Nuclei per forward pass.
BATCH = 128


def nucleus_patches(image: np.ndarray, labels: np.ndarray, ids: np.ndarray,
                    centres: np.ndarray | None = None, context: bool = False) -> np.ndarray:
    """``(N, PATCH, PATCH, 4) uint8`` crops around the centroids of ``ids``: RGB and a mask
    channel (255 on the nucleus's own pixels). ``centres`` are those centroids (``(N, 2)``
    row/col) when the caller has them. With ``context``, ``(N, PATCH, PATCH, 8)``: four
    more channels from :func:`context_patches`."""
    from ..io.labels import compact_ids
    from .features import _local_ids

    lab, original = compact_ids(labels)  # a slide block's global ids
    lab = lab.astype(np.int32, copy=False)
    ids = _local_ids(np.asarray(ids, np.int64), original)
    if centres is None:
        from .context import nucleus_centres

        centres = nucleus_centres(lab, ids)
    h = PATCH // 2
    img = np.pad(image, ((h, h), (h, h), (0, 0)), mode="reflect")
    padded = np.pad(lab, h)
    r = np.round(centres[:, 0]).astype(np.int64)
    c = np.round(centres[:, 1]).astype(np.int64)
    out = np.empty((ids.size, PATCH, PATCH, 4), np.uint8)
    for k in range(ids.size):  # plain slices: ~10x faster than one fancy index here
        out[k, :, :, :3] = img[r[k]:r[k] + PATCH, c[k]:c[k] + PATCH]
        np.multiply(padded[r[k]:r[k] + PATCH, c[k]:c[k] + PATCH] == ids[k], 255,
                    out=out[k, :, :, 3], casting="unsafe")
    if context:
        return np.concatenate([out, context_patches(image, lab > 0, centres)], axis=-1)
    return out


def context_patches(image: np.ndarray, foreground: np.ndarray, centres: np.ndarray
                    ) -> np.ndarray:
    """``(N, PATCH, PATCH, 4) uint8``: the :data:`CONTEXT` px window around each centre at
    half resolution (2x2 means of the RGB and of the nucleus ``foreground``, 255 = all
    nucleus), reflected at image borders."""
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    if h == 0 or w == 0:  # a one-pixel-wide image: its own pixels, repeated
        image = np.repeat(np.repeat(image, 2, 0), 2, 1)
        foreground = np.repeat(np.repeat(foreground, 2, 0), 2, 1)
        centres = centres * 2
        h, w = image.shape[0], image.shape[1]
    small = np.empty((h // 2, w // 2, 4), np.float32)
    small[..., :3] = image[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean((1, 3))
    small[..., 3] = foreground[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3)) * 255
    half = np.round(small).astype(np.uint8)
    q = PATCH // 2
    padded = np.pad(half, ((q, q), (q, q), (0, 0)), mode="reflect")
    r = np.clip(np.round(centres[:, 0] / 2).astype(np.int64), 0, half.shape[0] - 1)
    c = np.clip(np.round(centres[:, 1] / 2).astype(np.int64), 0, half.shape[1] - 1)
    out = np.empty((len(centres), PATCH, PATCH, 4), np.uint8)
    for k in range(len(centres)):
        out[k] = padded[r[k]:r[k] + PATCH, c[k]:c[k] + PATCH]
    return out


def build_patch_net(n_classes: int, channels: int = 4) -> Any:
    """Four stages of two 3x3 convolutions (16, 32, 64, 128 filters; ~25 MFLOP a nucleus),
    global average pooling, dropout, softmax; ``channels`` = 4, or 8 for a two-scale net."""
    import keras
    from keras import layers

    if channels not in (4, 8):
        raise ValueError(f"a patch net takes 4 or 8 channels, not {channels}")
    inputs = keras.Input((PATCH, PATCH, channels), name="patch")
    x = layers.Rescaling(1 / 255.0)(inputs)
    for k, filters in enumerate((16, 32, 64, 128)):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        if k < 3:
            x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="classes")(x)
    return keras.Model(inputs, outputs, name="patch_net")


def _augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotations by 90 degrees, flips and a per-patch colour scale/shift of the RGB (the
    same for both scales of a two-scale patch)."""
    x = np.rot90(x, int(rng.integers(4)), axes=(1, 2))
    if rng.random() < 0.5:
        x = x[:, :, ::-1]
    x = x.astype(np.float32)
    scale = rng.uniform(0.85, 1.15, (x.shape[0], 1, 1, 3))
    shift = rng.uniform(-15, 15, (x.shape[0], 1, 1, 3))
    for rgb in (slice(0, 3), slice(4, 7))[:x.shape[-1] // 4]:
        x[..., rgb] = np.clip(x[..., rgb] * scale + shift, 0, 255)
    return x


def train_patch_net(
    patches: np.ndarray,
    targets: np.ndarray,
    n_classes: int,
    epochs: int = 25,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    seed: int = 0,
    precision: str = "auto",
    log: Callable[[str], None] = print,
) -> Any:
    """Train :func:`build_patch_net` on ``(N, PATCH, PATCH, 4 or 8) uint8`` patches and class
    indices: Adam with a cosine schedule, class weights ``sqrt(N / (C * N_c))`` (rare
    classes count more, softened), augmentation from :func:`_augment`; bfloat16 on CPUs
    that compute it natively."""
    import keras

    from ..models.precision import POLICIES, resolve_precision

    keras.utils.set_random_seed(seed)
    precision = resolve_precision(precision)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(POLICIES[precision])
    try:
        model = build_patch_net(n_classes, patches.shape[-1])
    finally:
        keras.mixed_precision.set_global_policy(previous)
    counts = np.bincount(targets, minlength=n_classes).astype(np.float64)
    weights = np.sqrt(counts.sum() / (n_classes * np.maximum(counts, 1)))
    steps = max(1, len(targets) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, epochs * steps)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = rng.permutation(len(targets))
        losses = []
        for s in range(steps):
            b = order[s * batch_size:(s + 1) * batch_size]
            loss = model.train_on_batch(_augment(patches[b], rng), targets[b],
                                        sample_weight=weights[targets[b]])
            losses.append(float(np.asarray(loss).ravel()[0]))
        log(f"patch net epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f} "
            f"({time.perf_counter() - t0:.0f}s)")
    if precision == "float32":
        return model
    # kept and shipped as a float32 network (the variables were float32 all along)
    plain = build_patch_net(n_classes, patches.shape[-1])
    plain.set_weights(model.get_weights())
    return plain


class PatchRunner:
    """Class probabilities of patches from a trained patch net, in batches of :data:`BATCH`
    (a last, smaller batch is padded to a multiple of 32: at most four compiled shapes).

    It runs through OpenVINO on the CPU from the net's OpenVINO file ``ir`` when given (no
    Keras: this is how napari's process runs it), else converted from ``model`` when the
    segmentation uses OpenVINO, else with Keras.
    """

    def __init__(self, model: Any = None, checksum: str | None = None,
                 ir: str | Path | None = None, n_classes: int | None = None) -> None:
        from ..backend import inference_engine
        from ..models.precision import resolve_precision

        if model is None and ir is None:
            raise ValueError("give the patch net or its OpenVINO file")
        self.model = model
        self.n_classes = int(model.outputs[0].shape[-1]) if model is not None else \
            int(n_classes or 0)
        self._run = None
        # the segmentation's precision rule (bfloat16 where the CPU has it natively)
        if ir is not None:
            from ..inference.openvino_engine import OpenVINOModel

            self._run = OpenVINOModel(ir=ir, precision=resolve_precision("auto", None,
                                                                          "openvino"))
        elif inference_engine() == "openvino":
            from ..inference.openvino_engine import OpenVINOModel

            self._run = OpenVINOModel(model, resolve_precision("auto", None, "openvino"),
                                      checksum)

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        from ..inference.predict import predict_batch

        n = patches.shape[0]
        out = np.zeros((n, self.n_classes), np.float32)
        for start in range(0, n, BATCH):
            chunk = patches[start:start + BATCH]
            size = min(BATCH, -(-len(chunk) // 32) * 32)  # pad to a multiple of 32
            batch = np.zeros((size, *chunk.shape[1:]), np.float32)
            batch[:len(chunk)] = chunk
            probs = self._run(batch) if self._run is not None else \
                predict_batch(self.model, batch)
            out[start:start + len(chunk)] = probs[:len(chunk)]
        return out
