"""Inference speed against the machine's limit, per shipped model (issue: speed).

Prints per model: FLOPs per pixel (counted on the traced model: TensorFlow's profiler on the
frozen graph, or XLA's cost analysis under JAX, at 256x256), the device's measured float32
matrix-multiply rate (numpy sgemm 4096^3 on a CPU; a full-float32-precision 8192^3 matmul on
a GPU, no TF32), the limit that implies (rate / FLOPs per pixel, in MP/s), the bare model
forward rate, the end-to-end tiled rate (probabilities, and with post-processing), the rate
of the ``nucleoseg segment`` command on a TIFF of the same image, achieved/limit, the tiling
+ post-processing overhead, peak RSS and, on a GPU, peak device memory, for each precision
asked (``float32`` and ``auto``: bfloat16 on CPUs that have it, float32 on GPUs; name
``bfloat16`` or ``float16`` to time those on a GPU). Usage:

    python benchmarks/throughput.py [--size 4096] [--precision float32 auto] [--rounds 3]
                                    [MODEL ...]

The same script runs on a GPU machine, with TensorFlow's GPU build or with
``KERAS_BACKEND=jax`` (what ``scripts/gpu_check.sh`` does).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def where_models_run() -> tuple[str, str]:
    """``("cpu" | "gpu", description)`` of the device Keras runs models on."""
    import platform

    import keras

    if keras.backend.backend() == "jax":
        import jax

        dev = jax.devices()[0]
        if dev.platform != "cpu":
            return "gpu", f"{dev.device_kind} (JAX {jax.__version__})"
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return "gpu", f"{details.get('device_name', 'GPU')} (TensorFlow {tf.__version__})"
    return "cpu", f"{os.cpu_count()}-core {platform.machine()} CPU (Keras on " \
                  f"{keras.backend.backend()})"


def sgemm_gflops(n: int = 4096, repeats: int = 3) -> float:
    """Measured dense float32 matrix-multiply rate of this machine's CPU (GFLOP/s)."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def bf16_gemm_gflops(n: int = 2048, repeats: int = 3) -> float:
    """Measured bfloat16 matrix-multiply rate of this CPU (TensorFlow 2048^3 matmul, GFLOP/s):
    the issue's reference for the end-to-end rate on CPUs with native bfloat16."""
    import tensorflow as tf

    a = tf.cast(tf.random.uniform((n, n)), tf.bfloat16)
    f = tf.function(lambda: tf.matmul(a, a))
    f().numpy()
    best = min(_timed(lambda: f().numpy()) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def gpu_gemm_gflops(n: int = 8192, repeats: int = 3) -> float:
    """Measured float32 matrix-multiply rate of the GPU, at full float32 precision (no TF32)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax
        import jax.numpy as jnp

        a = jax.random.uniform(jax.random.key(0), (n, n), jnp.float32)
        b = jax.random.uniform(jax.random.key(1), (n, n), jnp.float32)
        f = jax.jit(lambda a, b: jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST))
        f(a, b).block_until_ready()
        best = min(_timed(lambda: f(a, b).block_until_ready()) for _ in range(repeats))
    else:
        import tensorflow as tf

        tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
        tf.config.experimental.enable_tensor_float_32_execution(False)
        try:
            with tf.device("GPU:0"):
                a = tf.random.uniform((n, n))
                b = tf.random.uniform((n, n))
                f = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
                f().numpy()
                best = min(_timed(lambda: f().numpy()) for _ in range(repeats))
        finally:
            tf.config.experimental.enable_tensor_float_32_execution(tf32)
    return 2 * n**3 / best / 1e9


def gpu_peak_memory_mib() -> float | None:
    """Peak device memory in use so far (MiB), or None where the backend does not say."""
    import keras

    try:
        if keras.backend.backend() == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            return stats["peak_bytes_in_use"] / 2**20
        import tensorflow as tf

        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    except Exception:
        return None


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def flops_per_pixel(model, side: int = 256) -> float:
    """FLOPs per input pixel of ``model``, counted on its traced graph: TensorFlow's profiler
    on the frozen graph, or XLA's cost analysis under JAX."""
    import keras

    if keras.backend.backend() == "jax":
        import jax
        import jax.numpy as jnp

        lowered = jax.jit(lambda x: model(x, training=False)).lower(
            jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32))
        cost = lowered.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"]) / side**2
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([1, side, side, 3], tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    info = tf.compat.v1.profiler.profile(graph=frozen.graph, options=opts)
    return info.total_float_ops / side**2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="default: every shipped model")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--data", default=None)
    ap.add_argument("--precision", nargs="+", default=["float32", "auto"],
                    help="precisions to time (auto: bfloat16 where the CPU has it natively)")
    ap.add_argument("--tile", type=int, help="tile side (default: each model card's)")
    ap.add_argument("--halo", type=int, help="halo (default: each model card's)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    args = ap.parse_args()
    from nucleoseg.models.weights import shipped_models

    args.models = args.models or shipped_models()

    import tempfile
    from pathlib import Path

    import keras
    import tifffile
    from tiling import big_image

    from nucleoseg.backend import inference_engine, installed
    from nucleoseg.cli import main as cli
    from nucleoseg.inference.postprocess import probabilities_to_labels
    from nucleoseg.inference.predict import normalize, predict_batch, run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.inference.tiling import fit_grid
    from nucleoseg.models.weights import load_model

    kind, device = where_models_run()
    print(f"inference engine: {inference_engine()} (NUCLEOSEG_ENGINE / --backend)")
    gemm = sgemm_gflops if kind == "cpu" else gpu_gemm_gflops
    rates = [gemm()]
    # on a CPU with native bfloat16, the rate bfloat16 models are held to (measured with
    # TensorFlow: left out where it is not installed)
    bf16_rates = [bf16_gemm_gflops()] if kind == "cpu" and installed("tensorflow") and \
        {"auto", "bfloat16"} & set(args.precision) else []
    print(f"device: {device}")
    image = big_image(args.size, args.data)
    mp = image.shape[0] * image.shape[1] / 1e6
    tmp = Path(tempfile.mkdtemp())
    tifffile.imwrite(tmp / "image.tif", image)
    print(f"image {args.size}x{args.size} ({mp:.1f} MP)")
    rows = []
    settings = {"tile": args.tile, "halo": args.halo}
    for name, precision in [(n, p) for n in args.models for p in args.precision]:
        seg = Segmenter.load(name, precision=precision, **settings)
        if (name, seg.precision) in {(r[0], r[1]) for r in rows}:
            continue
        fpp = flops_per_pixel(load_model(name)[0])
        side = min(2048, args.size)
        tile = normalize(image[:side, :side])[None]
        # the grid's own tile: some models run slower per pixel on smaller tiles
        grid = fit_grid(image.shape[:2], seg.tile, seg.halo, seg.stride)
        th, tw = grid.tile
        used = len(grid) * th * tw / (image.shape[0] * image.shape[1])
        own = normalize(image[:th, :tw])[None]
        forward = {"bare": lambda s=seg, t=tile: predict_batch(s.model, t),
                   "bare@tile": lambda s=seg, t=own: predict_batch(s.model, t),
                   "tiled": lambda s=seg: run(s.probabilities(image))}
        for f in forward.values():  # traces, imports
            f()
        probs = run(seg.probabilities(image))
        probabilities_to_labels(probs, seg.params)
        forward["post"] = lambda s=seg, p=probs: probabilities_to_labels(p, s.params)
        # this shared CPU's speed drifts within minutes: interleave the measurements over
        # rounds and keep each one's best, and keep the best GEMM rate seen as the limit
        best = dict.fromkeys(forward, float("inf"))
        for _ in range(args.rounds):
            for key, f in forward.items():
                best[key] = min(best[key], _timed(f))
            rates.append(gemm(repeats=1))
            if bf16_rates:
                bf16_rates.append(bf16_gemm_gflops(repeats=1))
        bare_mps = side**2 / 1e6 / best["bare"]
        tile_mps = th * tw / 1e6 / best["bare@tile"]
        tiled, post = best["tiled"], best["post"]
        # the command itself: read the TIFF, load the model, tile, post-process, write
        argv = ["segment", str(tmp / "image.tif"), "-o", str(tmp / "labels.tif"), "-m", name,
                "--precision", seg.precision, "-q", "--backend",
                "openvino" if seg.engine == "openvino" else keras.backend.backend()]
        argv += [a for k, v in settings.items() if v is not None for a in (f"--{k}", str(v))]
        command = min(_timed(lambda a=argv: cli(a)) for _ in range(2))
        rows.append((name, seg.precision, fpp, bare_mps, f"{th}x{tw}", used,
                     tile_mps, mp / tiled, mp / (tiled + post), mp / command))
    rate = max(rates)
    print(f"float32 GEMM {rate:.1f} GFLOP/s ({'numpy sgemm' if kind == 'cpu' else 'no TF32'}; "
          f"best of {len(rates)} measurements spread over the run; lowest {min(rates):.1f})")
    print(f"{'model':<10}{'precision':>10}{'kFLOP/px':>9}{'limit':>7}{'bare':>7}{'tile':>10}"
          f"{'model px':>9}{'bare@tile':>10}{'tiled':>7}{'+post':>7}{'command':>8}"
          f"{'command/limit':>14}{'overhead':>9}{'bare/limit':>11}")
    for name, prec, fpp, b, tile_shape, used, bt, t, tp, c in rows:
        k, lim = fpp / 1e3, rate * 1e9 / fpp / 1e6
        print(f"{name:<10}{prec:>10}{k:>9.0f}{lim:>7.3f}{b:>7.3f}{tile_shape:>10}{used:>9.3f}"
              f"{bt:>10.3f}{t:>7.3f}{tp:>7.3f}{c:>8.3f}{c / lim:>14.2f}{b / tp - 1:>9.1%}"
              f"{b / lim:>11.2f}")
    if bf16_rates:
        top = max(bf16_rates)
        print(f"bfloat16 GEMM {top:.1f} GFLOP/s (TensorFlow 2048^3 matmul; best of "
              f"{len(bf16_rates)} spread over the run; lowest {min(bf16_rates):.1f}); "
              "achieved GFLOP/s and share of it, bfloat16 rows:")
        for name, prec, fpp, b, _, _, _, t, tp, c in rows:
            if prec == "bfloat16":
                shares = "  ".join(f"{label} {r * fpp / 1e3:.0f} ({r * fpp / 1e3 / top:.0%})"
                                   for label, r in (("bare", b), ("tiled", t), ("+post", tp),
                                                    ("command", c)))
                print(f"  {name}: {shares}")
    print("rates in MP/s; limit = float32 GEMM rate / FLOPs per pixel; bare = the model on one "
          f"{side}x{side} tile; tile = the tile the grid uses on this image; model px = pixels "
          "the model computes per image pixel (context where tiles meet); bare@tile = the model "
          "on one such tile; tiled = probabilities of the whole image; +post = labels; "
          "command = `nucleoseg segment` in this process (TIFF read, model load, write); "
          "overhead = tiling + post-processing time over the bare forward time on the same "
          "pixels (bare / +post - 1)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if kind == "gpu":
        peak = gpu_peak_memory_mib()
        print(f"peak GPU memory {'unknown' if peak is None else f'{peak:.0f} MiB'}")


if __name__ == "__main__":
    main()
