"""Write the final MoNuSeg test table (from `nucleoseg benchmark --json`) into the model cards.

The test tiles are used for this report only: thresholds, post-processing and epochs were
chosen on the validation tiles before. Usage:

    NUCLEOSEG_WRITE_SHIPPED=1 python scripts/record_test_metrics.py \
        benchmarks/results/monuseg_test_cpu.json
"""

import json
import sys
from pathlib import Path

from nucleoseg.io.atomic import atomic_write_bytes
from nucleoseg.models.weights import shipped_dir

rows = json.loads(Path(sys.argv[1]).read_text())
for row in rows:
    card_path = shipped_dir() / f"{row['model']}.json"
    if not card_path.is_file():
        continue
    card = json.loads(card_path.read_text())
    card["test"] = {k: round(v, 4) for k, v in row.items()
                    if isinstance(v, float) and k != "seconds_per_tile"}
    card["test"]["tiles"] = len(row["per_image"])
    card["test"]["seconds_per_tile_cpu"] = round(row["seconds_per_tile"], 2)
    card["test"]["note"] = ("official 14 MoNuSeg 2018 test tiles, XML ground truth, metrics "
                            "pooled over the set; evaluated once, after all choices were made "
                            "on the validation tiles")
    atomic_write_bytes(card_path, (json.dumps(card, indent=2) + "\n").encode())
    print(card_path.name, card["test"]["dice"], card["test"]["aji"])
