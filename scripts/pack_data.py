"""Pack the training tiles into a small lossless copy for a GPU machine (64 MiB a call).

Images become lossless WebP. MoNuSeg's ground truth becomes uint16 instance-mask PNGs
rasterised with nucleoseg's own XML convention, so the copy trains exactly like the
original (~43 MB). CoNSeP keeps its labels TIFFs and type CSVs (~30 MB). The two together
exceed one call's 64 MiB; their fit tiles alone (``--fit``: the validation tiles left out,
~60 MB) fit in one call beside the code (``scripts/device_kit.py stage``). Usage:

    python scripts/pack_data.py monuseg [DATA] OUT [--fit]  # e.g. ../shared/data .gpu_data/monuseg
    python scripts/pack_data.py consep [DATA] OUT [--fit]   # e.g. ../shared/data .gpu_data/consep
"""

import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def _webp(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image).save(path, lossless=True, quality=100, method=4)


def pack_monuseg(data: str | None, out: Path, split: str = "train",
                 first: int | None = None) -> None:
    from nucleoseg.io.monuseg import list_tiles

    (out / "train" / "images").mkdir(parents=True, exist_ok=True)
    (out / "train" / "instance_masks").mkdir(parents=True, exist_ok=True)
    for tile in list_tiles(split, data)[:first]:
        _webp(tile.image(), out / "train" / "images" / f"{tile.name}.webp")
        labels = tile.labels()
        assert labels.max() < 65536
        Image.fromarray(labels.astype(np.uint16)).save(
            out / "train" / "instance_masks" / f"{tile.name}.png")
        print(tile.name, labels.max())


def pack_consep(data: str | None, out: Path, split: str = "train",
                first: int | None = None) -> None:
    from nucleoseg.io.consep import list_tiles

    for sub in ("images", "labels", "types"):
        (out / "train" / sub).mkdir(parents=True, exist_ok=True)
    for tile in list_tiles(split, data)[:first]:
        _webp(tile.image(), out / "train" / "images" / f"{tile.name}.webp")
        shutil.copyfile(tile.labels_path, out / "train" / "labels" / tile.labels_path.name)
        if tile.types_path is not None:
            shutil.copyfile(tile.types_path, out / "train" / "types" / tile.types_path.name)
        print(tile.name)


def main(argv: list[str]) -> None:
    split = "fit" if "--fit" in argv else "train"
    kind, *rest = [a for a in argv if a != "--fit"]
    data, out = (rest[0], rest[1]) if len(rest) == 2 else (None, rest[0])
    {"monuseg": pack_monuseg, "consep": pack_consep}[kind](data, Path(out), split)


if __name__ == "__main__":
    main(sys.argv[1:])
