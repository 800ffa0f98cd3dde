"""The MoNuSeg training recipe behind ``nucleoseg train`` and the shipped weights.

1. Fit tiles = the 30 training tiles minus :data:`~nucleoseg.io.monuseg.VALIDATION_TILES`
   (one per organ); targets from the XML where present, else the instance masks.
2. Train on random augmented 256x256 patches; the validation loss on the 36 fixed windows of
   each validation tile drives learning-rate decay, early stopping and the kept epoch.
3. Post-processing thresholds are chosen to maximise AJI on the whole validation tiles.
4. The model is saved with a card recording all of it. The test tiles are never read here.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.metrics import Counts, counts
from ..inference.postprocess import PostprocessParams, probabilities_to_labels
from ..inference.predict import predict_tiled, run
from ..io.monuseg import VALIDATION_TILES, list_tiles
from .data import PatchSampler, grid_patches, make_targets

THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
INTERIOR_THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
MIN_SIZES = (8, 16, 32)


def load_split(split: str, data: str | Path | None = None):
    """``(names, images, labels)`` of a MoNuSeg split (see :func:`list_tiles`)."""
    tiles = list_tiles(split, data)
    return [t.name for t in tiles], [t.image() for t in tiles], [t.labels() for t in tiles]


def select_postprocess(
    probs: list[np.ndarray], labels: list[np.ndarray]
) -> tuple[PostprocessParams, dict[str, float], list[dict[str, Any]]]:
    """Pick post-processing parameters that maximise pooled AJI on ``(probs, labels)``.

    Coordinate search: thresholds jointly, then the minimum size.

    Returns
    -------
    best : PostprocessParams
    scores : dict
        Pooled metrics at ``best``.
    trials : list of dict
        Every setting tried with its AJI and Dice.
    """
    trials: list[dict[str, Any]] = []

    def score_all(settings: list[PostprocessParams]) -> list[dict[str, float]]:
        jobs = [(p, pr, lab) for p in settings for pr, lab in zip(probs, labels, strict=True)]
        workers = min(len(jobs), max(1, (os.cpu_count() or 1) - 1))
        if workers > 2:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(workers) as pool:
                per_job = pool.map(_score_job, jobs)
        else:
            per_job = [_score_job(j) for j in jobs]
        out = []
        n = len(probs)
        for i, p in enumerate(settings):
            total = Counts()
            for c in per_job[i * n : (i + 1) * n]:
                total = total + c
            s = total.scores()
            trials.append({**p.to_dict(), "aji": s["aji"], "dice": s["dice"]})
            out.append(s)
        return out

    grid = [PostprocessParams(threshold=t, interior_threshold=it)
            for t in THRESHOLDS for it in INTERIOR_THRESHOLDS]
    scores = score_all(grid)
    k = int(np.argmax([s["aji"] for s in scores]))
    best, best_s = grid[k], scores[k]
    sizes = [PostprocessParams(best.threshold, best.interior_threshold, m, best.min_marker_size)
             for m in MIN_SIZES if m != best.min_size]
    for p, s in zip(sizes, score_all(sizes), strict=True):
        if s["aji"] > best_s["aji"]:
            best, best_s = p, s
    return best, best_s, trials


def _score_job(job) -> Counts:
    params, prob, lab = job
    return counts(probabilities_to_labels(prob, params), lab)


def train_monuseg(
    model_name: str,
    out_dir: str | Path,
    save_name: str | None = None,
    data: str | Path | None = None,
    epochs: int = 60,
    steps_per_epoch: int = 100,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    patch: int = 256,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    tile: int = 1280,
    halo: int = 64,
    workers: int = 1,
    jit_compile: bool | str = "auto",
    time_budget: float | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Train ``model_name`` on MoNuSeg, tune post-processing on validation, save model + card.

    Returns
    -------
    pathlib.Path
        The saved ``.keras`` file in ``out_dir``.
    """
    import keras

    from ..models.registry import build, resolve, total_stride
    from ..models.weights import save_model
    from .train import train

    config = dict(config or {})
    resolve(model_name)
    save_name = save_name or model_name
    t0 = time.perf_counter()
    fit_names, fit_images, fit_labels = load_split("fit", data)
    val_names, val_images, val_labels = load_split("val", data)
    log(f"data: {len(fit_names)} fit tiles, {len(val_names)} validation tiles")
    sampler = PatchSampler(fit_images, [make_targets(lb) for lb in fit_labels], patch, True, seed)
    vx, vy = zip(*(grid_patches(i, make_targets(lb), patch) for i, lb in
                   zip(val_images, val_labels, strict=True)), strict=True)
    validation = (np.concatenate(vx), np.concatenate(vy))

    keras.utils.set_random_seed(seed)
    model = build(model_name, **config)
    stride = total_stride(model_name, **config)
    out_dir = Path(out_dir)
    ckpt = out_dir / f".{save_name}.checkpoint.keras"

    def on_epoch(epoch: int, logs: dict) -> None:
        log(f"epoch {epoch + 1}/{epochs} loss {logs.get('loss', float('nan')):.4f} "
            f"val_loss {logs.get('val_loss', float('nan')):.4f} "
            f"val_dice {logs.get('val_nucleus_dice', float('nan')):.4f} "
            f"lr {float(logs.get('learning_rate', 0)):.1e} ({time.perf_counter() - t0:.0f}s)")

    result = train(
        model, sampler, validation, epochs=epochs, steps_per_epoch=steps_per_epoch,
        batch_size=batch_size, learning_rate=learning_rate, checkpoint=ckpt, seed=seed,
        workers=workers, jit_compile=jit_compile, on_epoch=on_epoch,
        time_budget=time_budget,
    )
    log(f"trained {result.epochs_run} epochs in {result.seconds:.0f}s; best epoch "
        f"{result.best_epoch + 1} (val_loss {result.best_val_loss:.4f})")

    val_probs = [run(predict_tiled(model, im, tile, halo, stride, batch_size=2))
                 for im in val_images]
    params, val_scores, trials = select_postprocess(val_probs, val_labels)
    log(f"post-processing on validation: {params.to_dict()} -> AJI {val_scores['aji']:.4f} "
        f"Dice {val_scores['dice']:.4f}")

    spec = resolve(model_name)
    card = {
        "architecture": model_name,
        "description": spec.description,
        "config": {**spec.defaults, **config},
        "parameters": int(model.count_params()),
        "outputs": ["nucleus", "interior"],
        "input": {"layout": "(B, H, W, 3) RGB", "normalization": "uint8 / 255 -> [0, 1]"},
        "inference": {"stride": stride, "tile": tile, "halo": halo, "batch_size": 2},
        "postprocess": params.to_dict(),
        "training": {
            "data": "MoNuSeg 2018 training set (30 tiles, 1000x1000, 40x H&E)",
            "ground_truth": "Aperio XML where present (13 tiles), instance masks otherwise",
            "fit_tiles": fit_names,
            "validation_tiles": list(VALIDATION_TILES),
            "patch": patch, "batch_size": batch_size, "steps_per_epoch": steps_per_epoch,
            "epochs_max": epochs, "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch + 1, "learning_rate": learning_rate,
            "loss": "bce + soft dice on (nucleus, interior)",
            "optimizer": "Adam, lr x0.1 on plateau (8 epochs), early stop (20 epochs)",
            "augmentation": "dihedral flips/rot90, HED stain jitter (sigma 0.05), "
                            "brightness/contrast",
            "seed": seed,
            "keras_backend": keras.backend.backend(),
            "keras_version": keras.__version__,
            "hardware": _hardware(),
            "seconds": round(result.seconds, 1),
            "time_budget_s": time_budget,
            "history": result.history,
        },
        "validation": {k: round(v, 4) for k, v in val_scores.items()},
        "postprocess_search": trials,
        "license": "Weights derived from MoNuSeg 2018 (CC BY-NC-SA 4.0): non-commercial use",
    }
    path = save_model(model, out_dir, save_name, card)
    ckpt.unlink(missing_ok=True)
    log(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.0f}s")
    return path


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
