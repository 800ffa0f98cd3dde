"""The built wheel (not only the editable install) carries the manifest and the weights."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_carries_manifest_and_weights(tmp_path):
    pytest.importorskip("build")
    pytest.importorskip("hatchling")
    res = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o",
                          str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = tmp_path.glob("napari_nucleoseg-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        ep = zf.read(entry_points).decode()
    assert "nucleoseg/napari.yaml" in names
    for model in ("unet", "unet_lite", "segnet", "deeplabv3", "se_unet"):
        assert f"nucleoseg/weights/{model}.keras" in names
        assert f"nucleoseg/weights/{model}.json" in names
    assert "nucleoseg/weights/classifiers/consep_types.npz" in names
    assert "nucleoseg/weights/classifiers/consep_types.json" in names
    assert "nucleoseg/weights/classifiers/consep_types.keras" in names  # its patch net
    for part in ("xml", "bin"):  # and the net as an OpenVINO file (napari's process runs it)
        assert f"nucleoseg/weights/classifiers/consep_types_patch_net.{part}" in names
    assert "napari-nucleoseg = nucleoseg:napari.yaml" in ep
    assert "nucleoseg = nucleoseg.cli:main" in ep
