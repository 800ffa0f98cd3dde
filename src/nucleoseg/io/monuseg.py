"""MoNuSeg 2018: Aperio ImageScope XML outlines <-> instance labels, and the dataset layout.

Rasterisation convention (one for training targets and evaluation):

- one ``<Region>`` per nucleus, vertices ``X`` = column, ``Y`` = row, parsed with ``float``;
- regions with fewer than 3 vertices, or that cover no pixel, are skipped;
- labels follow document order (1, 2, ...), never the ``Id`` attribute;
- the official MATLAB code's 1-based ``poly2mask`` is matched by
  ``skimage.draw.polygon(Y - 1 + e, X - 1 + e)`` clipped to the tile, with ``e = 0.01``: the
  tiny shift gives pixel centres lying exactly on an outline (common with the integer
  vertices of most test XMLs) a top-left fill rule like ``poly2mask``'s. Against the 13
  training tiles that have both XML and the reference instance masks, whole-tile Dice is
  0.996-0.998 with it and 0.948-0.998 without it (``tests/io/test_monuseg.py``);
- where outlines overlap, the **first** region keeps the pixel (as the official code does).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .images import ImageError, open_image

#: Image files recognised in a MoNuSeg-layout folder (lossless copies may be PNG/WebP).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".webp")

#: Sub-pixel shift of outlines before rasterising (see the module docstring).
EDGE_SHIFT = 0.01

#: Training tiles held out for validation (one per organ, chosen before any training;
#: thresholds, post-processing and epochs are picked on these, never on the test tiles).
VALIDATION_TILES = (
    "TCGA-21-5786-01Z-00-DX1",  # lung
    "TCGA-AR-A1AS-01Z-00-DX1",  # breast
    "TCGA-B0-5711-01Z-00-DX1",  # kidney
    "TCGA-G9-6362-01Z-00-DX1",  # prostate
    "TCGA-NH-A8F7-01A-01-TS1",  # colon
    "TCGA-DK-A2I6-01A-01-TS1",  # bladder
)


def parse_regions(xml_path: str | Path) -> list[np.ndarray]:
    """Read every ``<Region>`` outline of an Aperio XML file.

    Returns
    -------
    list of numpy.ndarray
        One ``(N, 2) float64`` array of ``(X, Y)`` vertices per region, in document order,
        including degenerate ones (callers decide what to skip).

    Raises
    ------
    ImageError
        When the file is missing or not Aperio XML.
    """
    p = Path(xml_path)
    if not p.is_file():
        raise ImageError(f"file not found: {p}")
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as exc:
        raise ImageError(f"{p.name} is not valid XML: {exc}") from None
    regions = []
    for region in root.iter("Region"):
        verts = [
            (float(v.get("X")), float(v.get("Y")))
            for v in region.iter("Vertex")
            if v.get("X") is not None and v.get("Y") is not None
        ]
        regions.append(np.asarray(verts, dtype=np.float64).reshape(-1, 2))
    if root.tag != "Annotations" and not regions:
        raise ImageError(f"{p.name} holds no Aperio <Region> outlines")
    return regions


def regions_to_labels(regions: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise outlines to an ``(H, W) int32`` instance label image (0 = background).

    Follows the module's convention: ``polygon(Y - 1 + e, X - 1 + e)``, first region keeps
    overlapping pixels, regions with < 3 vertices or no pixel are skipped, labels are
    consecutive in document order.
    """
    e = EDGE_SHIFT
    labels = np.zeros(shape, dtype=np.int32)
    next_id = 1
    for verts in regions:
        if len(verts) < 3:
            continue
        rr, cc = _fill(verts[:, 1] - 1 + e, verts[:, 0] - 1 + e, shape)
        if rr.size == 0:
            continue
        free = labels[rr, cc] == 0
        if not free.any():
            continue
        labels[rr[free], cc[free]] = next_id
        next_id += 1
    return labels


#: Above this many vertex x bounding-box-pixel operations an outline is filled by a scanline
#: rasteriser instead of ``skimage.draw.polygon`` (whose cost grows with both): real nuclei
#: (tens of vertices, ~20x20 px) stay on the exact convention; a hostile or broken outline
#: of 100,000 vertices across a tile takes a fraction of a second instead of minutes.
MAX_POLYGON_WORK = 50_000_000


def _fill(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]
          ) -> tuple[np.ndarray, np.ndarray]:
    """Pixels inside the polygon ``(rows, cols)``, clipped to ``shape``."""
    from skimage.draw import polygon

    r0, r1 = max(int(np.floor(rows.min())), 0), min(int(np.ceil(rows.max())) + 1, shape[0])
    c0, c1 = max(int(np.floor(cols.min())), 0), min(int(np.ceil(cols.max())) + 1, shape[1])
    if r1 <= r0 or c1 <= c0:
        return np.zeros(0, int), np.zeros(0, int)
    if len(rows) * (r1 - r0) * (c1 - c0) <= MAX_POLYGON_WORK:
        return polygon(rows, cols, shape=shape)
    from PIL import Image, ImageDraw

    canvas = Image.new("1", (c1 - c0, r1 - r0), 0)
    pts = list(zip((cols - c0).tolist(), (rows - r0).tolist(), strict=True))
    ImageDraw.Draw(canvas).polygon(pts, fill=1)
    rr, cc = np.nonzero(np.asarray(canvas))
    return rr + r0, cc + c0


def read_xml_labels(xml_path: str | Path, shape: tuple[int, int] = (1000, 1000)) -> np.ndarray:
    """Aperio XML file to ``(H, W) int32`` instance labels (see module docstring)."""
    return regions_to_labels(parse_regions(xml_path), shape)


