"""Training targets, patch sampling and augmentation (pure numpy).

Targets have two channels (see :data:`nucleoseg.models.blocks.OUTPUT_CHANNELS`):
0 = nucleus (any instance), 1 = interior (each instance minus a 2-pixel rim at its outline
and at every contact with another instance).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..io.labels import inner_boundary
from ..io.stain import HED_FROM_RGB, RGB_FROM_HED

#: Rim removed from each nucleus to make the interior channel (pixels).
INTERIOR_RIM = 2


def make_targets(labels: np.ndarray, rim: int = INTERIOR_RIM, contact: bool = False
                 ) -> np.ndarray:
    """Instance labels ``(H, W)`` to ``(H, W, 2) uint8`` targets (nucleus, interior).

    With ``contact``, a third channel marks where nuclei meet (:func:`contact_zone`): the
    pixels that keep touching nuclei apart, weighted up by the ``bce_dice_contact`` loss.
    """
    from scipy import ndimage as ndi

    labels = np.asarray(labels)
    fg = labels > 0
    edge = inner_boundary(labels)
    if rim > 1:
        edge = ndi.binary_dilation(edge, iterations=rim - 1)
    interior = fg & ~edge
    channels = [fg, interior] + ([contact_zone(labels, rim)] if contact else [])
    return np.stack(channels, axis=-1).astype(np.uint8)


def contact_zone(labels: np.ndarray, radius: int = INTERIOR_RIM) -> np.ndarray:
    """``(H, W) bool``: pixels with two different nuclei within ``radius`` (Chebyshev) --
    the rims where nuclei touch and the background squeezed between close ones (the gaps
    that U-Net's weight map, Ronneberger et al. 2015, emphasises)."""
    from scipy import ndimage as ndi

    labels = np.asarray(labels).astype(np.int64, copy=False)
    size = 2 * radius + 1
    highest = ndi.maximum_filter(labels, size)
    # background above every id (not the dtype's maximum: scipy's filters overflow on it)
    lowest = ndi.minimum_filter(np.where(labels > 0, labels, labels.max() + 1), size)
    return (highest > 0) & (lowest < highest)


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
    hed = od @ HED_FROM_RGB
    alpha = rng.uniform(1 - sigma, 1 + sigma, (b, 1, 1, 3)).astype(np.float32)
    beta = rng.uniform(-bias, bias, (b, 1, 1, 3)).astype(np.float32)
    od = (hed * alpha + beta) @ RGB_FROM_HED
    out = (np.exp(-od) - 1.0 / 256.0) * (256.0 / 255.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of an ``(H, W, C)`` array."""
    if k & 4:
        x = x[:, ::-1]
    return np.rot90(x, k & 3, axes=(0, 1))


@dataclass(frozen=True)
class Augmentation:
    """Random photometric and geometric changes applied to training patches.

    The default is the MoNuSeg-only recipe (dihedral, HED jitter 0.05, brightness/contrast);
    :data:`STRONG_AUGMENTATION` is the multi-lab recipe.

    Parameters
    ----------
    hed_sigma, hed_bias : float
        Stain jitter (see :func:`hed_jitter`).
    gain, shift : float
        Contrast ``U(1-gain, 1+gain)`` about 0.5 and brightness ``U(-shift, shift)``.
    saturation : float
        Colour saturation ``U(1-saturation, 1+saturation)`` about the luminance (0: off).
    blur_p, blur_sigma : float
        Probability of a Gaussian blur of ``U(0.3, blur_sigma)`` px.
    jpeg_p : float
        Probability of a JPEG round trip at quality ``U(jpeg_quality)``.
    scale : tuple of float
        Zoom range (1, 1: off); a patch of ``patch / s`` px is resized to ``patch``.
    """

    hed_sigma: float = 0.05
    hed_bias: float = 0.02
    gain: float = 0.1
    shift: float = 0.05
    saturation: float = 0.0
    blur_p: float = 0.0
    blur_sigma: float = 1.5
    jpeg_p: float = 0.0
    jpeg_quality: tuple[int, int] = (40, 90)
    scale: tuple[float, float] = (1.0, 1.0)

    def to_dict(self) -> dict:
        """Plain values for a model card."""
        from dataclasses import asdict

        return asdict(self)


#: Multi-lab recipe: wider stain jitter, saturation, blur, JPEG artefacts, +-20 % zoom.
STRONG_AUGMENTATION = Augmentation(
    hed_sigma=0.12, hed_bias=0.03, gain=0.2, shift=0.08, saturation=0.25,
    blur_p=0.2, jpeg_p=0.25, scale=(0.8, 1.25),
)


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
    hed_sigma : float
        Stain jitter of the default augmentation (ignored when ``augmentation`` is given).
    augmentation : Augmentation, optional
        The augmentation recipe.
    groups : list of int, optional
        A group (data set) per image: each group is drawn equally often, images within a
        group by area. Without it, images are drawn by area.
    """

    images: list[np.ndarray]
    targets: list[np.ndarray]
    patch: int = 256
    augment: bool = True
    seed: int = 0
    hed_sigma: float = 0.05
    augmentation: Augmentation | None = None
    groups: list[int] | None = None
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.images) != len(self.targets) or not self.images:
            raise ValueError("need the same, non-zero number of images and targets")
        if self.augmentation is None:
            self.augmentation = Augmentation(hed_sigma=self.hed_sigma)
        largest = int(np.ceil(self.patch / min(self.augmentation.scale))) if self.augment \
            else self.patch
        for img, tgt in zip(self.images, self.targets, strict=True):
            if img.shape[:2] != tgt.shape[:2]:
                raise ValueError(f"image {img.shape} and target {tgt.shape} differ in size")
            if min(img.shape[:2]) < self.patch:
                raise ValueError(
                    f"an image of {img.shape[:2]} is smaller than the patch {self.patch}"
                )
        self._largest = largest
        self.rng = np.random.default_rng(self.seed)
        areas = np.array([i.shape[0] * i.shape[1] for i in self.images], float)
        if self.groups is not None:
            g = np.asarray(self.groups)
            if g.shape != (len(self.images),):
                raise ValueError("give one group per image")
            for k in np.unique(g):
                areas[g == k] /= areas[g == k].sum()
        self._p = areas / areas.sum()

    def batch(
        self, size: int, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """A batch ``(x, y)``: ``(size, P, P, 3) float32`` in [0, 1], ``(size, P, P, C) float32``.

        ``rng`` defaults to the sampler's own generator; pass one per call to sample from
        several threads at once.
        """
        p = self.patch
        aug = self.augmentation
        rng = self.rng if rng is None else rng
        xs = np.empty((size, p, p, 3), np.float32)
        ys = np.empty((size, p, p, self.targets[0].shape[-1]), np.float32)
        for k in range(size):
            i = rng.choice(len(self.images), p=self._p)
            img, tgt = self.images[i], self.targets[i]
            side = p
            if self.augment and aug.scale != (1.0, 1.0):
                zoom = float(np.exp(rng.uniform(*np.log(aug.scale))))
                side = min(int(round(p / zoom)), *img.shape[:2])
            r = rng.integers(0, img.shape[0] - side + 1)
            c = rng.integers(0, img.shape[1] - side + 1)
            x, y = img[r : r + side, c : c + side], tgt[r : r + side, c : c + side]
            if side != p:
                x, y = _resize_pair(x, y, p)
            if self.augment:
                d = int(rng.integers(8))
                x, y = _dihedral(x, d), _dihedral(y, d)
                if aug.jpeg_p and rng.random() < aug.jpeg_p:
                    x = _jpeg(x, int(rng.integers(*aug.jpeg_quality)))
            xs[k] = x
            ys[k] = y
        xs *= np.float32(1 / 255)
        if self.augment:
            xs = _photometric(xs, aug, rng)
        return xs, ys


def _resize_pair(x: np.ndarray, y: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image patch (bilinear) and its targets (nearest) to ``p x p``."""
    from PIL import Image

    xi = np.asarray(Image.fromarray(np.ascontiguousarray(x)).resize((p, p), Image.BILINEAR))
    yi = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(y[..., c]))
                              .resize((p, p), Image.NEAREST)) for c in range(y.shape[-1])], -1)
    return xi, yi


def _jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    """A JPEG encode/decode round trip of a ``(H, W, 3) uint8`` patch."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(x)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def _photometric(xs: np.ndarray, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """Stain jitter, saturation, contrast/brightness and blur of a batch in [0, 1]."""
    size = xs.shape[0]
    xs = hed_jitter(xs, rng, sigma=aug.hed_sigma, bias=aug.hed_bias)
    if aug.saturation:
        lum = xs @ np.array([0.299, 0.587, 0.114], np.float32)
        sat = rng.uniform(1 - aug.saturation, 1 + aug.saturation, (size, 1, 1, 1))
        xs = lum[..., None] + (xs - lum[..., None]) * sat.astype(np.float32)
    gain = rng.uniform(1 - aug.gain, 1 + aug.gain, (size, 1, 1, 1)).astype(np.float32)
    shift = rng.uniform(-aug.shift, aug.shift, (size, 1, 1, 1)).astype(np.float32)
    xs = np.clip((xs - 0.5) * gain + 0.5 + shift, 0, 1)
    if aug.blur_p:
        from scipy import ndimage as ndi

        for k in range(size):
            if rng.random() < aug.blur_p:
                s = float(rng.uniform(0.3, aug.blur_sigma))
                xs[k] = ndi.gaussian_filter(xs[k], (s, s, 0))
    return xs.astype(np.float32)


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
