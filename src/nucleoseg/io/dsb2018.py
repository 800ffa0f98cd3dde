"""2018 Data Science Bowl sample folders: ``<id>/images/<id>.png`` + ``<id>/masks/*.png``."""

from __future__ import annotations

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
