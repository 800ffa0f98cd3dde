"""The whole-slide labels store: a zarr v2 folder that a run fills block by block.

Layout: ``0``, ``1``, ... label levels (full resolution first, OME-NGFF ``multiscales``
metadata), ``probabilities`` (float16, removed when the labels are complete unless kept),
``progress/`` (one marker file per finished task) and ``exports/`` (per-block GeoJSON/CSV
parts). The ``nucleoseg`` attribute holds the run's fingerprint (slide, model, settings):
a rerun with the same fingerprint resumes, other settings need ``overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .images import ImageError

FORMAT_VERSION = 1
PROGRESS_DIR = "progress"
PARTS_DIR = "exports"


def jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(obj))


def read_attrs(out: str | Path) -> dict | None:
    """The store's ``nucleoseg`` attribute, or None when ``out`` is not a labels store."""
    meta = Path(out) / ".zattrs"
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text()).get("nucleoseg")
    except (OSError, ValueError, AttributeError):
        return None


def settings_match(out: str | Path, fingerprint: dict) -> bool | None:
    """None when ``out`` does not exist; else whether it holds a run with this fingerprint
    (False also for a folder that is not a labels store)."""
    out = Path(out)
    if not out.exists():
        return None
    attrs = read_attrs(out)
    return attrs is not None and attrs.get("fingerprint") == jsonable(fingerprint)


def export_paths(out: str | Path) -> dict[str, Path]:
    """Where the exports of a store go: ``<out>.geojson`` and ``<out>_nuclei.csv``
    (``<out>.csv`` when the store's name already ends in ``_nuclei``)."""
    base = Path(out).with_suffix("")
    csv = base.name + ("" if base.name.endswith("_nuclei") else "_nuclei") + ".csv"
    return {"geojson": base.with_name(base.name + ".geojson"), "csv": base.with_name(csv)}


def open_store(out: str | Path, fingerprint: dict, *, shape: tuple[int, int],
               chunk: tuple[int, int], id_dtype: str, exports: tuple[str, ...] = (),
               overwrite: bool = False) -> tuple[Any, bool]:
    """Create the store, or reopen one holding the same run.

    Returns
    -------
    (zarr.Group, bool)
        The group and whether its run is already complete (with all ``exports`` written).

    Raises
    ------
    ImageError
        ``out`` is a foreign folder, holds a run with other settings (without
        ``overwrite``), or cannot be created.
    """
    import zarr

    out = Path(out)
    if out.exists():
        attrs = read_attrs(out)
        if attrs is None:
            raise ImageError(f"{out} exists and is not a nucleoseg output; choose another path")
        if not settings_match(out, fingerprint) or overwrite:
            if not overwrite:
                raise ImageError(f"{out} holds a run with other settings (slide, model or "
                                 "tiling); pass --overwrite to replace it")
            shutil.rmtree(out)
        else:
            group = zarr.open_group(str(out), mode="r+", zarr_format=2)
            paths = export_paths(out)
            have_exports = all(paths[k].exists() for k in exports)
            return group, bool(attrs.get("complete")) and have_exports
    parent = out.parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as exc:
            raise ImageError(f"cannot create {parent}: {exc.strerror or exc}") from exc
    if not parent.is_dir():
        raise ImageError(f"cannot create {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK):
        raise ImageError(f"cannot write {out}: folder {parent} is not writable")
    from numcodecs import Blosc

    group = zarr.open_group(str(out), mode="w", zarr_format=2)
    h, w = shape
    chunk = (min(chunk[0], h), min(chunk[1], w))
    group.create_array("probabilities", shape=(h, w, 2), chunks=chunk + (2,), dtype="float16",
                       fill_value=0, compressors=Blosc(cname="lz4", clevel=3,
                                                       shuffle=Blosc.SHUFFLE))
    group.create_array("0", shape=(h, w), chunks=chunk, dtype=id_dtype, fill_value=0,
                       compressors=_label_compressor())
    group.attrs["nucleoseg"] = {"complete": False, "fingerprint": jsonable(fingerprint)}
    # marker and part files live in (empty) zarr groups so zarr readers accept the store
    group.create_group(PROGRESS_DIR)
    group.create_group(PARTS_DIR)
    return group, False


def _label_compressor():
    from numcodecs import Blosc

    return Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE)


def array(out: str | Path, name: str, mode: str = "r"):
    """One array of the store (``"0"``: full-resolution labels, ``"probabilities"``)."""
    import zarr

    return zarr.open_array(str(Path(out) / name), mode=mode, zarr_format=2)


def marker(out: str | Path, stage: str, i: int, j: int) -> Path:
    """The file that marks task ``stage`` of block ``(i, j)`` as done."""
    return Path(out) / PROGRESS_DIR / f"{stage}-{i}-{j}"


