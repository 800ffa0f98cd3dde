"""Fit loop: losses, callbacks for progress/stop, atomic best-model checkpoints.

``train`` is what ``nucleoseg train`` and the fine-tune panel call; progress arrives through
a ``progress(step, total, logs)`` callable and a ``should_stop()`` callable ends the run
cleanly after the current batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from .data import PatchSampler


def soft_dice_loss(y_true, y_pred, smooth: float = 1.0):
    """1 - soft Dice per channel, averaged over channels (batch pooled)."""
    axes = (0, 1, 2)
    inter = ops.sum(y_true * y_pred, axis=axes)
    denom = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return 1.0 - ops.mean((2.0 * inter + smooth) / (denom + smooth))


def _bce(y_true, y_pred):
    """Binary cross-entropy per element."""
    y_pred = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
    return -(y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred))


def bce_loss(y_true, y_pred):
    """Binary cross-entropy averaged over pixels and channels."""
    return ops.mean(_bce(y_true, y_pred))


def bce_dice_loss(y_true, y_pred):
    """BCE + soft Dice (the default loss)."""
    return bce_loss(y_true, y_pred) + soft_dice_loss(y_true, y_pred)


#: Extra weight of the interior channel's cross-entropy where nuclei touch.
CONTACT_WEIGHT = 5.0


def contact_loss(weight: float = CONTACT_WEIGHT) -> Callable:
    """BCE + soft Dice on (nucleus, interior), plus the interior cross-entropy again, times
    ``weight``, on the contact zone (the targets' third channel, see
    :func:`~nucleoseg.training.data.contact_zone`): the pixels that split touching nuclei."""
    if not weight > 0:
        raise ValueError(f"the contact weight must be positive, got {weight}")

    def bce_dice_contact_loss(y_true, y_pred):
        interior_ce = _bce(y_true[..., 1], y_pred[..., 1])
        return bce_dice_loss(y_true[..., :2], y_pred) + weight * ops.mean(
            y_true[..., 2] * interior_ce)

    return bce_dice_contact_loss


bce_dice_contact_loss = contact_loss()


LOSSES: dict[str, Callable] = {"bce": bce_loss, "bce_dice": bce_dice_loss,
                               "bce_dice_contact": bce_dice_contact_loss}


def nucleus_dice(y_true, y_pred):
    """Thresholded (0.5) pixel Dice of the nucleus channel over the batch."""
    t = ops.cast(y_true[..., 0] > 0.5, "float32")
    p = ops.cast(y_pred[..., 0] > 0.5, "float32")
    inter = ops.sum(t * p)
    return (2.0 * inter + 1e-6) / (ops.sum(t) + ops.sum(p) + 1e-6)


class SamplerDataset(keras.utils.PyDataset):
    """``steps`` batches per epoch from a :class:`PatchSampler`; reproducible per index."""

    def __init__(self, sampler: PatchSampler, batch_size: int, steps: int, seed: int, **kw):
        super().__init__(**kw)
        self.sampler, self.batch_size, self.steps, self.seed = sampler, batch_size, steps, seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        rng = np.random.default_rng((self.seed, self.epoch, index))
        return self.sampler.batch(self.batch_size, rng)

    def on_epoch_end(self) -> None:
        self.epoch += 1


class ProgressCallback(keras.callbacks.Callback):
    """Report ``progress(step, total_steps, logs)`` per batch; stop when ``should_stop()``."""

    def __init__(self, total_steps: int, progress=None, should_stop=None, on_epoch=None):
        super().__init__()
        self.total_steps, self.progress, self.should_stop = total_steps, progress, should_stop
        self.on_epoch = on_epoch
        self.step = 0
        self.cancelled = False

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.progress is not None:
            self.progress(self.step, self.total_steps, dict(logs or {}))
        if self.should_stop is not None and self.should_stop():
            self.cancelled = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.on_epoch is not None:
            self.on_epoch(epoch, dict(logs or {}))


class TimeBudget(keras.callbacks.Callback):
    """End training after the first epoch that finishes past ``seconds`` of wall time."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.start = time.perf_counter()
        self.hit = False

    def on_epoch_end(self, epoch, logs=None):
        if time.perf_counter() - self.start > self.seconds:
            self.hit = True
            self.model.stop_training = True


class AtomicBestCheckpoint(keras.callbacks.Callback):
    """Save the model to ``path`` (atomically) whenever ``monitor`` improves."""

    def __init__(self, path: str | Path, monitor: str = "val_loss", mode: str = "min"):
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.sign = 1.0 if mode == "min" else -1.0
        self.best = math.inf
        self.best_epoch = -1

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not self.sign * value < self.best:
            return
        from ..io.atomic import atomic_write

        self.best, self.best_epoch = self.sign * float(value), epoch
        atomic_write(self.path, lambda p: self.model.save(p, include_optimizer=False))


