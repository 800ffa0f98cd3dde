"""Stain normalisation (Reinhard et al. 2001): match an image's colour statistics to the
training data's.

Each channel of the image in CIELAB is shifted and scaled so that its mean and standard
deviation over the *tissue* pixels (not the white background) equal :data:`TARGET`, the
statistics of the MoNuSeg + CoNSeP fit tiles (:func:`lab_statistics` over them; the
validation and test tiles were not used). Background pixels are mapped the same way, so the
image stays continuous. Measured on the validation tiles (``nucleoseg benchmark --split val
--stain reinhard``, ``benchmarks/results/stain_val_cpu.txt``) it lowered Dice and AJI of
every shipped model on both data sets (default UNet, CoNSeP: Dice 0.837 -> 0.812, AJI
0.471 -> 0.448; the models were trained with strong stain augmentation instead), so it is
off by default: an option for slides far from both training sets.
"""

from __future__ import annotations

import numpy as np

STAIN_METHODS = ("none", "reinhard")

#: Tissue-pixel CIELAB mean and standard deviation (L, a, b) of the MoNuSeg + CoNSeP fit
#: tiles, pooled over their pixels (``python -m nucleoseg.io.stain`` recomputes it).
TARGET = (np.array([60.62, 27.13, -15.23]), np.array([18.99, 9.64, 10.01]))

# Ruifrok & Johnston stain vectors (rows: hematoxylin, eosin, DAB), as in skimage.color.
_STAINS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_STAINS /= np.linalg.norm(_STAINS, axis=1, keepdims=True)
#: Optical densities of (hematoxylin, eosin, DAB) to those of (R, G, B), ``float32``.
RGB_FROM_HED = _STAINS.astype(np.float32)
#: Colour deconvolution: optical densities of (R, G, B) to (hematoxylin, eosin, DAB).
HED_FROM_RGB = np.linalg.inv(_STAINS).astype(np.float32)
#: ``OPTICAL_DENSITY[v]`` is ``-log(max(v, 1) / 255)`` for a ``uint8`` value ``v`` (float32).
OPTICAL_DENSITY = -np.log(np.clip(np.arange(256, dtype=np.float32), 1, 255) / 255.0)

#: Pixels brighter than this L* (of 100) count as background (glass).
_BACKGROUND_L = 88.0


def lab_statistics(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``(mean (3,), std (3,), tissue pixel count)`` of ``image``'s tissue pixels in CIELAB
    (all pixels when fewer than 1 % are tissue)."""
    from skimage.color import rgb2lab

    lab = rgb2lab(image).reshape(-1, 3)
    tissue = lab[:, 0] < _BACKGROUND_L
    if tissue.mean() < 0.01:
        tissue[:] = True
    pix = lab[tissue]
    return pix.mean(axis=0), pix.std(axis=0), int(tissue.sum())


def reinhard(image: np.ndarray, target: tuple[np.ndarray, np.ndarray] = TARGET) -> np.ndarray:
    """``image`` (``(H, W, 3) uint8`` RGB) with its tissue colour statistics matched to
    ``target`` (mean, std in CIELAB); a new ``uint8`` image."""
    from skimage.color import lab2rgb, rgb2lab

    mean, std, _ = lab_statistics(image)
    lab = rgb2lab(image)
    lab = (lab - mean) / np.maximum(std, 1e-3) * target[1] + target[0]
    lab[..., 0] = np.clip(lab[..., 0], 0, 100)
    rgb = lab2rgb(lab)
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def normalise(image: np.ndarray, method: str = "none") -> np.ndarray:
    """Apply the stain normalisation ``method`` (one of :data:`STAIN_METHODS`)."""
    if method not in STAIN_METHODS:
        raise ValueError(f"stain normalisation must be one of {', '.join(STAIN_METHODS)}, "
                         f"not {method!r}")
    return image if method == "none" else reinhard(image)


def _fit_target() -> None:
    """Print :data:`TARGET` recomputed from the fit tiles of both training sets."""
    from .datasets import list_tiles

    total, s1, s2 = 0, np.zeros(3), np.zeros(3)
    for dataset in ("monuseg", "consep"):
        for tile in list_tiles(dataset, "fit"):
            mean, std, n = lab_statistics(tile.image())
            total += n
            s1 += mean * n
            s2 += (std**2 + mean**2) * n
    mean = s1 / total
    print("mean", np.round(mean, 2), "std", np.round(np.sqrt(s2 / total - mean**2), 2))


if __name__ == "__main__":
    _fit_target()
