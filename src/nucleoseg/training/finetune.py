"""Fine-tune a trained model on (image, corrected labels) pairs and save it as a user model."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..models.card import FineTuneSettings, ModelCard, PostprocessParams
from .data import PatchSampler, make_targets


def fine_tune(
    base: str | Path,
    pairs: list[tuple[np.ndarray, np.ndarray]],
    name: str,
    epochs: int = FineTuneSettings.epochs,
    steps_per_epoch: int = FineTuneSettings.steps_per_epoch,
    batch_size: int = FineTuneSettings.batch_size,
    learning_rate: float = FineTuneSettings.learning_rate,
    freeze_encoder: bool = FineTuneSettings.freeze_encoder,
    out_dir: str | Path | None = None,
    seed: int = 0,
    progress: Callable[[int, int, dict], None] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    holdout: float = 0.2,
    precision: str = "auto",
    keep_corrections: bool = False,
    previous_corrections: bool = False,
) -> Path | None:
    """Retrain ``base`` on corrected labels and save it as ``name`` in the user folder.

    A band of ``holdout`` of each pair (along its longer side, when the pair is large enough)
    is kept out of training: the base model is scored on it first, the new model after
    every epoch (Dice + AJI); the best epoch is kept, post-processing is re-picked on it,
    and the card's ``fine_tune.validation`` says before/after, the epoch kept and whether
    the new model is better (``improved``).

    Parameters
    ----------
    base : str or pathlib.Path
        A model name or ``.keras`` path (never modified).
    pairs : list of (numpy.ndarray, numpy.ndarray)
        ``(H, W, 3) uint8`` images with their ``(H, W)`` integer instance labels.
    name : str
        Name of the new model (a file name; an existing user model of that name is replaced
        atomically, shipped models cannot be).
    epochs, steps_per_epoch, batch_size, learning_rate, freeze_encoder
        Training settings; defaults and bounds in
        :class:`~nucleoseg.models.card.FineTuneSettings`.
    progress, on_epoch, should_stop : callable, optional
        See :func:`nucleoseg.training.train.train`; ``on_epoch`` logs also carry
        ``val_dice``/``val_aji`` on the held-out band.
    holdout : float
        Share of each pair held out for validation (0 turns it off).
    precision : str
        Compute precision of training and of the held-out scoring: ``"auto"`` (bfloat16 on
        CPUs that compute it natively, unless the card opts out; about 1.5x faster),
        ``"float32"`` or ``"bfloat16"``. Weights stay float32.
    keep_corrections : bool
        Keep the pairs (with those of earlier rounds, when used) beside the new model in
        ``<name>.corrections/``, so a later round can train on them again (the user's
        consent: the panel and the CLI ask for it).
    previous_corrections : bool
        Also train on the corrections kept with ``base`` by earlier rounds (see
        :func:`kept_corrections`); round 3 then learns from rounds 1-3.

    Returns
    -------
    pathlib.Path or None
        The saved model, or None when stopped early (nothing is written then).
    """
    from ..io.images import ImageError, to_rgb_uint8
    from ..models.weights import (
        check_model_name,
        check_not_shipped,
        load_model,
        save_model,
        user_dir,
    )
    from .train import train

    check_model_name(name)  # before any work
    if not pairs:
        raise ValueError("give at least one (image, labels) pair")
    check_not_shipped(Path(out_dir) if out_dir else user_dir())  # before any work
    model, card = load_model(base)
    earlier = kept_corrections(base) if previous_corrections else []
    pairs = [*earlier, *pairs]
    stride = card.inference.stride
    images, targets = [], []
    for image, labels in pairs:
        image = to_rgb_uint8(image)
        labels = np.asarray(labels)
        if labels.shape != image.shape[:2]:
            raise ImageError(f"labels {labels.shape} and image {image.shape[:2]} differ in size")
        if labels.dtype.kind not in "iu":
            raise ImageError(f"labels must be integers, got {labels.dtype}")
        images.append(image)
        targets.append(labels)
    held = [split_holdout(i, lab, holdout, stride) for i, lab in
            zip(images, targets, strict=True)]
    val_pairs = [(h[2], h[3]) for h in held if h is not None]
    images = [h[0] if h is not None else i for h, i in zip(held, images, strict=True)]
    targets = [make_targets(h[1] if h is not None else lab)  # targets once, after the split
               for h, lab in zip(held, targets, strict=True)]
    side = min(min(i.shape[:2]) for i in images)
    patch = min(256, side) // stride * stride
    if patch < 2 * stride:
        raise ImageError(f"the labelled region is {side} px; use at least {2 * stride} px")
    if sum(int((t[..., 0] > 0).sum()) for t in targets) == 0:
        raise ImageError("the labels hold no nucleus; correct or draw some first")

    from ..models.precision import resolve_precision, with_precision

    precision = resolve_precision(precision, card)
    fit_model = with_precision(model, precision)  # the model itself for float32
    if freeze_encoder:
        from ..models.registry import encoder_layers

        for layer in encoder_layers(fit_model, card.architecture):
            layer.trainable = False
    sampler = PatchSampler(images, targets, patch=patch, seed=seed)
    t0 = time.perf_counter()
    checker = HoldoutCheck(val_pairs, card, stride) if val_pairs else None
    before = checker.score(fit_model, checker.base_params) if checker else None
    result = train(fit_model, sampler, None, epochs=epochs, steps_per_epoch=steps_per_epoch,
                   batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                   progress=progress, on_epoch=on_epoch, should_stop=should_stop,
                   early_stopping_patience=max(epochs, 1), plateau_patience=max(epochs, 1),
                   callbacks=[checker] if checker else None)
    if result.cancelled:
        return None
    for layer in fit_model.layers:
        layer.trainable = True
    validation = None
    if checker is not None:
        fit_model.set_weights(checker.best_weights)
        params, after = checker.repick(fit_model)
        card = card.replace(postprocess=params)
        improved = after["dice"] + after["aji"] > before["dice"] + before["aji"]
        validation = {"held_out": f"{holdout:.0%} of each pair (a band along its longer side)",
                      "before": before, "after": after, "best_epoch": checker.best_epoch + 1,
                      "improved": bool(improved)}
    if fit_model is not model:
        model.set_weights(fit_model.get_weights())  # float32 weights, saved as float32
    import keras

    record = {k: v for k, v in card.record.items()
              if k not in ("test", "test_by_dataset", "validation", "validation_by_dataset",
                           "postprocess_search")}
    record["fine_tuned_from"] = card.name or str(base)
    record["fine_tune"] = {
        "pairs": len(pairs), "pixels": int(sum(i.shape[0] * i.shape[1] for i in images)),
        "epochs": result.epochs_run, "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size, "patch": patch, "learning_rate": learning_rate,
        "freeze_encoder": freeze_encoder, "precision": precision,
        "keras_backend": keras.backend.backend(),
        "seconds": round(time.perf_counter() - t0, 1),
        "history": result.history, "validation": validation,
        "pair_sizes": [list(p[0].shape[:2]) for p in pairs],
        "earlier_pairs": len(earlier),
    }
    rounds = int(card.record.get("fine_tune", {}).get("round", 0)) + 1
    record["fine_tune"]["round"] = rounds
    folder = Path(out_dir) if out_dir else user_dir()
    staged = _stage_corrections(folder, name, pairs) if keep_corrections else None
    if staged is not None:
        record["fine_tune"]["corrections"] = {"folder": f"{name}.corrections",
                                              "pairs": len(pairs)}
    new_card = card.replace(description=f"{card.description or card.architecture}, fine-tuned",
                            name="", sha256="", record=record)
    path = save_model(model, folder, name, new_card)
    if staged is not None:
        _swap_in(staged, folder / f"{name}.corrections")
    return path


def kept_corrections(model: str | Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (image, labels) pairs kept with a fine-tuned user model by earlier rounds (empty
    when it kept none)."""
    from ..models.weights import read_card, resolve_model_path

    path = resolve_model_path(model)
    kept = read_card(path).record.get("fine_tune", {}).get("corrections")
    if not kept:
        return []
    folder = (path.parent / kept["folder"]).resolve()
    if path.parent.resolve() not in folder.parents:  # a card must not point elsewhere
        raise ValueError(f"{path.name}: corrections folder {kept['folder']!r} is outside "
                         "the model's folder")
    pairs = []
    for part in sorted(folder.glob("pair-*.npz")):
        with np.load(part, allow_pickle=False) as data:
            pairs.append((data["image"], data["labels"]))
    return pairs


