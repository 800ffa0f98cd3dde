"""The training recipe behind ``nucleoseg train`` and the shipped weights.

1. Fit tiles = the training tiles of each data set (MoNuSeg, CoNSeP) minus its validation
   tiles (:data:`nucleoseg.io.monuseg.VALIDATION_TILES`: one per organ;
   :data:`nucleoseg.io.consep.VALIDATION_TILES`); MoNuSeg targets from the XML where present,
   else the instance masks.
2. Train on random augmented 256x256 patches, each data set drawn equally often; the
   validation loss on the 36 fixed windows of each validation tile picks the kept epoch (and,
   with the plateau schedule, drives learning-rate decay and early stopping).
3. Post-processing thresholds, then the minimum size, then the marker rule (interior above
   a threshold, or maxima of the interior by their dynamic) are chosen on the whole
   validation tiles to maximise pooled Dice + AJI together; the dynamic rule is taken only
   when it also lowers no data set's AJI.
4. The model is saved with a card recording all of it. The test tiles are never read here.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..inference.predict import predict_tiled, run
from ..io.datasets import list_tiles
from ..models.card import InferenceSettings, TrainSettings
from .data import STRONG_AUGMENTATION, Augmentation, PatchSampler, grid_patches, make_targets
from .postprocess_choice import scores_by_data_set, select_postprocess


def load_split(split: str, data: str | Path | None = None,
               datasets: tuple[str, ...] | list[str] = ("monuseg",)):
    """``(names, images, labels)`` of a split of one or more data sets.

    Names are ``<data set>/<tile>`` when more than one data set is read.
    """
    names, images, labels = [], [], []
    for ds in datasets:
        tiles = list_tiles(ds, split, data)
        prefix = f"{ds}/" if len(datasets) > 1 else ""
        names += [prefix + t.name for t in tiles]
        images += [t.image() for t in tiles]
        labels += [t.labels() for t in tiles]
    return names, images, labels


def data_sets_of(names: list[str]) -> list[str]:
    """The data set of each ``<data set>/<tile>`` name (one group when names carry none)."""
    return [n.split("/")[0] if "/" in n else "all" for n in names]


DATA_NOTES = {
    "monuseg": "MoNuSeg 2018 training set (30 tiles, 1000x1000, 40x H&E, 7 organs); Aperio "
               "XML where present (13 tiles), instance masks otherwise",
    "consep": "CoNSeP training set (27 tiles, 1000x1000, 40x H&E colorectal; staged copy "
              "from JPEG-softened tiles)",
}
LICENSES = {
    "monuseg": "MoNuSeg 2018 (CC BY-NC-SA 4.0): non-commercial use",
    "consep": "CoNSeP (Apache 2.0)",
}


def train_recipe(
    model_name: str,
    out_dir: str | Path,
    save_name: str | None = None,
    data: str | Path | None = None,
    datasets: tuple[str, ...] | list[str] = ("monuseg", "consep"),
    init: str | Path | None = None,
    epochs: int = TrainSettings.epochs,
    steps_per_epoch: int = TrainSettings.steps_per_epoch,
    batch_size: int = TrainSettings.batch_size,
    learning_rate: float = TrainSettings.learning_rate,
    schedule: str = "plateau",
    augmentation: Augmentation | None = None,
    precision: str = "float32",
    loss: str = "bce_dice",
    contact_weight: float | None = None,
    patch: int = 256,
    seed: int = TrainSettings.seed,
    config: dict[str, Any] | None = None,
    tile: int | None = None,
    halo: int | None = None,
    workers: int = 1,
    jit_compile: bool | str = "auto",
    time_budget: float | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Train ``model_name`` on the named data sets, tune post-processing, save model + card.

    Parameters
    ----------
    datasets : sequence of str
        Data sets under ``data`` (see :data:`nucleoseg.io.datasets.DATASETS`); each is drawn
        equally often.
    init : str or pathlib.Path, optional
        A model (name or ``.keras`` path) to start from instead of random weights: its
        architecture and config are kept. Also how a stopped run resumes (pass its
        checkpoint).
    schedule : {"plateau", "cosine"}
        Learning rate x0.1 on a validation plateau with early stopping, or a fixed cosine
        decay from ``learning_rate`` to 0 over all steps (no early stop).
    augmentation : Augmentation, optional
        Defaults to :data:`~nucleoseg.training.data.STRONG_AUGMENTATION` for more than one
        data set, the MoNuSeg-only recipe otherwise.
    precision : {"float32", "bfloat16"}
        Compute precision of training (variables stay float32; bfloat16 is ~1.5x faster on
        CPUs with native bfloat16).
    loss : str
        A name in :data:`~nucleoseg.training.train.LOSSES`; ``bce_dice_contact`` adds the
        contact-zone target channel it weights.
    contact_weight : float, optional
        That loss's weight of the contact zone (default
        :data:`~nucleoseg.training.train.CONTACT_WEIGHT`).

    Returns
    -------
    pathlib.Path
        The saved ``.keras`` file in ``out_dir``.
    """
    import keras

    from ..models.precision import with_precision
    from ..models.registry import build, resolve, total_stride
    from ..models.weights import load_model, save_model
    from .train import CONTACT_WEIGHT, contact_loss, train

    contact_weight = CONTACT_WEIGHT if contact_weight is None else contact_weight

    config = dict(config or {})
    datasets = list(datasets)
    save_name = save_name or model_name
    from ..models.weights import check_model_name

    check_model_name(save_name)
    if schedule not in ("plateau", "cosine"):
        raise ValueError("schedule must be 'plateau' or 'cosine'")
    if augmentation is None:
        augmentation = STRONG_AUGMENTATION if len(datasets) > 1 else Augmentation()
    t0 = time.perf_counter()
    fit_names, fit_images, fit_labels = load_split("fit", data, datasets)
    val_names, val_images, val_labels = load_split("val", data, datasets)
    groups = [datasets.index(n.split("/")[0]) if "/" in n else 0 for n in fit_names]
    log(f"data: {len(fit_names)} fit tiles, {len(val_names)} validation tiles "
        f"({', '.join(datasets)})")
    contact = loss == "bce_dice_contact"
    sampler = PatchSampler(fit_images, [make_targets(lb, contact=contact) for lb in fit_labels],
                           patch, True, seed, augmentation=augmentation, groups=groups)
    vx, vy = zip(*(grid_patches(i, make_targets(lb, contact=contact), patch) for i, lb in
                   zip(val_images, val_labels, strict=True)), strict=True)
    validation = (np.concatenate(vx), np.concatenate(vy))

    keras.utils.set_random_seed(seed)
    inference = InferenceSettings().replace(tile=tile, halo=halo)
    if init is not None and Path(init).suffix == ".keras" and \
            not Path(init).with_suffix(".json").is_file():
        # a checkpoint of a stopped run (no card): resume it; the architecture is model_name
        from ..models.registry import register_custom_layers

        register_custom_layers()

        saved = keras.saving.load_model(init, compile=False, safe_mode=True)
        model = build(model_name, **config)  # float32, whatever policy the checkpoint had
        model.set_weights(saved.get_weights())
        log(f"resuming from checkpoint {init}")
    elif init is not None:
        model, init_card = load_model(init)
        # the starting model's measured tiling and precision choices stay with it
        inference = init_card.inference.replace(tile=tile, halo=halo)
        model_name = init_card.architecture or model_name
        config = {**init_card.config, **config}
    else:
        model = build(model_name, **config)
    spec = resolve(model_name)
    stride = total_stride(model_name, **config)
    inference = inference.replace(stride=stride)
    tile, halo = inference.tile, inference.halo
    out_dir = Path(out_dir)
    ckpt = out_dir / f".{save_name}.checkpoint.keras"
    fit_model = with_precision(model, precision) if precision != "float32" else model

    def on_epoch(epoch: int, logs: dict) -> None:
        log(f"epoch {epoch + 1}/{epochs} loss {logs.get('loss', float('nan')):.4f} "
            f"val_loss {logs.get('val_loss', float('nan')):.4f} "
            f"val_dice {logs.get('val_nucleus_dice', float('nan')):.4f} "
            + (f"lr {float(logs['learning_rate']):.1e} " if "learning_rate" in logs else "")
            + f"({time.perf_counter() - t0:.0f}s)")

    result = train(
        fit_model, sampler, validation, epochs=epochs, steps_per_epoch=steps_per_epoch,
        batch_size=batch_size, learning_rate=learning_rate, checkpoint=ckpt, seed=seed,
        workers=workers, jit_compile=jit_compile, on_epoch=on_epoch,
        time_budget=time_budget, schedule=schedule,
        loss=contact_loss(contact_weight) if contact else loss,
        # a cosine run keeps the epoch of best validation Dice: with a decaying rate the
        # validation loss (soft Dice + BCE on two channels) is a noisy stand-in for it
        monitor="val_nucleus_dice" if schedule == "cosine" else None,
    )
    if fit_model is not model:
        model.set_weights(fit_model.get_weights())
    log(f"trained {result.epochs_run} epochs in {result.seconds:.0f}s; kept epoch "
        f"{result.best_epoch + 1}")

    val_probs = [run(predict_tiled(model, im, tile, halo, stride, batch_size=2))
                 for im in val_images]
    params, val_scores, trials = select_postprocess(
        val_probs, val_labels, groups=data_sets_of(val_names))
    log(f"post-processing on validation: {params.to_dict()} -> AJI {val_scores['aji']:.4f} "
        f"Dice {val_scores['dice']:.4f} (precision {val_scores['precision']:.4f}, "
        f"recall {val_scores['recall']:.4f})")
    by_dataset = scores_by_data_set(val_probs, val_labels, val_names, params, datasets)
    for ds, sc in by_dataset.items():
        log(f"  validation {ds}: Dice {sc['dice']:.4f} AJI {sc['aji']:.4f}")

    sched = ("Adam, lr x0.1 on plateau (8 epochs), early stop (20 epochs)" if schedule == "plateau"
             else "Adam, cosine decay to 0 over all steps; the epoch with the best "
                  "validation nucleus Dice is kept")
    card = {
        "architecture": model_name,
        "description": spec.description,
        "config": {**spec.defaults, **config},
        "parameters": int(model.count_params()),
        "outputs": ["nucleus", "interior"],
        "input": {"layout": "(B, H, W, 3) RGB", "normalization": "uint8 / 255 -> [0, 1]"},
        "inference": inference.to_dict(),
        "postprocess": params.to_dict(),
        "training": {
            "datasets": datasets,
            "data": "; ".join(DATA_NOTES[d] for d in datasets),
            "sampling": "each data set drawn equally often, tiles within one by area",
            "fit_tiles": fit_names,
            "validation_tiles": val_names,
            "initialised_from": str(init) if init is not None else None,
            "patch": patch, "batch_size": batch_size, "steps_per_epoch": steps_per_epoch,
            "epochs_max": epochs, "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch + 1, "learning_rate": learning_rate,
            "loss": "bce + soft dice on (nucleus, interior)" + (
                f", + {contact_weight:g} x interior bce on the contact zone (pixels with two "
                "nuclei within 2 px)" if contact else ""),
            "optimizer": sched,
            "precision": precision,
            "augmentation": {"dihedral": True, **augmentation.to_dict()},
            "postprocess_selection": "grid on the validation tiles: thresholds for pooled "
                                     "Dice + AJI, then the minimum size for Dice + AJI + "
                                     "PQ, then the marker rule for Dice + AJI",
            "seed": seed,
            "keras_backend": keras.backend.backend(),
            "keras_version": keras.__version__,
            "hardware": _hardware(),
            "seconds": round(result.seconds, 1),
            "time_budget_s": time_budget,
            "history": result.history,
        },
        "validation": {k: round(v, 4) for k, v in val_scores.items()},
        "validation_by_dataset": by_dataset,
        "postprocess_search": trials,
        "license": "Weights derived from " + "; ".join(LICENSES[d] for d in datasets),
    }
    path = save_model(model, out_dir, save_name, card)
    ckpt.unlink(missing_ok=True)
    log(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.0f}s")
    return path


def train_monuseg(model_name: str, out_dir: str | Path, **kwargs: Any) -> Path:
    """:func:`train_recipe` on MoNuSeg alone (the recipe of the first shipped weights)."""
    kwargs.setdefault("datasets", ("monuseg",))
    return train_recipe(model_name, out_dir, **kwargs)


def _hardware() -> str:
    import keras

    try:
        if keras.backend.backend() != "jax":
            raise ImportError
        import jax

        devs = jax.devices()
        if devs and devs[0].platform == "gpu":
            return f"{devs[0].device_kind} (JAX)"
    except Exception:
        pass
    return f"{platform.processor() or platform.machine()} CPU"
