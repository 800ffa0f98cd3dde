"""The correct-and-retrain loop on a lab the base model never saw: before/after on CoNSeP test.

Base models: the MoNuSeg-only weights of commit 9b536a9 (the shipped weights before CoNSeP
joined training), extracted from git into a temporary folder for this benchmark only.
"Corrected" pairs: k CoNSeP *training* tiles with their ground truth (never the validation
or test tiles), or a 500x500 crop of one (what a user corrects in one sitting). Each
configuration fine-tunes with :func:`nucleoseg.training.finetune.fine_tune` (the core of the
panel and of ``nucleoseg finetune``) and is evaluated on the 5 CoNSeP validation tiles (held
out of the training tiles; the defaults are chosen on these) and on the 14 CoNSeP test tiles
(the table the issue asks for; pooled Dice, AJI, object F1, and how many nuclei are
predicted vs true).

    python benchmarks/finetune.py --models unet --configs default k1 k4 crop frozen
    python benchmarks/finetune.py --json benchmarks/results/finetune_cpu.json

Prints one table; ``--json`` also writes every row. Seconds are this machine's wall time of
the fine-tune alone (loading and evaluation excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BASE_COMMIT = "9b536a9"
#: CoNSeP training tiles used as the user's corrections, in order (k = 1, 2, 4 take the
#: first k); none is a validation tile (``nucleoseg.io.consep.VALIDATION_TILES``).
CORRECTED = ("train_1", "train_10", "train_16", "train_22")
#: The fine-tune settings of the panel and ``nucleoseg finetune`` (their defaults).
DEFAULT = {"epochs": 5, "steps_per_epoch": 20, "batch_size": 4, "learning_rate": 1e-4,
           "freeze_encoder": False}
CONFIGS = {
    "default": {"k": 2},
    "k1": {"k": 1},
    "k4": {"k": 4},
    "crop": {"k": 1, "crop": 500},
    "frozen": {"k": 2, "freeze_encoder": True},
    "lr3e-4": {"k": 2, "learning_rate": 3e-4},
    "lr1e-3": {"k": 2, "learning_rate": 1e-3},
    "steps2x": {"k": 2, "epochs": 10},
}


def extract_base(name: str, folder: Path, repo: Path) -> Path:
    """``<folder>/<name>.keras`` + card from the MoNuSeg-only commit."""
    for suffix in (".keras", ".json"):
        data = subprocess.run(["git", "-C", str(repo), "show",
                               f"{BASE_COMMIT}:weights/{name}{suffix}"],
                              check=True, capture_output=True).stdout
        (folder / f"{name}{suffix}").write_bytes(data)
    return folder / f"{name}.keras"


def evaluate(model: Path, tiles) -> dict:
    from nucleoseg.evaluation.metrics import Counts, counts
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter

    seg = Segmenter.load(str(model))
    total, predicted, true = Counts(), 0, 0
    for image, truth in tiles:
        pred = run(seg.segment(image))
        total = total + counts(pred, truth)
        predicted += len(np.unique(pred)) - 1
        true += len(np.unique(truth)) - 1
    s = total.scores()
    return {"dice": s["dice"], "aji": s["aji"], "object_f1": s["object_f1"],
            "precision": s["precision"], "recall": s["recall"], "nuclei": predicted,
            "true_nuclei": true, "compute_precision": seg.precision}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["unet", "segnet", "deeplabv3",
                                                     "se_unet", "unet_lite"])
    ap.add_argument("--configs", nargs="+", default=["default"], choices=list(CONFIGS))
    ap.add_argument("--data", default=os.environ.get("NUCLEOSEG_DATA"))
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)

    from nucleoseg.io.consep import list_tiles
    from nucleoseg.training.finetune import fine_tune

    repo = Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix="nucleoseg-finetune-bench-"))
    os.environ["NUCLEOSEG_USER_MODELS"] = str(work / "user")
    test = [(t.image(), t.labels()) for t in list_tiles("test", args.data)]
    val_tiles = [(t.image(), t.labels()) for t in list_tiles("val", args.data)]
    train = {t.name: t for t in list_tiles("fit", args.data)}
    print(f"# python benchmarks/finetune.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; base = "
          f"MoNuSeg-only weights of commit {BASE_COMMIT}; corrected = CoNSeP {CORRECTED}; "
          f"evaluated on {len(test)} CoNSeP test tiles (pooled)")
    head = (f"{'model':<10}{'config':<9}{'pairs':>10}{'frz':>4}{'lr':>8}{'steps':>6}"
            f"{'Dice':>14}{'AJI':>14}{'obj F1':>14}{'nuclei':>13}{'held-out':>10}{'s':>6}")
    print(head)
    rows = []
    for name in args.models:
        base = extract_base(name, work, repo)
        before = evaluate(base, test)
        before_val = evaluate(base, val_tiles)
        for config in args.configs:
            spec = {**DEFAULT, **CONFIGS[config]}
            k, crop = spec.pop("k"), spec.pop("crop", None)
            pairs = []
            for tile_name in CORRECTED[:k]:
                tile = train[tile_name]
                image, labels = tile.image(), tile.labels()
                if crop:
                    image, labels = image[:crop, :crop], labels[:crop, :crop]
                pairs.append((image, labels))
            t0 = time.perf_counter()
            path = fine_tune(str(base), pairs, f"{name}-{config}", out_dir=work / "user",
                             **spec)
            seconds = time.perf_counter() - t0
            after = evaluate(path, test)
            after_val = evaluate(path, val_tiles)
            card = json.loads(path.with_suffix(".json").read_text())
            val = card["fine_tune"]["validation"] or {}
            row = {"model": name, "config": config, "pairs": k, "crop": crop, **spec,
                   "seconds": round(seconds, 1), "before": before, "after": after,
                   "val_before": before_val, "val_after": after_val,
                   "held_out_improved": val.get("improved"),
                   "held_out_before": val.get("before"), "held_out_after": val.get("after"),
                   "best_epoch": val.get("best_epoch"), "postprocess": card["postprocess"]}
            rows.append(row)
            size = f"{k}x{crop}²" if crop else f"{k}x1000²"
            print(f"{name:<10}{config:<9}{size:>10}{'y' if spec['freeze_encoder'] else 'n':>4}"
                  f"{spec['learning_rate']:>8.0e}{spec['epochs'] * spec['steps_per_epoch']:>6}"
                  f"{before['dice']:>7.3f}>{after['dice']:.3f}"
                  f"{before['aji']:>7.3f}>{after['aji']:.3f}"
                  f"{before['object_f1']:>7.3f}>{after['object_f1']:.3f}"
                  f"{before['nuclei']:>6}>{after['nuclei']:<6}"
                  f"{'better' if row['held_out_improved'] else 'worse':>10}{seconds:>6.0f}"
                  f"   val Dice {before_val['dice']:.3f}>{after_val['dice']:.3f} AJI "
                  f"{before_val['aji']:.3f}>{after_val['aji']:.3f}", flush=True)
            path.unlink()
    print(f"true nuclei in the test tiles: {rows[0]['before']['true_nuclei'] if rows else '-'}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