@dataclass
class TrainResult:
    """What a training run did."""

    history: dict[str, list[float]]
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    cancelled: bool
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def compile_model(model: keras.Model, learning_rate: float = 1e-3,
                  loss: str | Callable = "bce_dice", jit_compile: bool | str = "auto",
                  decay_steps: int | None = None) -> None:
    """Compile with Adam, the loss (a name in :data:`LOSSES` or a loss function, e.g.
    :func:`contact_loss`) and the nucleus Dice metric.

    ``decay_steps`` gives a cosine decay of the learning rate to 0 over that many steps.
    """
    if isinstance(loss, str) and loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
    lr = learning_rate
    if decay_steps:
        lr = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps)
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=LOSSES[loss] if isinstance(loss, str) else loss,
        metrics=[nucleus_dice],
        jit_compile=jit_compile,
    )


def train(
    model: keras.Model,
    sampler: PatchSampler,
    validation: tuple[np.ndarray, np.ndarray] | None,
    epochs: int = 50,
    steps_per_epoch: int = 100,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    loss: str | Callable = "bce_dice",
    checkpoint: str | Path | None = None,
    early_stopping_patience: int = 20,
    plateau_patience: int = 8,
    seed: int = 0,
    workers: int = 1,
    jit_compile: bool | str = "auto",
    progress: Callable[[int, int, dict], None] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    compile: bool = True,
    time_budget: float | None = None,
    schedule: str = "plateau",
    callbacks: list | None = None,
    monitor: str | None = None,
) -> TrainResult:
    """Train ``model`` on patches from ``sampler``.

    Adam; learning rate x0.1 when the validation loss stalls for ``plateau_patience``
    epochs; early stopping after ``early_stopping_patience`` epochs without improvement,
    restoring the best weights; the best model is saved atomically to ``checkpoint``.

    Parameters
    ----------
    validation : tuple of numpy.ndarray, optional
        ``(x, y)`` fixed validation patches; without it the training loss is monitored.
    progress : callable, optional
        ``progress(step, total_steps, logs)`` after every batch.
    on_epoch : callable, optional
        ``on_epoch(epoch, logs)`` after every epoch (logs hold loss and val_loss).
    should_stop : callable, optional
        Polled after every batch; True ends training after that batch (weights of the best
        epoch so far are restored, the checkpoint is left as it was).
    time_budget : float, optional
        Wall-clock seconds after which training ends at the next epoch boundary.
    schedule : {"plateau", "cosine"}
        "plateau": the learning-rate decay and early stopping above; "cosine": the learning
        rate decays from ``learning_rate`` to 0 over ``epochs * steps_per_epoch`` steps and
        every epoch runs. Either way the best epoch's weights are restored at the end.
    callbacks : list of keras.callbacks.Callback, optional
        Run before the progress callback (so values they add to the epoch logs reach
        ``on_epoch``).
    monitor : str, optional
        What picks the kept epoch (and drives the plateau schedule): default ``val_loss``
        (``loss`` without validation); ``val_nucleus_dice`` is maximised.
    """
    if schedule not in ("plateau", "cosine"):
        raise ValueError("schedule must be 'plateau' or 'cosine'")
    keras.utils.set_random_seed(seed)
    if compile:
        compile_model(model, learning_rate, loss, jit_compile,
                      decay_steps=epochs * steps_per_epoch if schedule == "cosine" else None)
    monitor = monitor or ("val_loss" if validation is not None else "loss")
    mode = "max" if monitor.endswith("dice") else "min"
    prog = ProgressCallback(epochs * steps_per_epoch, progress, should_stop, on_epoch)
    plateau = schedule == "plateau"
    extra = list(callbacks or [])
    callbacks = [
        *extra,
        keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode,
            patience=early_stopping_patience if plateau else epochs + 1,
            restore_best_weights=True),
    ]
    if plateau:
        callbacks.insert(len(extra), keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, mode=mode, factor=0.1, patience=plateau_patience, min_lr=1e-6))
    if time_budget is not None:
        callbacks.append(TimeBudget(time_budget))
    callbacks.append(prog)  # last, so its logs include the learning rate
    ckpt = None
    if checkpoint is not None:
        ckpt = AtomicBestCheckpoint(checkpoint, monitor, mode)
        callbacks.append(ckpt)
    data = SamplerDataset(sampler, batch_size, steps_per_epoch, seed, workers=workers,
                          use_multiprocessing=False)
    t0 = time.perf_counter()
    hist = model.fit(
        data,
        epochs=epochs,
        validation_data=validation,
        validation_batch_size=batch_size,
        callbacks=callbacks,
        verbose=0,
    )
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    series = history.get(monitor, [math.inf])
    best = (int(np.argmax(series)) if mode == "max" else int(np.argmin(series))) \
        if series else -1
    return TrainResult(
        history=history,
        best_epoch=best,
        best_val_loss=float(series[best]) if series else math.inf,
        epochs_run=len(series),
        cancelled=prog.cancelled,
        seconds=time.perf_counter() - t0,
    )
