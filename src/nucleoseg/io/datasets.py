"""The labelled H&E data sets the recipe and the benchmark read, by name.

A data root (``--data``, ``$NUCLEOSEG_DATA`` or ``../shared/data``) holds one folder per data
set: ``monuseg/``, ``consep/``. Each has the splits "train", "test", "fit" and "val" ("fit" and
"val" divide "train"; "test" is only for final tables).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

#: Data sets with instance labels, in the order tables list them.
DATASETS = ("monuseg", "consep")
#: H&E from labs in neither training set (the 20 colour DSB2018 samples): benchmarked on
#: request (``nucleoseg benchmark --datasets dsb2018_he``), never trained on or tuned with.
HELD_OUT = ("dsb2018_he",)


class LabelledTile(Protocol):
    """What every data set's tile offers."""

    name: str

    def image(self) -> np.ndarray: ...

    def labels(self) -> np.ndarray: ...


def list_tiles(dataset: str, split: str, root: str | Path | None = None) -> list[LabelledTile]:
    """Tiles of ``split`` of ``dataset`` under the data root ``root``.

    Raises
    ------
    ValueError
        For an unknown data set or split.
    FileNotFoundError
        When the data set's folder is missing.
    """
    if dataset == "monuseg":
        from .monuseg import list_tiles as monuseg_tiles

        return monuseg_tiles(split, _child(root, "monuseg"))
    if dataset == "consep":
        from .consep import list_tiles as consep_tiles

        return consep_tiles(split, _child(root, "consep"))
    if dataset == "dsb2018_he":
        from .dsb2018 import he_samples

        return he_samples(split, _child(root, "dsb2018"))
    raise ValueError(f"unknown data set {dataset!r}; choose from {', '.join(DATASETS)}")


SPLITS = ("train", "test", "fit", "val")


def check_split(split: str) -> None:
    """Raise ValueError for a split name other than :data:`SPLITS`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use train, test, fit or val")


def select_split(tiles: list, split: str, validation: tuple[str, ...]) -> list:
    """"fit" and "val" divide the training tiles by the data set's validation names; other
    splits are returned as they are."""
    if split == "fit":
        return [t for t in tiles if t.name not in validation]
    if split == "val":
        return [t for t in tiles if t.name in validation]
    return tiles


def _child(root: str | Path | None, name: str) -> Path | None:
    """``root/name`` when ``root`` is a data root holding it, else ``root`` unchanged."""
    if root is None:
        return None
    root = Path(root)
    return root / name if (root / name).is_dir() else root


def parse_datasets(text: str | None, held_out: bool = False) -> list[str]:
    """``"monuseg,consep"`` to a checked list (None or ``"all"``: every training data set);
    ``held_out`` also accepts :data:`HELD_OUT` (for benchmarks, never for training)."""
    if not text or text == "all":
        return list(DATASETS)
    known = DATASETS + HELD_OUT if held_out else DATASETS
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ValueError(f"unknown data set {', '.join(bad) or text!r}; "
                         f"choose from {', '.join(known)}")
    return list(dict.fromkeys(names))


def present(root: str | Path | None = None) -> list[str]:
    """The data sets found under ``root`` (those whose "train" or "test" split lists)."""
    found = []
    for name in DATASETS:
        for split in ("test", "train"):
            try:
                if list_tiles(name, split, root):
                    found.append(name)
                    break
            except FileNotFoundError:
                continue
    return found