def _stage_corrections(folder: Path, name: str, pairs) -> Path:
    """Write the pairs into a fresh hidden folder beside where they will live (with the mode
    a plain ``mkdir`` would give it: ``mkdtemp`` makes it 0700)."""
    import os
    import tempfile

    from ..io.atomic import current_umask

    folder.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{name}.corrections-", dir=folder))
    os.chmod(staged, 0o777 & ~current_umask())
    for k, (image, labels) in enumerate(pairs):
        np.savez_compressed(staged / f"pair-{k:04d}.npz", image=np.asarray(image),
                            labels=np.asarray(labels))
    return staged


def _swap_in(staged: Path, target: Path) -> None:
    """Replace ``target`` by ``staged`` (the old corrections go only once the new are in)."""
    import os
    import shutil

    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staged, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def split_holdout(image: np.ndarray, labels: np.ndarray, fraction: float, stride: int):
    """``(fit image, fit labels, held-out image, held-out labels)``: the last ``fraction`` of
    the longer side held out; None when either part would be too small to use (< 64 px or
    < 2 strides) or ``fraction`` is 0."""
    if fraction <= 0:
        return None
    h, w = image.shape[:2]
    axis = 0 if h >= w else 1
    n = (h, w)[axis]
    cut = int(round(n * (1 - fraction)))
    least = max(64, 2 * stride)
    if n - cut < least or cut < least:
        return None
    labels = np.asarray(labels)
    if axis == 0:
        return image[:cut], labels[:cut], image[cut:], labels[cut:]
    return image[:, :cut], labels[:, :cut], image[:, cut:], labels[:, cut:]