def write_part(out: str | Path, i: int, j: int, kind: str, text: str) -> None:
    """Block ``(i, j)``'s export part of ``kind`` (``geojson`` or ``csv``), atomically."""
    from .atomic import atomic_write_bytes

    atomic_write_bytes(Path(out) / PARTS_DIR / f"{i:05d}-{j:05d}.{kind}.part", text.encode())


def write_streamed(path: str | Path, kind: str, texts: Iterable[str],
                   extra_columns: tuple[str, ...] = ()) -> Path:
    """Write GeoJSON feature fragments (``kind="geojson"``, comma-joined) or CSV row blocks
    (``"csv"``, header :data:`~nucleoseg.io.geojson.MEASUREMENT_COLUMNS` + ``extra_columns``)
    from an iterable of strings into one file, atomically and streaming."""
    from .atomic import atomic_write
    from .geojson import MEASUREMENT_COLUMNS

    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            if kind == "csv":
                f.write(",".join((*MEASUREMENT_COLUMNS, *extra_columns)) + "\n")
                for text in texts:
                    f.write(text)
                return
            f.write('{"type":"FeatureCollection","features":[\n')
            first = True
            for text in texts:
                if text:
                    f.write(("" if first else ",\n") + text)
                    first = False
            f.write("\n]}\n")

    return atomic_write(path, write)


def join_parts(out: str | Path, exports: tuple[str, ...],
               extra_columns: tuple[str, ...] = ()) -> dict[str, str]:
    """Join the per-block parts into the export files; returns ``{kind: path}``."""
    parts = Path(out) / PARTS_DIR
    paths = export_paths(out)
    return {kind: str(write_streamed(paths[kind], kind, (
        part.read_text() for part in sorted(parts.glob(f"*.{kind}.part"))), extra_columns))
        for kind in exports}


def build_pyramid(group: Any, min_side: int = 1024) -> int:
    """Nearest-neighbour levels 1, 2, ... (factor 2) from level 0, until the longest side is
    at most ``min_side``; returns the number of levels."""
    import dask.array as da

    level = 0
    shape = group["0"].shape
    while max(shape) > min_side:
        src = da.from_zarr(group[str(level)])
        down = src[::2, ::2]
        shape = down.shape
        chunks = tuple(min(c, s) for c, s in zip(group["0"].chunks, shape, strict=True))
        name = str(level + 1)
        if name in group:
            del group[name]
        dst = group.create_array(name, shape=shape, chunks=chunks, dtype=src.dtype,
                                 fill_value=0, compressors=_label_compressor())
        da.store(down.rechunk(chunks), dst, lock=False, scheduler="threads")
        level += 1
    return level + 1


def finish_store(out: str | Path, attrs: dict, levels: int, unit_um: float | None,
                 keep_probabilities: bool = False) -> None:
    """Mark a run complete: drop the probabilities (unless kept), write the OME-NGFF
    ``multiscales`` (``unit_um`` µm per level-0 label pixel, when known) and ``attrs``."""
    import zarr

    out = Path(out)
    if not keep_probabilities:
        shutil.rmtree(out / "probabilities", ignore_errors=True)
    group = zarr.open_group(str(out), mode="r+", zarr_format=2)
    group.attrs.update(_ngff_attrs(levels, unit_um))
    group.attrs["nucleoseg"] = {**attrs, "complete": True, "levels": levels}


def _ngff_attrs(levels: int, unit_um: float | None) -> dict:
    unit = unit_um or 1.0
    axis = {"type": "space", **({"unit": "micrometer"} if unit_um else {})}
    return {"multiscales": [{
        "version": "0.4", "name": "nuclei",
        "axes": [{"name": "y", **axis}, {"name": "x", **axis}],
        "datasets": [{"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [unit * 2**k, unit * 2**k]}]} for k in range(levels)],
    }]}


def read_labels_store(path: str | Path) -> dict[str, Any]:
    """Open a labels store (lazily).

    Returns a dict: ``levels`` (zarr arrays, full resolution first), ``scale`` (slide level-0
    pixels per label pixel), ``complete`` (bool), ``n_nuclei`` and ``mpp``.
    """
    import zarr

    p = Path(path)
    attrs = read_attrs(p)
    if attrs is None:
        raise ImageError(f"{p} is not a nucleoseg labels store")
    group = zarr.open_group(str(p), mode="r", zarr_format=2)
    levels = []
    k = 0
    while str(k) in group:
        levels.append(group[str(k)])
        k += 1
    return {"levels": levels, "scale": float(attrs.get("to_level0", 1.0)),
            "complete": bool(attrs.get("complete")), "n_nuclei": attrs.get("n_nuclei"),
            "mpp": attrs.get("fingerprint", {}).get("mpp")}
