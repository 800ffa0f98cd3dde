"""Where results go: the one naming rule for labels outputs, used by the CLI and napari.

An image ``x.tif`` gets ``x_labels.tif`` (or another labels format); a whole slide
``s.svs`` gets the block-wise store ``s_nuclei.zarr``, beside the input or in a chosen folder.
(Models are saved by :func:`nucleoseg.models.weights.save_model`, which holds the
never-into-the-shipped-weights rule.)
"""

from __future__ import annotations

from pathlib import Path

#: Suffixes that belong to the name of a file rather than to its stem.
_DOUBLE_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr")


def output_stem(path: str | Path) -> str:
    """The input's name without its suffix (``.ome.tif`` counts as one suffix)."""
    path = Path(path)
    name = path.name
    for suffix in _DOUBLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def default_output(path: str | Path, *, slide: bool, fmt: str = ".tif",
                   out_dir: str | Path | None = None, variant: int = 1) -> Path:
    """The labels output of input ``path``.

    Parameters
    ----------
    path : str or pathlib.Path
        The input image or slide.
    slide : bool
        Whole slide (block-wise ``<stem>_nuclei.zarr``) or image in memory
        (``<stem>_labels<fmt>``).
    fmt : str
        Labels format of images (``.tif``, ``.png``, ``.npy``, ``.xml``).
    out_dir : str or pathlib.Path, optional
        Folder of the output (default: the input's folder).
    variant : int
        ``k > 1`` gives ``<stem>_nuclei-<k>.zarr``: a fresh name beside an earlier run.
    """
    folder = Path(out_dir) if out_dir is not None else Path(path).parent
    tail = f"-{variant}" if variant > 1 else ""
    name = (f"{output_stem(path)}_nuclei{tail}.zarr" if slide
            else f"{output_stem(path)}_labels{tail}{fmt}")
    return folder / name
