"""Instance labels -> QuPath-compatible GeoJSON, and a per-nucleus measurement table.

GeoJSON coordinates are QuPath's pixel coordinates of the full image: x = column, y = row,
pixel (r, c) covering ``[c, c+1) x [r, r+1)``. Each nucleus is a ``Feature`` with a closed
``Polygon`` ring (its outer outline, traced between pixel centres, corners only) and
``properties.objectType`` ``"detection"`` (QuPath's cell/nucleus objects; use
``"annotation"`` for editable outlines) and ``classification`` ``{"name", "color"}``: the
nucleus's class when it was classified (QuPath colours it by that class on import), else
``"Nucleus"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write, atomic_write_bytes
from .images import ImageError


def labels_to_geojson(
    labels: np.ndarray,
    object_type: str = "detection",
    offset: tuple[float, float] = (0.0, 0.0),
    measurements: dict[int, dict[str, float]] | None = None,
    scale: float = 1.0,
    classes: dict[int, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """A GeoJSON ``FeatureCollection`` with one polygon per labelled nucleus.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` integer instance labels, 0 = background.
    object_type : {"detection", "annotation"}
        QuPath object type of every feature.
    offset : tuple of float
        ``(row, col)`` of ``labels[0, 0]`` in the full image (for tiles of a slide).
    measurements : dict, optional
        Per label id, numbers stored under ``properties.measurements``.
    scale : float
        Full-image pixels per pixel of ``labels`` (labels of a downsampled or resampled
        slide level); coordinates are multiplied by it after the offset.
    classes : dict, optional
        Per label id, ``(class name, "#rrggbb")``; ids without one stay "Nucleus".
    """
    from .labels import compact_ids
    from .monuseg import labels_to_regions

    if object_type not in ("detection", "annotation"):
        raise ValueError("object_type must be 'detection' or 'annotation'")
    labels, original = compact_ids(labels)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    features = []
    for local_id, verts in zip(ids, labels_to_regions(labels), strict=True):
        label_id = local_id if original is None else original[local_id]
        # labels_to_regions gives 1-based (X, Y) through pixel centres; QuPath's pixel
        # (r, c) spans [c, c+1): centre at c + 0.5, so x = X - 1 + 0.5
        xy = (corners(verts) - 0.5 + np.array([offset[1], offset[0]])) * scale
        ring = [[round(float(x), 3), round(float(y), 3)] for x, y in xy]
        if ring[0] != ring[-1]:
            ring.append(ring[0])
        props: dict[str, Any] = {
            "objectType": object_type,
            "classification": _classification((classes or {}).get(int(label_id))),
            "name": f"nucleus {int(label_id)}",
        }
        if measurements and int(label_id) in measurements:
            props["measurements"] = measurements[int(label_id)]
        features.append({"type": "Feature", "id": int(label_id),
                         "geometry": {"type": "Polygon", "coordinates": [ring]},
                         "properties": props})
    return {"type": "FeatureCollection", "features": features}


def corners(ring: np.ndarray) -> np.ndarray:
    """A closed ring's ``(N, 2)`` vertices without the ones on a straight line between their
    neighbours (and repeats): the same polygon, in a third to a half of the vertices for
    outlines traced on the pixel grid (exact: those vertices lie on a half-pixel grid)."""
    if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
        ring = ring[:-1]
    keep = np.any(ring != np.roll(ring, 1, axis=0), axis=1)
    ring = ring[keep] if keep.any() else ring[:1]
    if len(ring) < 4:
        return ring
    before = ring - np.roll(ring, 1, axis=0)
    after = np.roll(ring, -1, axis=0) - ring
    turn = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    bent = ring[turn != 0]
    return bent if len(bent) >= 3 else ring


def _classification(cls: tuple[str, str] | None) -> dict[str, Any]:
    if cls is None:
        return {"name": "Nucleus", "color": [0, 200, 80]}
    name, color = cls
    return {"name": str(name), "color": hex_to_rgb(color)}


def hex_to_rgb(color: str) -> list[int]:
    """``"#rrggbb"`` to ``[r, g, b]``."""
    c = color.lstrip("#")
    if len(c) != 6:
        raise ValueError(f"expected a #rrggbb colour, got {color!r}")
    return [int(c[i : i + 2], 16) for i in (0, 2, 4)]


def geojson_classes(collection: dict[str, Any]) -> dict[int, str]:
    """``{feature id: class name}`` of a FeatureCollection (features without an id are
    numbered 1, 2, ... in order, as :func:`geojson_to_labels` numbers them)."""
    out = {}
    for k, feature in enumerate(collection.get("features", []), start=1):
        cls = (feature.get("properties") or {}).get("classification") or {}
        if cls.get("name"):
            out[int(feature.get("id", k))] = str(cls["name"])
    return out


def geojson_to_labels(collection: dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise a FeatureCollection of polygons (as written above) to instance labels."""
    from skimage.draw import polygon

    labels = np.zeros(shape, np.int32)
    for k, feature in enumerate(collection.get("features", []), start=1):
        geom = feature.get("geometry") or {}
        if geom.get("type") != "Polygon":
            continue
        ring = np.asarray(geom["coordinates"][0], float)
        rr, cc = polygon(ring[:, 1] - 0.5, ring[:, 0] - 0.5, shape=shape)
        free = labels[rr, cc] == 0
        labels[rr[free], cc[free]] = k
    return labels


def write_geojson(path: str | Path, labels: np.ndarray, **kwargs: Any) -> Path:
    """Write :func:`labels_to_geojson` to ``path`` atomically."""
    data = labels_to_geojson(labels, **kwargs)
    return atomic_write_bytes(path, json.dumps(data, separators=(",", ":")).encode())


MEASUREMENT_COLUMNS = (
    "id", "centroid_x_px", "centroid_y_px", "centroid_x_um", "centroid_y_um", "area_px",
    "area_um2", "perimeter_px", "eccentricity", "hematoxylin_mean",
)


def measure_nuclei(
    labels: np.ndarray, image: np.ndarray | None = None, microns_per_pixel: float | None = None,
    offset: tuple[float, float] = (0.0, 0.0), scale: float = 1.0,
) -> list[dict[str, float]]:
    """One row per nucleus: centroid (pixels and µm), area, perimeter, eccentricity and the
    mean hematoxylin optical density (colour deconvolution, Ruifrok & Johnston) when the
    RGB image is given. µm columns are NaN without ``microns_per_pixel``.

    ``offset`` is the ``(row, col)`` of ``labels[0, 0]``; pixel columns are in full-image
    pixels, ``scale`` of them per pixel of ``labels`` (``microns_per_pixel`` refers to
    full-image pixels)."""
    from skimage.measure import regionprops

    from .labels import compact_ids

    labels, original = compact_ids(labels)
    hema = None
    if image is not None:
        from skimage.color import rgb2hed

        if image.shape[:2] != labels.shape:
            raise ImageError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
        hema = rgb2hed(image)[..., 0]
    mpp = float(microns_per_pixel) if microns_per_pixel else float("nan")
    rows = []
    for prop in regionprops(labels, intensity_image=hema):
        r, c = prop.centroid
        x, y = (c + offset[1] + 0.5) * scale, (r + offset[0] + 0.5) * scale
        area = float(prop.area) * scale * scale
        rows.append({
            "id": int(prop.label if original is None else original[prop.label]),
            "centroid_x_px": x, "centroid_y_px": y,
            "centroid_x_um": x * mpp, "centroid_y_um": y * mpp,
            "area_px": area, "area_um2": area * mpp * mpp,
            "perimeter_px": float(prop.perimeter) * scale,
            "eccentricity": float(prop.eccentricity),
            "hematoxylin_mean": float(prop.intensity_mean) if hema is not None else float("nan"),
        })
    return rows


def write_measurements_csv(path: str | Path, rows: list[dict[str, float]]) -> Path:
    """Write :func:`measure_nuclei` rows as CSV (atomically); a ``class`` column follows when
    the rows carry one."""
    import csv

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            extra = ["class"] if any("class" in r for r in rows) else []
            w = csv.DictWriter(f, fieldnames=[*MEASUREMENT_COLUMNS, *extra])
            w.writeheader()
            for row in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    return atomic_write(path, write)
