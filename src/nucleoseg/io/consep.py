"""CoNSeP (colorectal H&E, 40x): images, instance labels and per-nucleus types.

Layout (see ``shared/data/consep/README.md``)::

    consep/{train,test}/images/<split>_<k>.png   (1000, 1000, 3) RGB
    consep/{train,test}/labels/<split>_<k>.tif   uint16 instance ids, 0 = background
    consep/{train,test}/types/<split>_<k>.csv    id,type,name  one row per nucleus

Types are HoVer-Net's merged four classes: 1 ``other``, 2 ``inflammatory``, 3 ``epithelial``,
4 ``spindle``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .images import ImageError, open_image

#: Class names by type number (index 0 is background).
CLASS_NAMES = ("background", "other", "inflammatory", "epithelial", "spindle")

#: Training tiles held out for validation. The staged copy carries no slide ids, so these
#: five were picked spread over the numbering before any training or threshold choice; the
#: test tiles are never used for a choice.
VALIDATION_TILES = ("train_2", "train_8", "train_13", "train_19", "train_25")


@dataclass(frozen=True)
class Tile:
    """One CoNSeP tile: name and the paths of its image, instance labels and types."""

    name: str
    image_path: Path
    labels_path: Path
    types_path: Path | None

    def image(self) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB."""
        return open_image(self.image_path)

    def labels(self) -> np.ndarray:
        """``(H, W) int32`` instance labels (0 = background)."""
        import tifffile

        try:
            lab = tifffile.imread(self.labels_path)
        except Exception as exc:  # tifffile raises several types for a damaged file
            raise ImageError(f"{self.labels_path.name}: cannot read labels ({exc})") from None
        if lab.ndim != 2 or lab.dtype.kind not in "iu":
            raise ImageError(f"{self.labels_path.name}: expected 2-D integer labels")
        return lab.astype(np.int32)

    def types(self) -> dict[int, int]:
        """``{instance id: type number}`` from the CSV (empty when there is none)."""
        if self.types_path is None:
            return {}
        return read_types(self.types_path)


def read_types(path: str | Path) -> dict[int, int]:
    """Read an ``id,type[,name]`` CSV into ``{id: type}``.

    Raises
    ------
    ImageError
        When the file lacks the ``id`` and ``type`` columns or holds a non-integer value.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"id", "type"} <= set(reader.fieldnames):
            raise ImageError(f"{path.name}: expected the columns id,type")
        try:
            return {int(row["id"]): int(row["type"]) for row in reader}
        except (TypeError, ValueError):
            raise ImageError(f"{path.name}: id and type must be integers") from None


def read_classes(path: str | Path) -> dict[int, str]:
    """``{id: class name}`` from a per-nucleus CSV: ``nucleoseg segment --measurements
    --classify`` output (``id,...,class``) or a CoNSeP-style ``id,type,name`` table (a bare
    ``type`` number is used as the name when there is no ``name``).

    Raises
    ------
    ImageError
        When there is no ``id`` column or no class column.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"file not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        key = next((k for k in ("class", "name", "type") if k in cols), None)
        if "id" not in cols or key is None:
            raise ImageError(f"{path.name}: expected an id column and a class, name or type "
                             "column")
        try:
            return {int(float(row["id"])): str(row[key]) for row in reader if row[key] != ""}
        except (TypeError, ValueError):
            raise ImageError(f"{path.name}: ids must be integers") from None


def type_map(labels: np.ndarray, types: dict[int, int]) -> np.ndarray:
    """Per-pixel type ``(H, W) uint8`` (0 background) from instance labels and their types."""
    lut = np.zeros(int(labels.max()) + 1, np.uint8)
    for i, t in types.items():
        if 0 < i < lut.size:
            lut[i] = t
    return lut[labels]


def consep_root(path: str | Path | None = None) -> Path:
    """The CoNSeP folder: ``path`` if it holds ``train``/``test``, else ``<root>/consep``."""
    from .monuseg import data_root

    root = data_root(path)
    if (root / "train" / "labels").is_dir() or (root / "test" / "labels").is_dir():
        return root
    return root / "consep"


def list_tiles(split: str, root: str | Path | None = None) -> list[Tile]:
    """List the CoNSeP tiles of ``split`` ("train", "test", "fit" or "val").

    "fit" and "val" divide the 27 training tiles: :data:`VALIDATION_TILES` are "val".

    Raises
    ------
    FileNotFoundError
        When the CoNSeP folder is not found (the message says where it looked).
    """
    from .datasets import check_split, select_split

    check_split(split)
    base = consep_root(root)
    folder = base / ("test" if split == "test" else "train")
    if not (folder / "images").is_dir():
        raise FileNotFoundError(
            f"CoNSeP data not found at {base} (set NUCLEOSEG_DATA or pass --data)"
        )
    tiles = []
    images = [p for p in (folder / "images").iterdir() if p.suffix in (".png", ".webp")]
    for img in sorted(images, key=_natural):  # .webp: the lossless copy carried to a GPU
        lab = folder / "labels" / f"{img.stem}.tif"
        if not lab.is_file():
            continue
        typ = folder / "types" / f"{img.stem}.csv"
        tiles.append(Tile(img.stem, img, lab, typ if typ.is_file() else None))
    return select_split(tiles, split, VALIDATION_TILES)


def _natural(p: Path) -> tuple:
    stem, _, num = p.stem.rpartition("_")
    return (stem, int(num)) if num.isdigit() else (p.stem, 0)
