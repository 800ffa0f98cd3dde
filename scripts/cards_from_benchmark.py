"""Record a `nucleoseg benchmark --json` run (both data sets) in the shipped model cards.

    nucleoseg benchmark --data ../shared/data --json T.json > T.txt
    NUCLEOSEG_WRITE_SHIPPED=1 python scripts/cards_from_benchmark.py T.json [--main MODEL ...]

Every shipped model's card gets ``test_by_dataset`` ({data set: pooled test metrics}); the
models named with ``--main`` (retrained ones) also get their MoNuSeg row as ``test``. A run
of one data set (``--datasets consep``: a list of rows) is recorded with ``--dataset NAME``,
replacing that entry and keeping the others. Cards are rewritten atomically; the ``.keras``
files and their checksums are untouched.
"""

import argparse
import json
from pathlib import Path

from nucleoseg.io.atomic import atomic_write_bytes
from nucleoseg.models.weights import check_not_shipped, shipped_dir

KEYS = ("dice", "f1", "iou", "accuracy", "precision", "recall", "object_f1", "pq", "aji",
        "merged", "split",
        "dice_mean", "aji_mean")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("--main", nargs="*", default=[], help="models whose `test` is replaced")
    ap.add_argument("--dataset", help="the json holds this one data set's rows (a list): "
                    "replace only its entry")
    args = ap.parse_args()
    tables = json.loads(Path(args.json).read_text())
    if isinstance(tables, list) != (args.dataset is not None):
        raise SystemExit("a list of rows (one data set) needs --dataset NAME, and only it")
    if args.dataset is not None:
        tables = {args.dataset: tables}
    check_not_shipped(shipped_dir())  # needs NUCLEOSEG_WRITE_SHIPPED=1
    for card_path in sorted(shipped_dir().glob("*.json")):
        card = json.loads(card_path.read_text())
        rows = {ds: next((r for r in t if r["model"] == card_path.stem), None)
                for ds, t in tables.items()}
        if not any(rows.values()):
            continue
        by_ds = dict(card.get("test_by_dataset", {})) if args.dataset else {}
        for ds, r in rows.items():
            if r is None:
                continue
            entry = {k: round(r[k], 4) for k in KEYS}
            entry.update(tiles=len(r["per_image"]),
                         seconds_per_tile_cpu=round(r["seconds_per_tile"], 2),
                         compute_precision=r.get("compute_precision"),
                         engine=r.get("engine", "keras"))
            if "types" in r:
                entry["types"] = {k: (round(v, 4) if isinstance(v, float) else v)
                                  for k, v in r["types"].items()}
            by_ds[ds] = entry
        card["test_by_dataset"] = by_ds
        if card_path.stem in args.main and "monuseg" in by_ds:
            card["test"] = {**by_ds["monuseg"],
                            "note": "official 14 MoNuSeg 2018 test tiles, XML ground truth, "
                                    "pooled; evaluated after all choices were made on the "
                                    "validation tiles"}
        atomic_write_bytes(card_path, (json.dumps(card, indent=2) + "\n").encode())
        print("updated", card_path.name, sorted(by_ds))


if __name__ == "__main__":
    main()
