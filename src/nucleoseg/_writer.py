"""npe2 writers: Labels layers as MoNuSeg / Aperio XML, QuPath GeoJSON or a per-nucleus CSV.

Labels shown from a whole-slide store (multiscale) are exported block by block from the
store, so a slide's labels never have to fit in memory.
"""

from __future__ import annotations

from typing import Any


def _plain_labels(data: Any, meta: dict, what: str):
    import numpy as np

    if isinstance(data, list):  # multiscale: the full-resolution level
        data = data[0]
    labels = np.asarray(data)
    if labels.ndim != 2:
        raise ValueError(f"{what} takes 2D labels; this layer is {labels.ndim}D")
    return labels


def _store(meta: dict) -> str | None:
    return (meta.get("metadata") or {}).get("nucleoseg_store")


def write_labels_xml(path: str, data: Any, meta: dict) -> list[str]:
    """Write a 2D Labels layer as Aperio XML (one ``<Region>`` per label, atomically)."""
    from .io.monuseg import write_xml

    return [str(write_xml(_plain_labels(data, meta, "MoNuSeg XML"), path))]


def write_labels_geojson(path: str, data: Any, meta: dict) -> list[str]:
    """Write a 2D Labels layer as QuPath GeoJSON detections (one polygon per label)."""
    store = _store(meta)
    if store:
        from .inference.wsi import export_store

        return [str(p) for p in export_store(store, geojson=path)]
    from .io.geojson import write_geojson

    return [str(write_geojson(path, _plain_labels(data, meta, "GeoJSON export")))]


def write_labels_csv(path: str, data: Any, meta: dict) -> list[str]:
    """Write one row per nucleus (centroid, area, perimeter, eccentricity; the hematoxylin
    mean too for labels of a slide store, whose slide the store names)."""
    store = _store(meta)
    if store:
        from .inference.wsi import export_store

        return [str(p) for p in export_store(store, csv=path)]
    from .io.geojson import measure_nuclei, write_measurements_csv

    rows = measure_nuclei(_plain_labels(data, meta, "CSV export"))
    return [str(write_measurements_csv(path, rows))]
