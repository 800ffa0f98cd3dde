"""Block geometry of a whole-slide run: the job description, block boxes, margins, and the
position-coded global nucleus ids that make blocks agree without talking to each other.

Every object gets the id ``1 + row * W + col`` of its first pixel in raster order (slide
coordinates at the model's resolution). A nucleus straddling a seam is seen whole by both
blocks (when smaller than the margin), so both compute the same first pixel and write the
same id on their side; the block that holds that pixel *owns* the nucleus (counts and
exports it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import labels_store
from ..io.labels import first_pixels


@dataclass(frozen=True)
class SlideJob:
    """Everything a worker needs to process one block of a slide (picklable).

    Coordinates are in the *working* grid: the chosen pyramid level resampled by ``scale`` to
    the model's resolution; ``to_level0`` converts them to slide (level 0) pixels.
    """

    slide: str
    slide_mpp: float | None
    level: int
    scale: float
    shape: tuple[int, int]
    to_level0: float
    out: str
    model: str
    overrides: tuple[tuple[str, Any], ...]
    tile: tuple[int, int]
    halo: int
    stride: int
    block: tuple[int, int]
    margin: int
    postprocess: tuple[tuple[str, Any], ...]
    blocks: tuple[tuple[int, int], ...]
    skipped: tuple[tuple[int, int], ...] = ()
    exports: tuple[str, ...] = ()
    fingerprint: dict = field(default_factory=dict, compare=False, hash=False)
    classifier: str = ""

    @property
    def n_blocks(self) -> tuple[int, int]:
        return -(-self.shape[0] // self.block[0]), -(-self.shape[1] // self.block[1])

    def all_blocks(self) -> list[tuple[int, int]]:
        """Every block of the slide (with or without tissue), row by row."""
        nr, nc = self.n_blocks
        return [(i, j) for i in range(nr) for j in range(nc)]

    @property
    def id_dtype(self) -> str:
        return "uint32" if self.shape[0] * self.shape[1] < 2**32 - 1 else "uint64"

    @property
    def core(self) -> tuple[int, int]:
        """The tile cores of the slide's one tile grid."""
        return self.tile[0] - 2 * self.halo, self.tile[1] - 2 * self.halo

    def box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """``(r0, r1, c0, c1)`` of block ``(i, j)``."""
        (br, bc), (h, w) = self.block, self.shape
        r0, c0 = i * br, j * bc
        return r0, min(r0 + br, h), c0, min(c0 + bc, w)

    def window(self, i: int, j: int) -> tuple[int, int, int, int]:
        """``(a0, a1, b0, b1)``: block ``(i, j)`` plus ``margin`` on each side, inside the
        slide: the context its labels and exports are computed on."""
        (h, w), m = self.shape, self.margin
        r0, r1, c0, c1 = self.box(i, j)
        return max(r0 - m, 0), min(r1 + m, h), max(c0 - m, 0), min(c1 + m, w)

    def owned(self, ids: np.ndarray, i: int, j: int) -> np.ndarray:
        """Which global ``ids`` block ``(i, j)`` owns (their first pixel lies in it); 0 never."""
        r0, r1, c0, c1 = self.box(i, j)
        w = self.shape[1]
        flat = ids.astype(np.int64) - 1
        rr, cc = flat // w, flat % w
        return (ids > 0) & (rr >= r0) & (rr < r1) & (cc >= c0) & (cc < c1)

    def marker(self, stage: str, i: int, j: int) -> Path:
        return labels_store.marker(self.out, stage, i, j)

    def neighbours(self, i: int, j: int) -> list[tuple[int, int]]:
        nr, nc = self.n_blocks
        return [(a, b) for a in range(i - 1, i + 2) for b in range(j - 1, j + 2)
                if 0 <= a < nr and 0 <= b < nc]


def first_pixel_ids(labels: np.ndarray, origin: tuple[int, int], width: int,
                    dtype: str = "uint32") -> np.ndarray:
    """Global id per local label: ``1 + row * width + col`` of the label's first pixel in
    raster order (``origin`` is the slide position of ``labels[0, 0]``); index 0 maps to 0."""
    first = first_pixels(labels)
    n = first.size - 1
    ids = np.zeros(n + 1, dtype)
    if n:
        rr, cc = np.divmod(first[1:], labels.shape[1])
        ids[1:] = ((rr + origin[0]) * width + cc + origin[1] + 1).astype(dtype)
    return ids
