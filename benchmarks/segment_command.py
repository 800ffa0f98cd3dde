"""Wall time of the `nucleoseg segment` command itself, per model, as a user runs it.

Writes one RGB TIFF (real MoNuSeg tiles mirrored side by side), then runs
``python -m nucleoseg.cli segment IMAGE -o LABELS.tif -m MODEL -q [EXTRA...]`` in a fresh
process per model: Python start, TensorFlow import, model load, TIFF read, tiling,
post-processing and the labels write are all inside the time. Because it only uses the
command line, the same script times an older checkout too (``PYTHONPATH=old/src``), which is
how the README's before/after table was made:

    python benchmarks/segment_command.py --size 4096 [--extra --precision float32] [MODEL ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="default: every shipped model")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--data")
    ap.add_argument("--label", default="", help="a name for this configuration in the table")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                    help="more arguments for `nucleoseg segment` (must come last)")
    args = ap.parse_args()
    from nucleoseg.models.weights import shipped_models

    args.models = args.models or shipped_models()

    import tifffile
    from tiling import big_image

    image = big_image(args.size, args.data)
    mp = image.shape[0] * image.shape[1] / 1e6
    tmp = Path(tempfile.mkdtemp())
    tifffile.imwrite(tmp / "image.tif", image)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    print(f"image {args.size}x{args.size} ({mp:.1f} MP); {args.label}")
    print(f"{'model':<10}{'seconds':>9}{'MP/s':>8}  nuclei")
    for name in args.models:
        cmd = [sys.executable, "-m", "nucleoseg.cli", "segment", str(tmp / "image.tif"),
               "-o", str(tmp / "labels.tif"), "-m", name, *args.extra]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if done.returncode:
            print(f"{name:<10} failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        nuclei = done.stdout.strip().splitlines()[-1].split(":")[1].split("nuclei")[0].strip()
        print(f"{name:<10}{seconds:>9.1f}{mp / seconds:>8.3f}  {nuclei}")


if __name__ == "__main__":
    main()
