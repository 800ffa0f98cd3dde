"""Prepare, size and bring back a GPU-machine run (the ``device`` tool; 64 MiB travel a call).

What travels is the working tree (tracked and untracked-not-ignored files) plus the paths a
call carries. The shipped weights alone are ~64 MB, so a training call first moves the bulky
tracked files it does not need into the ignored ``.hold/`` (``hide``) and puts them back
afterwards (``restore``; ``git checkout -- weights docs benchmarks/results`` does the same).
What comes back is at most 8 files of 16 MiB: ``pack`` (run there, standard library only)
writes a run's folder as a gzipped tar in parts of 15 MiB, small files first, and
``unpack`` joins and extracts them here. Usage, from the repository root::

    python scripts/device_kit.py stage [DATA]   # .device/data (fit tiles) + .device/whl
    python scripts/device_kit.py hide           # weights/*, docs/, benchmarks/results -> .hold/
    python scripts/device_kit.py size --carry .device/data .device/whl
    # device run: bash scripts/gpu_session.sh 420   (carry .device/data .device/whl)
    python scripts/device_kit.py restore
    python scripts/device_kit.py unpack /work/.device/...files_at... /tmp/gpu_run

For the GPU checks of the shipped models (``scripts/gpu_check.sh``), which need the weights
but no training data: ``stage --check`` (``.device/val``: one validation tile per data set)
and ``hide --keep-models`` (the classifiers, docs and results held back).

``size`` exits 1 when the call would not fit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

LIMIT = 64 * 2**20
PART = 15 * 2**20
MAX_PARTS = 4  # 60 MiB of the 64 that come back (8 files of 16 MiB at most)
HELD = ("weights", "docs", "benchmarks/results")
HELD_BESIDE_MODELS = ("weights/classifiers", "docs", "benchmarks/results")
KEEP = ("*.json",)  # model cards stay: a run from scratch reads its architecture there
HOLD = Path(".hold")
WHEELS = ("keras=={keras}", "namex", "optree")


def _git(*args: str) -> list[str]:
    out = subprocess.run(["git", args[0], "-z", *args[1:]], check=True, capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p]


def travel_bytes(carry: list[str]) -> tuple[int, list[tuple[int, str]]]:
    """Bytes a call would send: the working tree plus ``carry``, and the largest entries."""
    files = [Path(p) for p in _git("ls-files", "--cached", "--others", "--exclude-standard")]
    for c in carry:
        root = Path(c)
        files += [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    sizes = [(p.stat().st_size, str(p)) for p in files if p.is_file()]
    return sum(s for s, _ in sizes), sorted(sizes, reverse=True)[:8]


def _held(folders: tuple[str, ...]) -> list[str]:
    """Tracked files under ``folders`` other than the cards."""
    return [p for p in _git("ls-files", "--", *folders)
            if not any(Path(p).match(k) for k in KEEP) and Path(p).exists()]


def hide(keep_models: bool = False) -> None:
    """Move the bulky tracked files under :data:`HELD` (cards kept; with ``keep_models``,
    :data:`HELD_BESIDE_MODELS`) into ``.hold/``."""
    moved = 0
    for p in _held(HELD_BESIDE_MODELS if keep_models else HELD):
        dest = HOLD / p
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p, dest)
        moved += 1
    print(f"moved {moved} files into {HOLD}/; put them back with: python {sys.argv[0]} restore")


def restore() -> None:
    """Move what :func:`hide` held back, then check that no tracked file is missing."""
    if HOLD.is_dir():
        for src in sorted(p for p in HOLD.rglob("*") if p.is_file()):
            dest = src.relative_to(HOLD)
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dest)
        shutil.rmtree(HOLD)
    missing = _git("ls-files", "--deleted")
    if missing:
        sys.exit(f"still missing: {', '.join(missing[:5])}; run git checkout -- {' '.join(HELD)}")
    print("working tree complete")


def stage(data: str | None, check: bool = False) -> None:
    """``.device/data``: the fit tiles of both data sets (lossless), or with ``check``
    ``.device/val``: the first validation tile of each; ``.device/whl``: the Keras wheels
    the GPU machine lacks, at this environment's Keras version."""
    import keras

    sys.path.insert(0, str(Path(__file__).parent))
    from pack_data import pack_consep, pack_monuseg

    root = Path(".device")
    folder = root / ("val" if check else "data")
    shutil.rmtree(folder, ignore_errors=True)
    split, first = ("val", 1) if check else ("fit", None)
    pack_monuseg(data, folder / "monuseg", split, first)
    pack_consep(data, folder / "consep", split, first)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                    "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                    "-d", str(root / "whl"),
                    *[w.format(keras=keras.__version__) for w in WHEELS]], check=True)


