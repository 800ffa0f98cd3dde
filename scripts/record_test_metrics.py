"""Write the final MoNuSeg test table (from `nucleoseg benchmark --json`) into the model cards.

The test tiles are used for this report only: thresholds, post-processing, tiling, precision
and epochs were chosen on the validation tiles before. Rows computed in float32 become the
card's ``test`` entry; rows computed in another precision are stored under
``test[<precision>]``. Usage:

    NUCLEOSEG_WRITE_SHIPPED=1 python scripts/record_test_metrics.py \
        benchmarks/results/monuseg_test_cpu.json [benchmarks/results/monuseg_test_cpu_bf16.json]
"""

import json
import sys
from pathlib import Path

from nucleoseg.io.atomic import atomic_write_bytes
from nucleoseg.models.weights import shipped_dir

NOTE = ("official 14 MoNuSeg 2018 test tiles, XML ground truth, metrics pooled over the set; "
        "evaluated after all choices were made on the validation tiles (re-run whenever a "
        "default that changes results changed, for a reason measured on validation)")

rows = [row for path in sys.argv[1:] for row in json.loads(Path(path).read_text())]
rows.sort(key=lambda r: r.get("compute_precision", "float32") != "float32")  # float32 first
for row in rows:
    card_path = shipped_dir() / f"{row['model']}.json"
    if not card_path.is_file():
        continue
    card = json.loads(card_path.read_text())
    scores = {k: round(v, 4) for k, v in row.items()
              if isinstance(v, float) and k != "seconds_per_tile"}
    scores["tiles"] = len(row["per_image"])
    scores["seconds_per_tile_cpu"] = round(row["seconds_per_tile"], 2)
    precision = row.get("compute_precision", "float32")
    if precision == "float32":
        card["test"] = {**scores, "compute_precision": "float32", "note": NOTE}
    else:
        card["test"][precision] = scores
    atomic_write_bytes(card_path, (json.dumps(card, indent=2) + "\n").encode())
    print(card_path.name, precision, scores["dice"], scores["aji"])
