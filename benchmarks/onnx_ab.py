"""Would an exported ONNX Runtime path beat the Keras/TensorFlow forward pass on this machine?

Per shipped model, on one tile of its card's size: the Keras model exported with
``model.export(format="onnx")`` (tf2onnx) and run by ONNX Runtime's CPU provider (float32,
all cores), against the same model in TensorFlow in float32 and in the default precision
(``auto``: bfloat16 on CPUs that compute it natively). Best of ``--rounds`` interleaved
calls after one warm-up each; the largest probability difference checks the export.
Needs ``pip install onnxruntime tf2onnx onnx`` (not project dependencies):

    python benchmarks/onnx_ab.py [--side 2112] [--rounds 3] [MODEL ...]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="default: every shipped model")
    ap.add_argument("--side", type=int, help="tile side (default: the card's tile, fitted "
                    "to a 4096 image as in benchmarks/throughput.py)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import keras
    import numpy as np
    import onnxruntime as ort

    from nucleoseg.inference.predict import predict_batch
    from nucleoseg.inference.tiling import fit_grid
    from nucleoseg.models.precision import resolve_precision, with_precision
    from nucleoseg.models.weights import load_model, shipped_models

    tmp = Path(tempfile.mkdtemp())
    print(f"onnxruntime {ort.__version__}, CPU provider, {os.cpu_count()} threads; "
          f"best of {args.rounds} interleaved calls, seconds per tile")
    print(f"{'model':<10}{'tile':>10}{'tf float32':>12}{'ort float32':>13}{'ort/tf':>8}"
          f"{'tf default':>12}{'ort/default':>12}{'max |diff|':>12}")
    for name in args.models or shipped_models():
        model, card = load_model(name)
        inf = card.inference
        side = args.side or fit_grid((4096, 4096), inf.tile, inf.halo, inf.stride).tile[0]
        path = tmp / f"{name}.onnx"
        model.export(str(path), format="onnx", verbose=False, input_signature=[
            keras.InputSpec(shape=(None, None, None, 3), dtype="float32")])
        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        precision = resolve_precision("auto", card)
        default = with_precision(load_model(name)[0], precision)
        x = np.random.default_rng(0).random((1, side, side, 3), dtype=np.float32)
        runs = {
            "tf": lambda m=model, x=x: predict_batch(m, x),
            "ort": lambda s=session, x=x, feed=feed: s.run(None, {feed: x})[0],
            "default": lambda m=default, x=x: predict_batch(m, x),
        }
        outputs = {k: f() for k, f in runs.items()}  # warm-up (traces, sessions)
        best = dict.fromkeys(runs, np.inf)
        for _ in range(args.rounds):
            for key, f in runs.items():
                t0 = time.perf_counter()
                f()
                best[key] = min(best[key], time.perf_counter() - t0)
        diff = float(np.abs(outputs["ort"] - outputs["tf"]).max())
        print(f"{name:<10}{side:>10}{best['tf']:>12.2f}{best['ort']:>13.2f}"
              f"{best['ort'] / best['tf']:>8.2f}{best['default']:>12.2f}"
              f"{best['ort'] / best['default']:>12.2f}{diff:>12.1e}  ({precision})")


if __name__ == "__main__":
    main()