def labels_to_regions(labels: np.ndarray) -> list[np.ndarray]:
    """Outline every labelled object; the inverse of :func:`regions_to_labels`.

    Each object's outer contour is traced at level 0.5 on its mask, so rasterising it with
    the module's convention gives back the object's pixels (holes are filled; an object in
    several pieces keeps its largest piece).

    Returns
    -------
    list of numpy.ndarray
        ``(N, 2) float64`` ``(X, Y)`` vertices in the MATLAB 1-based convention, in label order.
    """
    from skimage.measure import find_contours, regionprops

    regions = []
    for prop in regionprops(np.asarray(labels)):
        r0, c0, _, _ = prop.bbox
        mask = np.pad(prop.image, 1)
        contours = find_contours(mask.astype(np.float32), 0.5)
        if not contours:
            continue
        contour = max(contours, key=len)
        y = contour[:, 0] + r0 - 1 + 1  # -1 for the padding, +1 for 1-based
        x = contour[:, 1] + c0 - 1 + 1
        regions.append(np.stack([x, y], axis=1))
    return regions


def write_xml(labels: np.ndarray, path: str | Path, microns_per_pixel: float | None = None) -> Path:
    """Write instance labels as an Aperio ImageScope XML file (atomically).

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` integer instance labels, 0 = background.
    path : str or pathlib.Path
        Destination ``.xml``.
    microns_per_pixel : float, optional
        Stored in the root's ``MicronsPerPixel`` attribute when given.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise ImageError(f"labels must be a 2D integer array, got {labels.dtype} {labels.shape}")
    root = ET.Element("Annotations")
    if microns_per_pixel is not None:
        root.set("MicronsPerPixel", f"{microns_per_pixel:.6f}")
    ann = ET.SubElement(root, "Annotation", Id="1", Name="nucleoseg", Type="4", LineColor="65280")
    ET.SubElement(ann, "Attributes")
    regions_el = ET.SubElement(ann, "Regions")
    for i, verts in enumerate(labels_to_regions(labels), start=1):
        region = ET.SubElement(regions_el, "Region", Id=str(i), Type="0", DisplayId=str(i))
        ET.SubElement(region, "Attributes")
        vertices = ET.SubElement(region, "Vertices")
        for x, y in verts:
            ET.SubElement(vertices, "Vertex", X=f"{x:.2f}", Y=f"{y:.2f}")
    ET.SubElement(ann, "Plots")
    from .atomic import atomic_write_bytes

    return atomic_write_bytes(path, ET.tostring(root, encoding="utf-8"))


@dataclass(frozen=True)
class Tile:
    """One MoNuSeg tile: its name, image path and the source of its ground truth."""

    name: str
    image_path: Path
    xml_path: Path | None
    mask_path: Path | None

    def image(self) -> np.ndarray:
        """``(1000, 1000, 3) uint8`` RGB."""
        return open_image(self.image_path)

    def labels(self) -> np.ndarray:
        """``(H, W) int32`` instance labels: from the XML when present, else the mask PNG."""
        if self.xml_path is not None:
            return read_xml_labels(self.xml_path, _image_shape(self.image_path))
        if self.mask_path is not None:
            from PIL import Image

            with Image.open(self.mask_path) as im:
                return np.array(im).astype(np.int32)
        raise ImageError(f"no annotation for {self.name}")


def _image_shape(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size[1], im.size[0]


def data_root(path: str | Path | None = None) -> Path:
    """Where the data sets live: ``path``, else ``$NUCLEOSEG_DATA``, else ``../shared/data``.

    ``../shared/data`` is looked up from the current directory and from the source checkout.
    The returned path may not exist; callers check.
    """
    if path is not None:
        return Path(path)
    env = os.environ.get("NUCLEOSEG_DATA")
    if env:
        return Path(env)
    candidates = [Path.cwd() / ".." / "shared" / "data"]
    candidates.append(Path(__file__).resolve().parents[3] / ".." / "shared" / "data")
    for c in candidates:
        if (c / "monuseg").is_dir():
            return c.resolve()
    return candidates[0]


def monuseg_root(path: str | Path | None = None) -> Path:
    """The MoNuSeg folder: ``path`` if it holds ``train``/``test``, else ``<root>/monuseg``."""
    root = data_root(path)
    if (root / "test" / "images").is_dir() or (root / "train" / "images").is_dir():
        return root
    return root / "monuseg"


def list_tiles(split: str, root: str | Path | None = None) -> list[Tile]:
    """List the tiles of ``split`` ("train", "test", "fit" or "val").

    "fit" and "val" divide the 30 training tiles: :data:`VALIDATION_TILES` are "val".

    Raises
    ------
    FileNotFoundError
        When the MoNuSeg folder is not found (message says where it looked).
    """
    from .datasets import check_split, select_split

    check_split(split)
    base = monuseg_root(root)
    folder = base / ("test" if split == "test" else "train")
    if not (folder / "images").is_dir():
        raise FileNotFoundError(
            f"MoNuSeg data not found at {base} (set NUCLEOSEG_DATA or pass --data)"
        )
    tiles = []
    found = [p for p in (folder / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    for img in sorted(found):
        xml = folder / "annotations" / f"{img.stem}.xml"
        mask = folder / "instance_masks" / f"{img.stem}.png"
        tiles.append(
            Tile(img.stem, img, xml if xml.is_file() else None, mask if mask.is_file() else None)
        )
    return select_split(tiles, split, VALIDATION_TILES)
