"""Training targets, patch sampling and augmentation (pure numpy).

Targets have two channels (see :data:`nucleoseg.models.blocks.OUTPUT_CHANNELS`):
0 = nucleus (any instance), 1 = interior (each instance minus a 2-pixel rim at its outline
and at every contact with another instance).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Rim removed from each nucleus to make the interior channel (pixels).
INTERIOR_RIM = 2

# Ruifrok & Johnston stain vectors (rows: hematoxylin, eosin, DAB), as in skimage.color.
_RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float32
)
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)


def make_targets(labels: np.ndarray, rim: int = INTERIOR_RIM) -> np.ndarray:
    """Instance labels ``(H, W)`` to ``(H, W, 2) uint8`` targets (nucleus, interior)."""
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels)
    fg = labels > 0
    edge = find_boundaries(labels, mode="inner") & fg
    if rim > 1:
        edge = ndi.binary_dilation(edge, iterations=rim - 1)
    interior = fg & ~edge
    return np.stack([fg, interior], axis=-1).astype(np.uint8)


def hed_jitter(
    images: np.ndarray, rng: np.random.Generator, sigma: float = 0.05, bias: float = 0.02
) -> np.ndarray:
    """Perturb stain concentrations (Tellez et al. 2018) of a batch of RGB images.

    Parameters
    ----------
    images : numpy.ndarray
        ``(B, H, W, 3) float32`` in [0, 1].
    sigma, bias : float
        Per image and stain, concentrations become ``c * U(1-sigma, 1+sigma) + U(-bias, bias)``.

    Returns
    -------
    numpy.ndarray
        ``(B, H, W, 3) float32`` in [0, 1].
    """
    b = images.shape[0]
    od = -np.log(np.clip(images, 1e-6, 1.0) * (255.0 / 256.0) + 1.0 / 256.0)
    hed = od @ _HED_FROM_RGB
    alpha = rng.uniform(1 - sigma, 1 + sigma, (b, 1, 1, 3)).astype(np.float32)
    beta = rng.uniform(-bias, bias, (b, 1, 1, 3)).astype(np.float32)
    od = (hed * alpha + beta) @ _RGB_FROM_HED
    out = (np.exp(-od) - 1.0 / 256.0) * (256.0 / 255.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of an ``(H, W, C)`` array."""
    if k & 4:
        x = x[:, ::-1]
    return np.rot90(x, k & 3, axes=(0, 1))


@dataclass
class PatchSampler:
    """Random square patches with dihedral, stain and brightness/contrast augmentation.

    Parameters
    ----------
    images : list of numpy.ndarray
        ``(H, W, 3) uint8`` tiles (each at least ``patch`` on both sides).
    targets : list of numpy.ndarray
        ``(H, W, C) uint8`` targets from :func:`make_targets`.
    patch : int
        Patch side.
    augment : bool
        Apply augmentation.
    seed : int
        Seed of the sampler's own generator.
    """

    images: list[np.ndarray]
    targets: list[np.ndarray]
    patch: int = 256
    augment: bool = True
    seed: int = 0
    hed_sigma: float = 0.05
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.images) != len(self.targets) or not self.images:
            raise ValueError("need the same, non-zero number of images and targets")
        for img, tgt in zip(self.images, self.targets, strict=True):
            if img.shape[:2] != tgt.shape[:2]:
                raise ValueError(f"image {img.shape} and target {tgt.shape} differ in size")
            if min(img.shape[:2]) < self.patch:
                raise ValueError(
                    f"an image of {img.shape[:2]} is smaller than the patch {self.patch}"
                )
        self.rng = np.random.default_rng(self.seed)
        areas = np.array([i.shape[0] * i.shape[1] for i in self.images], float)
        self._p = areas / areas.sum()

    def batch(
        self, size: int, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """A batch ``(x, y)``: ``(size, P, P, 3) float32`` in [0, 1], ``(size, P, P, C) float32``.

        ``rng`` defaults to the sampler's own generator; pass one per call to sample from
        several threads at once.
        """
        p = self.patch
        rng = self.rng if rng is None else rng
        xs = np.empty((size, p, p, 3), np.float32)
        ys = np.empty((size, p, p, self.targets[0].shape[-1]), np.float32)
        for k in range(size):
            i = rng.choice(len(self.images), p=self._p)
            img, tgt = self.images[i], self.targets[i]
            r = rng.integers(0, img.shape[0] - p + 1)
            c = rng.integers(0, img.shape[1] - p + 1)
            x, y = img[r : r + p, c : c + p], tgt[r : r + p, c : c + p]
            if self.augment:
                d = int(rng.integers(8))
                x, y = _dihedral(x, d), _dihedral(y, d)
            xs[k] = x
            ys[k] = y
        xs *= np.float32(1 / 255)
        if self.augment:
            xs = hed_jitter(xs, rng, sigma=self.hed_sigma)
            gain = rng.uniform(0.9, 1.1, (size, 1, 1, 1)).astype(np.float32)
            shift = rng.uniform(-0.05, 0.05, (size, 1, 1, 1)).astype(np.float32)
            xs = np.clip((xs - 0.5) * gain + 0.5 + shift, 0, 1)
        return xs, ys


def grid_patches(
    image: np.ndarray, target: np.ndarray, patch: int = 256, per_side: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """The classic fixed windows: ``per_side x per_side`` patches evenly spaced over a tile.

    On a 1000x1000 MoNuSeg tile with ``patch=256, per_side=6`` these are the 36 windows the
    prior art used (starting every 148.8 px, so neighbours overlap by ~107 px); used for
    validation batches, so the validation loss is computed on the same pixels every epoch.
    """
    starts_r = np.linspace(0, image.shape[0] - patch, per_side).round().astype(int)
    starts_c = np.linspace(0, image.shape[1] - patch, per_side).round().astype(int)
    xs = [image[r : r + patch, c : c + patch] for r in starts_r for c in starts_c]
    ys = [target[r : r + patch, c : c + patch] for r in starts_r for c in starts_c]
    return np.stack(xs).astype(np.float32) / 255.0, np.stack(ys).astype(np.float32)
