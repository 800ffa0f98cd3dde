"""Fine-tune a trained model on (image, corrected labels) pairs and save it as a user model."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .data import PatchSampler, make_targets

#: Layer-name prefixes of the encoder per architecture family (frozen on request).
ENCODER_PREFIXES = ("enc", "mobilenetv2", "xception", "preprocess", "stem_align")


def fine_tune(
    base: str | Path,
    pairs: list[tuple[np.ndarray, np.ndarray]],
    name: str,
    epochs: int = 5,
    steps_per_epoch: int = 20,
    batch_size: int = 4,
    learning_rate: float = 1e-4,
    freeze_encoder: bool = False,
    out_dir: str | Path | None = None,
    seed: int = 0,
    progress: Callable[[int, int, dict], None] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path | None:
    """Retrain ``base`` on corrected labels and save it as ``name`` in the user folder.

    Parameters
    ----------
    base : str or pathlib.Path
        A model name or ``.keras`` path (never modified).
    pairs : list of (numpy.ndarray, numpy.ndarray)
        ``(H, W, 3) uint8`` images with their ``(H, W)`` integer instance labels.
    name : str
        Name of the new model (a file name; an existing user model of that name is replaced
        atomically, shipped models cannot be).
    freeze_encoder : bool
        Train only the decoder and head.
    progress, on_epoch, should_stop : callable, optional
        See :func:`nucleoseg.training.train.train`.

    Returns
    -------
    pathlib.Path or None
        The saved model, or None when stopped early (nothing is written then).
    """
    from ..io.images import ImageError, to_rgb_uint8
    from ..models.weights import load_model, save_model, shipped_dir, user_dir
    from .train import train

    if not pairs:
        raise ValueError("give at least one (image, labels) pair")
    if (Path(out_dir) if out_dir else user_dir()).resolve() == shipped_dir().resolve():
        raise ValueError("fine-tuned models are saved to the user folder, never to weights/")
    model, card = load_model(base)
    stride = int(card.get("inference", {}).get("stride", 16))
    images, targets = [], []
    for image, labels in pairs:
        image = to_rgb_uint8(image)
        labels = np.asarray(labels)
        if labels.shape != image.shape[:2]:
            raise ImageError(f"labels {labels.shape} and image {image.shape[:2]} differ in size")
        if labels.dtype.kind not in "iu":
            raise ImageError(f"labels must be integers, got {labels.dtype}")
        images.append(image)
        targets.append(make_targets(labels))
    side = min(min(i.shape[:2]) for i in images)
    patch = min(256, side) // stride * stride
    if patch < 2 * stride:
        raise ImageError(f"the labelled region is {side} px; use at least {2 * stride} px")
    if sum(int((t[..., 0] > 0).sum()) for t in targets) == 0:
        raise ImageError("the labels hold no nucleus; correct or draw some first")

    if freeze_encoder:
        for layer in model.layers:
            if layer.name.startswith(ENCODER_PREFIXES):
                layer.trainable = False
    sampler = PatchSampler(images, targets, patch=patch, seed=seed)
    t0 = time.perf_counter()
    result = train(model, sampler, None, epochs=epochs, steps_per_epoch=steps_per_epoch,
                   batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                   progress=progress, on_epoch=on_epoch, should_stop=should_stop,
                   early_stopping_patience=max(epochs, 1), plateau_patience=max(epochs, 1))
    if result.cancelled:
        return None
    for layer in model.layers:
        layer.trainable = True
    new_card: dict[str, Any] = {
        k: v for k, v in card.items()
        if k not in ("sha256", "name", "test", "validation", "postprocess_search")
    }
    new_card["description"] = f"{card.get('description', card.get('architecture', ''))}, " \
                              f"fine-tuned"
    new_card["fine_tuned_from"] = card.get("name", str(base))
    new_card["fine_tune"] = {
        "pairs": len(pairs), "pixels": int(sum(i.shape[0] * i.shape[1] for i in images)),
        "epochs": result.epochs_run, "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size, "patch": patch, "learning_rate": learning_rate,
        "freeze_encoder": freeze_encoder, "seconds": round(time.perf_counter() - t0, 1),
        "history": result.history,
    }
    return save_model(model, Path(out_dir) if out_dir else user_dir(), name, new_card)
