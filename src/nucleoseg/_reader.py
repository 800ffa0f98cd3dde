"""npe2 readers: MoNuSeg Aperio XML outlines, whole slides (lazy multiscale) and the
labels stores written by the whole-slide path."""

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
    or in ``../images/``, else the MoNuSeg tile size 1000 x 1000."""
    from .io.images import ImageError
    from .io.labels import xml_image_shape
    from .io.monuseg import read_xml_labels

    p = Path(path)
    try:
        shape = xml_image_shape(p)
    except ImageError:
        shape = (1000, 1000)
    labels = read_xml_labels(p, shape)
    return [(labels, {"name": f"{p.stem} outlines"}, "labels")]


def get_slide_reader(path):
    """Return a reader for whole slides (SVS, TIFF pyramids, images of more than 10k x 10k
    pixels, zarr images) and for nucleoseg labels stores; None for ordinary images, which
    napari's own reader opens."""
    if isinstance(path, list):
        return None
    p = Path(str(path).rstrip("/"))
    if p.suffix.lower() == ".zarr" and (p / ".zattrs").is_file():
        from .io.labels_store import read_attrs

        if read_attrs(p) is not None:
            return read_labels_store_layer
    from .io.wsi import is_slide

    return read_slide if is_slide(p) else None


def read_slide(path):
    """A slide as a lazy multiscale RGB image layer (only the tiles on screen are read)."""
    from .io.wsi import open_slide

    p = Path(str(path).rstrip("/"))
    slide = open_slide(p)
    levels = slide.dask_levels()
    meta = {"nucleoseg_slide": str(p.resolve()), "mpp": slide.mpp}
    name = p.name.split(".")[0]
    return [(levels if len(levels) > 1 else levels[0],
             {"name": name, "rgb": True, "multiscale": len(levels) > 1, "metadata": meta},
             "image")]


def read_labels_store_layer(path):
    """A nucleoseg labels store as a lazy multiscale Labels layer in slide pixels."""
    from .io.labels_store import read_labels_store

    p = Path(str(path).rstrip("/"))
    store = read_labels_store(p)
    levels = store["levels"]
    name = p.name.removesuffix(".zarr") + ("" if store["complete"] else " (incomplete)")
    kwargs = {"name": name, "scale": (store["scale"], store["scale"]),
              "multiscale": len(levels) > 1, "metadata": {"nucleoseg_store": str(p)}}
    return [(levels if len(levels) > 1 else levels[0], kwargs, "labels")]