def _holdout_callback_base():
    import keras

    return keras.callbacks.Callback


class HoldoutCheck(_holdout_callback_base()):
    """Scores the model on held-out pairs after every epoch (pooled Dice and AJI), keeps the
    best epoch's weights, and re-picks post-processing on them at the end."""

    def __init__(self, pairs, card: ModelCard, stride: int):
        super().__init__()
        self.pairs = pairs
        self.stride = stride
        self.tile, self.halo = card.inference.tile, card.inference.halo
        self.base_params = card.postprocess
        self.best, self.best_epoch, self.best_weights = -1.0, -1, None

    def _probs(self, model):
        from ..inference.predict import predict_tiled, run

        return [run(predict_tiled(model, im, self.tile, self.halo, self.stride, batch_size=1))
                for im, _ in self.pairs]

    def score(self, model, params) -> dict[str, float]:
        from ..evaluation.metrics import Counts, counts
        from ..inference.postprocess import probabilities_to_labels

        total = Counts()
        for prob, (_, lab) in zip(self._probs(model), self.pairs, strict=True):
            total = total + counts(probabilities_to_labels(prob, params), lab)
        return {k: round(v, 4) for k, v in total.scores().items()}

    def on_epoch_end(self, epoch, logs=None):
        s = self.score(self.model, self.base_params)
        if logs is not None:
            logs["val_dice"], logs["val_aji"] = s["dice"], s["aji"]
        if s["dice"] + s["aji"] > self.best or self.best_weights is None:
            self.best, self.best_epoch = s["dice"] + s["aji"], epoch
            self.best_weights = self.model.get_weights()

    def repick(self, model) -> tuple[PostprocessParams, dict[str, float]]:
        """Post-processing chosen on the held-out pairs, and the scores with it."""
        from .postprocess_choice import select_postprocess

        best, scores, _ = select_postprocess(self._probs(model), [lab for _, lab in self.pairs])
        return best, {k: round(v, 4) for k, v in scores.items()}
