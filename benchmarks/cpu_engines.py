"""Which engine runs the models fastest on this CPU? (issue: backends, item 5)

Per shipped model, one tile of the size its card uses on a 4096x4096 image, best of
``--rounds`` calls after a warm-up, in a fresh process per engine (a process keeps the Keras
backend it imported):

- ``tensorflow`` float32 and bfloat16 (Keras mixed precision: oneDNN's bfloat16 kernels),
- ``jax`` float32 and bfloat16 (XLA on the CPU),
- ``keras-openvino``: Keras 3's own OpenVINO backend (inference only), float32,
- ``openvino`` float32 and bfloat16: the Keras model converted once and run by OpenVINO's
  CPU runtime (:mod:`nucleoseg.inference.openvino_engine`, what ``--backend openvino`` and
  ``auto`` on a CPU use).

Also printed: the machine's bfloat16 and float32 GEMM rates (TensorFlow 2048^3 matmul), the
model's FLOPs per pixel (TensorFlow's profiler) and the forward rate as a share of the GEMM
rate; the largest and mean |difference| from TensorFlow float32 checks each engine. Usage:

    python benchmarks/cpu_engines.py [--rounds 3] [--engines ...] [MODEL ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINES = {  # name: (KERAS_BACKEND, NUCLEOSEG_ENGINE, precisions)
    "tensorflow": ("tensorflow", "keras", ("float32", "bfloat16")),
    "jax": ("jax", "keras", ("float32", "bfloat16")),
    "keras-openvino": ("openvino", "keras", ("float32",)),
    "openvino": ("tensorflow", "openvino", ("float32", "bfloat16")),
}


def _child(engine: str, models: list[str], rounds: int, out: Path, ref: Path) -> None:
    """Time every model under one engine (runs in its own process)."""
    import numpy as np

    from nucleoseg.inference.tiling import fit_grid
    from nucleoseg.models.precision import with_precision
    from nucleoseg.models.weights import load_model

    results = {}
    for name in models:
        model, card = load_model(name)
        inf = card.inference
        side = fit_grid((4096, 4096), inf.tile, inf.halo, inf.stride).tile[0]
        x = np.random.default_rng(0).random((1, side, side, 3), dtype=np.float32)
        for precision in ENGINES[engine][2]:
            if engine == "openvino":
                from nucleoseg.inference.openvino_engine import OpenVINOModel

                runner = OpenVINOModel(model, precision, checksum=card.sha256)
                call = runner
            else:
                from nucleoseg.inference.predict import predict_batch

                net = with_precision(model, precision)
                call = (lambda x, n=net: predict_batch(n, x)) if engine != "keras-openvino" \
                    else (lambda x, n=net: np.asarray(n.predict_on_batch(x)))
            t0 = time.perf_counter()
            y = np.asarray(call(x))
            first = time.perf_counter() - t0
            best = np.inf
            for _ in range(rounds):
                t0 = time.perf_counter()
                call(x)
                best = min(best, time.perf_counter() - t0)
            key = f"{name}/{precision}"
            path = ref / f"{name}.npy"
            if engine == "tensorflow" and precision == "float32":
                np.save(path, y)
            d = np.abs(y - np.load(path))
            results[key] = {"side": side, "first_s": first, "best_s": best,
                            "max_diff": float(d.max()), "mean_diff": float(d.mean())}
            print(f"  {engine} {key}: {best:.3f} s", file=sys.stderr, flush=True)
    if engine == "tensorflow":
        results["gemm"] = {p: _tf_gemm(p) for p in ("float32", "bfloat16")}
        results["flops"] = {name: _flops(name) for name in models}
    out.write_text(json.dumps(results))


def _tf_gemm(dtype: str, n: int = 2048, repeats: int = 5) -> float:
    """TensorFlow's matmul rate in ``dtype`` (GFLOP/s, best of ``repeats``)."""
    import tensorflow as tf

    a = tf.random.uniform((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    f = tf.function(lambda: tf.matmul(a, a))
    f().numpy()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f().numpy()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _flops(name: str) -> float:
    sys.path.insert(0, str(Path(__file__).parent))
    from throughput import flops_per_pixel

    from nucleoseg.models.weights import load_model

    return flops_per_pixel(load_model(name)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="default: every shipped model")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--ref", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.models, args.rounds, Path(args.out), Path(args.ref))
        return

    from nucleoseg.models.weights import shipped_models

    models = args.models or shipped_models()
    engines = ["tensorflow", *(e for e in args.engines if e != "tensorflow")]
    tmp = Path(tempfile.mkdtemp())
    results = {}
    for engine in engines:
        keras_backend, nucleoseg_engine, _ = ENGINES[engine]
        env = {**os.environ, "KERAS_BACKEND": keras_backend, "NUCLEOSEG_ENGINE":
               nucleoseg_engine, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
        out = tmp / f"{engine}.json"
        res = subprocess.run([sys.executable, __file__, *models, "--child", engine, "--out",
                              str(out), "--ref", str(tmp), "--rounds", str(args.rounds)],
                             env=env, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"# {engine}: failed: {res.stderr.strip().splitlines()[-1:]}")
            continue
        results[engine] = json.loads(out.read_text())
    tf = results["tensorflow"]
    gemm = tf["gemm"]
    print(f"{os.cpu_count()}-core CPU; TensorFlow 2048^3 matmul: float32 {gemm['float32']:.0f}"
          f" GFLOP/s, bfloat16 {gemm['bfloat16']:.0f} GFLOP/s; best of {args.rounds} calls "
          f"after a warm-up, one tile per call")
    print(f"{'model':<10}{'tile':>6} {'engine':<15}{'precision':<10}{'s/tile':>8}{'MP/s':>8}"
          f"{'vs tf f32':>10}{'GFLOP/s':>9}{'of GEMM':>8}{'max|d|':>9}{'mean|d|':>9}")
    for name in models:
        base = tf[f"{name}/float32"]["best_s"]
        kflop = tf["flops"][name] / 1e3
        for engine, res in results.items():
            for precision in ENGINES[engine][2]:
                r = res.get(f"{name}/{precision}")
                if r is None:
                    continue
                mps = r["side"] ** 2 / r["best_s"] / 1e6
                gflops = mps * kflop
                limit = gemm["bfloat16" if precision == "bfloat16" else "float32"]
                print(f"{name:<10}{r['side']:>6} {engine:<15}{precision:<10}{r['best_s']:>8.3f}"
                      f"{mps:>8.2f}{base / r['best_s']:>9.2f}x{gflops:>9.0f}"
                      f"{gflops / limit:>8.0%}{r['max_diff']:>9.1e}{r['mean_diff']:>9.1e}")
    counts = ", ".join(f"{m} {tf['flops'][m] / 1e3:.0f}" for m in models)
    print("vs tf f32 = speed-up over TensorFlow float32; GFLOP/s from TensorFlow's FLOP count "
          f"({counts} kFLOP/px); of GEMM "
          "= that rate over the matmul rate of the same precision (OpenVINO's Winograd "
          "convolutions do fewer FLOPs than counted, so it can pass 100 %)")


if __name__ == "__main__":
    main()
