"""Whole-slide throughput and memory: synthetic slides of growing size built from real tiles.

For each side (default 4096, 8192, 16384) the script stitches MoNuSeg training tiles into a
pyramidal OME-TIFF (JPEG tiles, like a scanner's), then segments it block-wise in a fresh
child process (the same code as ``nucleoseg segment SLIDE -o OUT.zarr``) and prints wall
time, megapixels per second and the child's peak RSS. Time should grow linearly with pixels
and peak RSS stay flat.

    python benchmarks/wsi.py [--sizes 4096 8192 16384] [--model unet] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_slide(path: Path, side: int, data: str | None) -> float:
    """Stitch training tiles (mirrored in turn, so neighbours differ) into ``side``² pixels."""
    from nucleoseg.io.images import write_pyramid_tiff
    from nucleoseg.io.monuseg import list_tiles

    tiles = [t.image() for t in list_tiles("train", data)]
    n = -(-side // 1000)
    rows = []
    for r in range(n):
        row = []
        for c in range(n):
            t = tiles[(r * n + c) % len(tiles)]
            row.append(t[::-1] if (r + c) % 2 else t)
        rows.append(np.concatenate(row, axis=1)[:, :side])
    image = np.concatenate(rows, axis=0)[:side]
    levels = max(1, int(np.log2(side / 1024)) + 1)
    t0 = time.perf_counter()
    write_pyramid_tiff(path, image, mpp=0.25, levels=levels, tile=512, compression="jpeg")
    return time.perf_counter() - t0


def child(slide: str, out: str, model: str, workers: int, options: str) -> None:
    """Run in a fresh process: plan + segment one slide, print a JSON summary."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.wsi import plan_slide, segment_slide

    t0 = time.perf_counter()
    job = plan_slide(slide, out, model, **json.loads(options))
    summary = run(segment_slide(job, workers=workers))
    summary["wall_in_process"] = time.perf_counter() - t0
    summary["block"] = job.block
    print("SUMMARY " + json.dumps(summary, default=str))


def measure(slide: Path, out: Path, model: str, workers: int, options: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", str(slide), str(out), model, str(workers),
           json.dumps(options)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"segmenting {slide.name} failed:\n{stdout}")
    summary = json.loads(stdout.split("SUMMARY ", 1)[1])
    summary["wall"] = wall
    summary["peak_rss_gb"] = usage.ru_maxrss / 1024**2  # Linux: kilobytes
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    ap.add_argument("--model", default="unet")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", help="data folder (default $NUCLEOSEG_DATA or ../shared/data)")
    ap.add_argument("--tmp", help="scratch folder (default: system temp)")
    ap.add_argument("--block", type=int, help="block side (default: the slide path's)")
    ap.add_argument("--batch-size", type=int, help="tiles per forward pass (default: card)")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        slide, out, model, workers, options = args.child
        child(slide, out, model, int(workers), options)
        return
    options = {k: v for k, v in (("block", args.block), ("batch_size", args.batch_size))
               if v is not None}
    scratch = Path(tempfile.mkdtemp(prefix="nucleoseg-wsi-", dir=args.tmp))
    rows = []
    try:
        for side in args.sizes:
            slide = scratch / f"slide_{side}.ome.tif"
            build = build_slide(slide, side, args.data)
            s = measure(slide, scratch / f"slide_{side}.zarr", args.model, args.workers,
                        options)
            mp = side * side / 1e6
            rows.append((side, mp, s["blocks"], s["n_nuclei"], s["wall"], s["seconds"],
                         mp / s["seconds"], s["peak_rss_gb"], build))
            print(f"  {side}² done: {s['wall']:.1f} s", file=sys.stderr, flush=True)
            shutil.rmtree(scratch / f"slide_{side}.zarr", ignore_errors=True)
            slide.unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"nucleoseg whole-slide benchmark: model {args.model}, {args.workers} local "
          f"worker thread(s), {os.cpu_count()} CPU(s), options {options or 'default'}, "
          f"MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', 'unset')}")
    print("| side | MP | blocks | nuclei | wall s (process) | segment s | MP/s | "
          "s per MP | peak RSS GB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for side, mp, blocks, nuclei, wall, seg, mps, rss, _ in rows:
        print(f"| {side} | {mp:.1f} | {blocks} | {nuclei} | {wall:.1f} | {seg:.1f} | "
              f"{mps:.3f} | {seg / mp:.3f} | {rss:.2f} |")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"time ratio {b[5] / a[5]:.2f} for a pixel ratio of {b[1] / a[1]:.1f} "
              f"(linear: equal); peak RSS ratio {b[7] / a[7]:.2f}")


if __name__ == "__main__":
    main()
