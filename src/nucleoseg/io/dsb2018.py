"""2018 Data Science Bowl sample folders: ``<id>/images/<id>.png`` + ``<id>/masks/*.png``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .images import ImageError, read_array, to_rgb_uint8


def read_sample(folder: str | Path, grayscale: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read one DSB2018 sample.

    Parameters
    ----------
    folder : str or pathlib.Path
        The sample folder ``<id>/`` holding ``images/`` and ``masks/``.
    grayscale : bool
        Convert the image to luminance (replicated to 3 channels), as the prior-art DSB UNet
        did, so fluorescence and brightfield samples look alike.

    Returns
    -------
    image : numpy.ndarray
        ``(H, W, 3) uint8``.
    labels : numpy.ndarray
        ``(H, W) int32``; mask files sorted by name get ids 1, 2, ... (names are hashes, so
        the order carries no meaning but is reproducible).
    """
    folder = Path(folder)
    images = sorted((folder / "images").glob("*.png"))
    if len(images) != 1:
        raise ImageError(f"{folder} should hold exactly one images/*.png, found {len(images)}")
    image = to_rgb_uint8(read_array(images[0]), name=images[0].name)
    if grayscale:
        lum = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        image = np.repeat(np.round(lum).astype(np.uint8)[..., None], 3, axis=-1)
    labels = np.zeros(image.shape[:2], dtype=np.int32)
    for k, mask_path in enumerate(sorted((folder / "masks").glob("*.png")), start=1):
        mask = read_array(mask_path)
        if mask.shape[:2] != labels.shape:
            raise ImageError(f"mask {mask_path.name} has shape {mask.shape}, image {labels.shape}")
        if mask.ndim == 3:
            mask = mask[..., 0]
        labels[(mask > 0) & (labels == 0)] = k
    return image, labels


def list_samples(root: str | Path) -> list[Path]:
    """Sample folders under ``root`` (a ``stage1_train`` folder or its parent)."""
    root = Path(root)
    if (root / "stage1_train").is_dir():
        root = root / "stage1_train"
    return sorted(p for p in root.iterdir() if (p / "images").is_dir())


@dataclass(frozen=True)
class Sample:
    """One DSB2018 sample as a labelled tile (name = the sample id)."""

    name: str
    folder: Path

    def image(self) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB."""
        return read_sample(self.folder)[0]

    def labels(self) -> np.ndarray:
        """``(H, W) int32`` instance labels."""
        return read_sample(self.folder)[1]


def he_samples(split: str, root: str | Path | None = None) -> list[Sample]:
    """The stained-brightfield (H&E-like, colour) samples: H&E from labs in neither
    training set, so only a "test" split (every other split is empty: nothing trains on
    them). Grey samples (fluorescence, grey brightfield) are left out.

    Raises
    ------
    FileNotFoundError
        When no DSB2018 folder is found under ``root``.
    """
    from .datasets import check_split
    from .monuseg import data_root

    check_split(split)
    base = data_root(root)
    if not (base / "stage1_train").is_dir() and (base / "dsb2018").is_dir():
        base = base / "dsb2018"
    if not base.is_dir():
        raise FileNotFoundError(f"DSB2018 data not found at {base} (set NUCLEOSEG_DATA)")
    if split != "test":
        return []
    out = []
    for folder in list_samples(base):
        image = read_sample(folder)[0].astype(np.int16)
        if np.abs(image[..., 0] - image[..., 1]).mean() > 2:  # colour, not grey
            out.append(Sample(folder.name, folder))
    return out
