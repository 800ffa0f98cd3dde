"""Inference speed against the machine's limit, per shipped model (issue: speed).

Prints per model: FLOPs per pixel (counted by TensorFlow's profiler on the frozen graph at
256x256), the machine's float32 matrix-multiply rate (numpy sgemm, 4096^3), the limit that
implies (rate / FLOPs per pixel, in MP/s), the bare model forward rate, the end-to-end tiled
rate (probabilities, and with post-processing), achieved/limit, and peak RSS. Usage:

    python benchmarks/throughput.py [--size 4096] [MODEL ...]

TensorFlow backend only (the FLOP count uses its profiler); GPU runs use benchmarks/tiling.py.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def sgemm_gflops(n: int = 4096, repeats: int = 3) -> float:
    """Measured dense float32 matrix-multiply rate of this machine (GFLOP/s)."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def flops_per_pixel(model, side: int = 256) -> float:
    """FLOPs per input pixel of ``model`` counted on its frozen TensorFlow graph."""
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
    ap.add_argument("models", nargs="*", default=["unet", "segnet", "deeplabv3", "se_unet"])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--data", default=None)
    args = ap.parse_args()

    from tiling import big_image

    from nucleoseg.inference.postprocess import probabilities_to_labels
    from nucleoseg.inference.predict import normalize, run
    from nucleoseg.inference.segment import Segmenter

    rate = sgemm_gflops()
    image = big_image(args.size, args.data)
    mp = image.shape[0] * image.shape[1] / 1e6
    print(f"sgemm {rate:.1f} GFLOP/s; image {args.size}x{args.size} ({mp:.1f} MP)")
    head = (f"{'model':<11}{'kFLOP/px':>9}{'limit':>8}{'bare':>8}{'tiled':>8}{'+post':>8}"
            f"{'tiled/limit':>12}{'+post/limit':>12}{'bare/limit':>11}")
    rows = []
    for name in args.models:
        seg = Segmenter.load(name)
        fpp = flops_per_pixel(seg.model)
        limit = rate * 1e9 / fpp / 1e6
        tile = normalize(image[: seg.tile, : seg.tile])[None]
        seg.model.predict_on_batch(tile)
        bare = min(_timed(lambda s=seg, t=tile: s.model.predict_on_batch(t)) for _ in range(2))
        bare_mps = seg.tile**2 / 1e6 / bare
        run(seg.probabilities(image))  # same tile shapes as the timed run: no retrace inside
        t0 = time.perf_counter()
        probs = run(seg.probabilities(image))
        tiled = time.perf_counter() - t0
        t0 = time.perf_counter()
        probabilities_to_labels(probs, seg.params)
        post = time.perf_counter() - t0
        rows.append((name, fpp / 1e3, limit, bare_mps, mp / tiled, mp / (tiled + post)))
    print(head)
    for name, k, lim, b, t, tp in rows:
        print(f"{name:<11}{k:>9.0f}{lim:>8.3f}{b:>8.3f}{t:>8.3f}{tp:>8.3f}{t / lim:>12.2f}"
              f"{tp / lim:>12.2f}{b / lim:>11.2f}")
    print("rates in MP/s; limit = sgemm rate / FLOPs per pixel")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
