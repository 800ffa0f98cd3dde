"""npe2 sample data: an offline synthetic H&E-like image, and a MoNuSeg tile when present."""

from __future__ import annotations

import numpy as np


def synthetic_he(shape: tuple[int, int] = (512, 512), seed: int = 0) -> np.ndarray:
    """A synthetic H&E-like image (generated here, no data set): pink stroma with ~250 dark
    purple elliptical 'nuclei' and texture. For trying the tools offline, not for judging
    accuracy."""
    from scipy import ndimage as ndi
    from skimage.draw import ellipse

    rng = np.random.default_rng(seed)
    h, w = shape
    hema = np.zeros(shape, np.float32)
    for _ in range(int(h * w / 1000)):
        r, c = rng.uniform(0, h), rng.uniform(0, w)
        a, b = rng.uniform(4, 9), rng.uniform(3, 6)
        rr, cc = ellipse(r, c, a, b, shape=shape, rotation=rng.uniform(0, np.pi))
        hema[rr, cc] = np.maximum(hema[rr, cc], rng.uniform(0.7, 1.0))
    hema = ndi.gaussian_filter(hema, 1.0) * (0.85 + 0.15 * rng.random(shape, np.float32))
    eosin = 0.35 + 0.25 * ndi.gaussian_filter(rng.random(shape, np.float32), 6)
    # Beer-Lambert mix of hematoxylin (blue-purple) and eosin (pink) optical densities
    od = hema[..., None] * np.array([0.65, 0.70, 0.29]) * 1.4 + eosin[..., None] * np.array(
        [0.07, 0.99, 0.11]) * 0.9
    rgb = 255 * np.exp(-od)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def make_synthetic_sample():
    return [(synthetic_he(), {"name": "synthetic H&E-like (generated)", "rgb": True}, "image")]


def make_monuseg_sample():
    """The first MoNuSeg test tile with its ground truth (needs the data set locally)."""
    from .io.monuseg import list_tiles

    try:
        tile = list_tiles("test")[0]
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{exc}. MoNuSeg 2018 (CC BY-NC-SA 4.0) is at monuseg.grand-challenge.org"
        ) from None
    return [
        (tile.image(), {"name": tile.name, "rgb": True}, "image"),
        (tile.labels(), {"name": f"{tile.name} ground truth", "visible": False}, "labels"),
    ]
