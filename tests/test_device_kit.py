"""scripts/device_kit.py: what a GPU-machine run sends back is packed and unpacked intact,
small files first, and an archive cut at the size limit still gives its logs back."""

from __future__ import annotations

import importlib.util
import tarfile
from pathlib import Path

import numpy as np

_SPEC = importlib.util.spec_from_file_location(
    "device_kit", Path(__file__).parents[1] / "scripts" / "device_kit.py")
kit = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(kit)


def _run_folder(root: Path, big: int) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    files = {"hv_scratch/train.log": b"epoch 1/9 loss 0.5\n", "hv_scratch.log": b"== done\n",
             "hv_scratch/hv_unet.weights.h5": rng.bytes(big)}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_pack_and_unpack_give_back_every_file(tmp_path, monkeypatch):
    monkeypatch.setattr(kit, "PART", 40_000)  # several parts from a small run
    files = _run_folder(tmp_path / "run", 100_000)
    kit.pack(str(tmp_path / "run"), str(tmp_path / "out"))
    parts = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert parts == ["run.tgz.00", "run.tgz.01", "run.tgz.02"]
    kit.unpack(str(tmp_path / "out"), str(tmp_path / "back"))
    for name, data in files.items():
        assert (tmp_path / "back" / name).read_bytes() == data


def test_an_archive_over_the_limit_keeps_its_small_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(kit, "PART", 20_000)
    monkeypatch.setattr(kit, "MAX_PARTS", 2)
    files = _run_folder(tmp_path / "run", 100_000)
    kit.pack(str(tmp_path / "run"), str(tmp_path / "out"))
    assert "do not come back" in capsys.readouterr().out
    assert len(list((tmp_path / "out").iterdir())) == 2
    kit.unpack(str(tmp_path / "out"), str(tmp_path / "back"))
    assert "cut short" in capsys.readouterr().out
    for name in ("hv_scratch/train.log", "hv_scratch.log"):
        assert (tmp_path / "back" / name).read_bytes() == files[name]


def test_unpack_writes_nothing_outside_its_folder(tmp_path, capsys):
    evil = tmp_path / "evil.tgz"
    (tmp_path / "payload").write_bytes(b"x")
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(tmp_path / "payload", arcname="../escaped")
    (tmp_path / "out").mkdir()
    evil.rename(tmp_path / "out" / "run.tgz.00")
    kit.unpack(str(tmp_path / "out"), str(tmp_path / "back" / "inner"))
    assert not (tmp_path / "back" / "escaped").exists()
    assert "refused ../escaped" in capsys.readouterr().out


def test_the_gpu_session_passes_options_its_scripts_take(monkeypatch):
    """``scripts/gpu_session.sh`` runs unattended on a GPU: every option it gives the two
    training scripts must parse (a renamed flag would otherwise be found only there)."""
    import re
    import shlex

    root = Path(__file__).parents[1]
    text = (root / "scripts" / "gpu_session.sh").read_text()
    common = shlex.split(re.search(r"common=\((.*?)\)", text, re.S).group(1))
    common = ["420" if a == "$budget" else a for a in common if a != "$@"]
    monkeypatch.syspath_prepend(str(root / "benchmarks"))
    from hv_head import fine_tune_parser

    args = fine_tune_parser("x\n", "/tmp/x").parse_args(common)
    assert (args.train_only, args.scratch, args.time_budget, args.workers) == (True, True,
                                                                              420.0, 4)
    for script in re.findall(r"python3 (benchmarks/\w+\.py)", text):
        assert (root / script).is_file()
