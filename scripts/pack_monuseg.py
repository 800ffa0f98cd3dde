"""Pack the MoNuSeg training tiles into a small lossless copy for a GPU machine.

Images become lossless WebP, ground truth becomes uint16 instance-mask PNGs rasterised with
nucleoseg's own XML convention (so the copy trains exactly like the original). Usage:

    python scripts/pack_monuseg.py [DATA] OUT   # e.g. ../shared/data .gpu_data/monuseg
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from nucleoseg.io.monuseg import list_tiles


def main(argv: list[str]) -> None:
    data, out = (argv[0], argv[1]) if len(argv) == 2 else (None, argv[0])
    out = Path(out)
    (out / "train" / "images").mkdir(parents=True, exist_ok=True)
    (out / "train" / "instance_masks").mkdir(parents=True, exist_ok=True)
    for tile in list_tiles("train", data):
        Image.fromarray(tile.image()).save(
            out / "train" / "images" / f"{tile.name}.webp", lossless=True, quality=100, method=4
        )
        labels = tile.labels()
        assert labels.max() < 65536
        Image.fromarray(labels.astype(np.uint16)).save(
            out / "train" / "instance_masks" / f"{tile.name}.png"
        )
        print(tile.name, labels.max())


if __name__ == "__main__":
    main(sys.argv[1:])
