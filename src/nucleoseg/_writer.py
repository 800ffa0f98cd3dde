"""npe2 writer: a Labels layer -> MoNuSeg / Aperio ImageScope XML outlines."""

from __future__ import annotations

from typing import Any


def write_labels_xml(path: str, data: Any, meta: dict) -> list[str]:
    """Write a 2D Labels layer as Aperio XML (one ``<Region>`` per label, atomically)."""
    import numpy as np

    from .io.monuseg import write_xml

    labels = np.asarray(data)
    if labels.ndim != 2:
        raise ValueError(f"MoNuSeg XML holds 2D outlines; this layer is {labels.ndim}D")
    return [str(write_xml(labels, path))]


def write_labels_geojson(path: str, data: Any, meta: dict) -> list[str]:
    """Write a 2D Labels layer as QuPath GeoJSON detections (one polygon per label)."""
    import numpy as np

    from .io.geojson import write_geojson

    labels = np.asarray(data)
    if labels.ndim != 2:
        raise ValueError(f"GeoJSON export takes 2D labels; this layer is {labels.ndim}D")
    return [str(write_geojson(path, labels))]
