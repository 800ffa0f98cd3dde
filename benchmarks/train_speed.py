"""Seconds per training step of a shipped model on each Keras backend, on this machine.

Fine-tuning (the panel and ``nucleoseg finetune``) and training run on Keras; inference has
OpenVINO. Which backend trains fastest on a CPU? Each backend runs in its own process
(``KERAS_BACKEND`` is read once, at ``import keras``): it loads the shipped weights, gives
them the precision asked for (:func:`nucleoseg.models.precision.with_precision`), compiles
them as training does (:func:`nucleoseg.training.train.compile_model`: Adam, the card's
loss, ``jit_compile="auto"``) and times ``train_on_batch`` on real patches of the MoNuSeg
fit tiles with the training recipe's augmentation (by default the fine-tune's patch size
and batch). The first steps (tracing, compiling) are left out; the rounds of the backends
are interleaved and each keeps its best, since this shared CPU's speed drifts within
minutes. The test tiles are never read.

    python benchmarks/train_speed.py [--model unet] [--backends tensorflow jax torch]
        [--precision bfloat16 float32] [--batch-size 4] [--steps 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

WARMUP_STEPS = 2


def child(model_name: str, precision: str, batch_size: int, patch: int, steps: int) -> dict:
    """In a process whose ``KERAS_BACKEND`` is set: seconds of each timed step."""
    import keras
    import numpy as np

    from nucleoseg.io.datasets import list_tiles
    from nucleoseg.models.precision import with_precision
    from nucleoseg.models.weights import load_model
    from nucleoseg.training.data import STRONG_AUGMENTATION, PatchSampler, make_targets
    from nucleoseg.training.train import compile_model

    model, _ = load_model(model_name)
    fit = with_precision(model, precision)
    compile_model(fit, learning_rate=1e-4)
    tiles = list_tiles("monuseg", "fit")[:4]
    images = [t.image() for t in tiles]
    targets = [make_targets(t.labels()) for t in tiles]
    sampler = PatchSampler(images, targets, patch=patch, seed=0,
                           augmentation=STRONG_AUGMENTATION)
    batches = [sampler.batch(batch_size) for _ in range(WARMUP_STEPS + steps)]
    times, losses = [], []
    for k, (x, y) in enumerate(batches):
        t0 = time.perf_counter()
        logs = fit.train_on_batch(x, y, return_dict=True)
        loss = float(np.asarray(logs["loss"]))
        if k >= WARMUP_STEPS:
            times.append(time.perf_counter() - t0)
            losses.append(loss)
    return {"backend": keras.backend.backend(), "times": times, "loss": losses}


def run_child(backend: str, args: argparse.Namespace, precision: str) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    code = ("import json, sys; sys.argv = sys.argv[:1]; from train_speed import child; "
            f"print('RESULT', json.dumps(child({args.model!r}, {precision!r}, "
            f"{args.batch_size}, {args.patch}, {args.steps})))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
    return {"backend": backend, "error": " | ".join(tail)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet")
    ap.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    ap.add_argument("--precision", nargs="+", default=["bfloat16", "float32"],
                    choices=["bfloat16", "float32"])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from nucleoseg.models.precision import _cpu_flags, cpu_has_native_bfloat16

    cpu = _cpu_flags()[0] or platform.machine()
    print(f"# python benchmarks/train_speed.py {' '.join(sys.argv[1:])}   ({cpu}, "
          f"{os.cpu_count()} cores, native bfloat16: {cpu_has_native_bfloat16()})")
    best: dict[tuple[str, str], float] = {}
    notes: dict[tuple[str, str], str] = {}
    for r in range(args.rounds):
        for precision in args.precision:
            for backend in args.backends:
                res = run_child(backend, args, precision)
                key = (backend, precision)
                if "error" in res:
                    notes[key] = res["error"]
                    print(f"round {r + 1}: {backend} {precision}: {res['error']}", flush=True)
                    continue
                step = min(res["times"])
                best[key] = min(best.get(key, float("inf")), step)
                print(f"round {r + 1}: {backend} {precision}: best step {step:.3f} s "
                      f"(steps {', '.join(f'{t:.2f}' for t in res['times'])}; "
                      f"loss {res['loss'][0]:.3f} -> {res['loss'][-1]:.3f})", flush=True)
    reference = best.get(("tensorflow", args.precision[0]))
    px = args.batch_size * args.patch**2
    print(f"\n{args.model}, batch {args.batch_size} x {args.patch}^2, best step of "
          f"{args.steps} x {args.rounds} rounds (after {WARMUP_STEPS} warm-up steps each)")
    print(f"{'backend':<11}{'precision':>10}{'s/step':>9}{'kpx/s':>8}"
          f"{'vs TF ' + args.precision[0]:>18}")
    for precision in args.precision:
        for backend in args.backends:
            key = (backend, precision)
            if key not in best:
                print(f"{backend:<11}{precision:>10}  failed: {notes.get(key, '')[:80]}")
                continue
            s = best[key]
            ratio = f"{reference / s:.2f}x" if reference else "-"
            print(f"{backend:<11}{precision:>10}{s:>9.3f}{px / s / 1e3:>8.1f}{ratio:>18}")


if __name__ == "__main__":
    main()
