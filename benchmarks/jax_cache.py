"""What JAX's persistent compilation cache saves a ``nucleoseg segment --backend jax`` run.

Each run is a fresh process (what a CLI call, a dask worker or a new napari session is) on
the first MoNuSeg *training* tile, float32 on the CPU. Ways, taking turns each round:
"off" (``NUCLEOSEG_JAX_CACHE=0``), "cold" (an empty cache folder: the first run on a
machine, which also writes the cache) and "warm" (the folder the cold run of that round
wrote). Prints the best and every wall time per way, the cache's entries and size, and
whether the labels are identical across ways. Usage:

    python benchmarks/jax_cache.py [--data DIR] [--rounds 2] [MODEL ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def segment_once(image: Path, model: str, out: Path, cache: Path, cache_on: bool) -> float:
    """Wall seconds of one ``nucleoseg segment`` process on the JAX backend."""
    env = {**os.environ, "NUCLEOSEG_CACHE": str(cache), "JAX_PLATFORMS": "cpu",
           "NUCLEOSEG_JAX_CACHE": "1" if cache_on else "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
        env.pop(name, None)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nucleoseg.cli", "segment", str(image), "-o",
                    str(out), "--model", model, "--backend", "jax", "--device", "cpu",
                    "--precision", "float32", "-q"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["unet"])
    ap.add_argument("--data", default=os.environ.get("NUCLEOSEG_DATA", "../shared/data"))
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    from nucleoseg.io.monuseg import list_tiles

    tile = list_tiles("train", Path(args.data))[0]
    print(f"nucleoseg segment --backend jax --device cpu --precision float32, one fresh "
          f"process per run, MoNuSeg train tile {tile.name} ({os.cpu_count()} cores)")
    print(f"{'model':10} {'way':5} {'best s':>7}  runs; cache")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        import tifffile

        image = tmp / "tile.tif"
        tifffile.imwrite(image, tile.image())
        for model in args.models:
            times: dict[str, list[float]] = {"off": [], "cold": [], "warm": []}
            labels: dict[str, np.ndarray] = {}
            size = entries = 0
            for r in range(args.rounds):
                cache = tmp / f"{model}_cache_{r}"
                for way in times:
                    out = tmp / f"{model}_{way}.npy"
                    times[way].append(segment_once(image, model, out,
                                                   tmp / "off" if way == "off" else cache,
                                                   way != "off"))
                    labels[way] = np.load(out)
                files = [f for f in (cache / "jax").rglob("*") if f.is_file()]
                entries, size = len(files), sum(f.stat().st_size for f in files)
            for way, t in times.items():
                note = f"; {entries} entries, {size / 2**20:.1f} MiB" if way == "warm" else ""
                print(f"{model:10} {way:5} {min(t):7.1f}  "
                      f"{' '.join(f'{x:.1f}' for x in t)}{note}")
            same = all(np.array_equal(labels["off"], labels[w]) for w in ("cold", "warm"))
            print(f"{model:10} labels identical across ways: {same} "
                  f"({int(labels['off'].max())} nuclei)")


if __name__ == "__main__":
    main()