def pack(src: str, out: str) -> None:
    """``src`` as ``run.tgz.NN`` parts in ``out``, small files first, so that a run too big
    to come back whole loses its largest files, not its logs."""
    files = sorted((p for p in Path(src).rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
    Path(out).mkdir(parents=True, exist_ok=True)
    joined = Path(out) / "run.tgz"
    with tarfile.open(joined, "w:gz", compresslevel=6) as tar:
        for p in files:
            tar.add(p, arcname=str(p.relative_to(src)))
    size = joined.stat().st_size
    with open(joined, "rb") as f:
        for k in range(min(MAX_PARTS, -(-size // PART))):
            Path(out, f"run.tgz.{k:02d}").write_bytes(f.read(PART))
    joined.unlink()
    lost = size - min(size, MAX_PARTS * PART)
    print(f"packed {len(files)} files, {size / 2**20:.1f} MiB"
          + (f"; the last {lost / 2**20:.1f} MiB do not come back" if lost else ""))


def unpack(parts: str, dest: str) -> None:
    """Join the ``run.tgz.NN`` parts in ``parts`` and extract them into ``dest`` (what a
    truncated archive holds before its cut is kept)."""
    pieces = sorted(Path(parts).glob("run.tgz.[0-9][0-9]"))
    if not pieces:
        sys.exit(f"no run.tgz.NN parts in {parts}")
    Path(dest).mkdir(parents=True, exist_ok=True)
    joined = Path(dest) / ".run.tgz"
    with open(joined, "wb") as f:
        for p in pieces:
            f.write(p.read_bytes())
    names = []
    try:
        with tarfile.open(joined, "r:gz") as tar:
            for member in tar:
                try:
                    tar.extract(member, dest, filter="data")  # no paths out of dest
                except tarfile.FilterError as exc:
                    print(f"refused {member.name}: {exc}")
                    continue
                names.append(member.name)
    except (EOFError, tarfile.ReadError, OSError) as exc:
        print(f"archive cut short after {len(names)} files ({exc})")
    joined.unlink()
    print("\n".join(names))


def main(argv: list[str]) -> None:
    cmd, *rest = argv or ["-h"]
    if cmd == "size":
        carry = rest[rest.index("--carry") + 1:] if "--carry" in rest else []
        total, largest = travel_bytes(carry)
        for s, p in largest:
            print(f"{s / 2**20:8.1f} MiB  {p}")
        print(f"{total / 2**20:.1f} MiB of {LIMIT / 2**20:.0f} MiB would travel")
        sys.exit(0 if total <= LIMIT else 1)
    flags = [a for a in rest if a.startswith("--")]
    rest = [a for a in rest if not a.startswith("--")]
    commands = {"hide": lambda: hide("--keep-models" in flags), "restore": restore,
                "stage": lambda: stage(*rest[:1] or [None], check="--check" in flags),
                "pack": lambda: pack(*rest), "unpack": lambda: unpack(*rest)}
    if cmd not in commands:
        sys.exit(__doc__)
    commands[cmd]()


if __name__ == "__main__":
    main(sys.argv[1:])
