"""npe2 reader: MoNuSeg Aperio XML outlines -> a Labels layer."""

from __future__ import annotations

from pathlib import Path


def get_reader(path):
    """Return a reader for a MoNuSeg/Aperio ``.xml`` file, else None."""
    if isinstance(path, list) or not str(path).lower().endswith(".xml"):
        return None
    try:
        head = Path(path).read_text(errors="ignore")[:2000]
    except OSError:
        return None
    if "<Annotations" not in head and "<Region" not in head:
        return None
    return read_xml


def read_xml(path):
    """Read outlines as instance labels; the shape follows a same-named image beside the file
    (``.tif``/``.png``), else the MoNuSeg tile size 1000 x 1000."""
    from .io.images import read_array
    from .io.monuseg import read_xml_labels

    p = Path(path)
    shape = (1000, 1000)
    for suffix in (".tif", ".tiff", ".png"):
        img = p.with_suffix(suffix)
        if img.is_file():
            shape = read_array(img).shape[:2]
            break
    labels = read_xml_labels(p, shape)
    return [(labels, {"name": f"{p.stem} outlines"}, "labels")]
