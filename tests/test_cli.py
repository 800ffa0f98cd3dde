"""The command line on real files: results, and one clear line for bad input."""

import numpy as np
import pytest
from PIL import Image

from nucleoseg.cli import main


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


def test_segment_and_evaluate_with_a_real_model(tmp_path, tiny_unet_path, capsys):
    from _helpers import synthetic_nuclei

    img, lab = synthetic_nuclei((150, 130))
    Image.fromarray(img).save(tmp_path / "img.png")
    Image.fromarray(lab.astype(np.uint16)).save(tmp_path / "gt.png")
    out = tmp_path / "pred.tif"
    assert main(["segment", str(tmp_path / "img.png"), "-o", str(out), "-m",
                 str(tiny_unet_path), "-q", "--threshold", "0.0", "--geojson",
                 "--measurements", "--mpp", "0.25"]) == 0
    import json

    assert json.loads((tmp_path / "pred.geojson").read_text())["features"]
    assert (tmp_path / "pred_nuclei.csv").read_text().startswith("id,centroid_x_px")
    import tifffile

    pred = tifffile.imread(out)
    assert pred.shape == (150, 130) and pred.max() >= 1  # threshold 0: everything foreground
    assert main(["evaluate", str(out), str(tmp_path / "gt.png"), "--csv",
                 str(tmp_path / "m.csv")]) == 0
    text = capsys.readouterr().out
    assert "dice" in text and (tmp_path / "m.csv").read_text().startswith("name,dice")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["segment", "missing.png"], "not found"),
        (["segment", "{notimage}"], "not an image"),
        (["segment", "{rgba16}", "-m", "unknown-model"], "no trained model"),
        (["segment", "{nan}", "-m", "unet"], "NaN"),
        (["evaluate", "{lab_a}", "{lab_b}"], "differ in shape"),
        (["train", "--model", "resnet"], "unknown model"),
        (["segment", "{rgba16}", "{rgba16}"], "--out-dir"),
    ],
)
def test_bad_input_gives_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "notes.png").write_text("hello")
    Image.fromarray(np.zeros((40, 40, 4), np.uint8)).save(tmp_path / "rgba.png")
    import tifffile

    tifffile.imwrite(tmp_path / "rgba16.tif", np.zeros((40, 40, 4), np.uint16))
    tifffile.imwrite(tmp_path / "nan.tif", np.full((40, 40), np.nan, np.float32))
    np.save(tmp_path / "a.npy", np.zeros((10, 10), np.int32))
    np.save(tmp_path / "b.npy", np.zeros((10, 12), np.int32))
    subs = {"notimage": tmp_path / "notes.png", "rgba16": tmp_path / "rgba16.tif",
            "nan": tmp_path / "nan.tif", "lab_a": tmp_path / "a.npy", "lab_b": tmp_path / "b.npy"}
    argv = [a.format(**subs) for a in argv]
    assert main(argv) == 2
    line = _err(capsys)
    assert line.startswith("nucleoseg: error:") and message in line
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["gray16", "rgba16", "gray_float", "one_channel"])
def test_other_layouts_are_converted_and_segmented(tmp_path, tiny_unet_path, kind):
    import tifffile

    ramp = (np.arange(64 * 70) % 4000).reshape(64, 70)
    arrays = {
        "gray16": ramp.astype(np.uint16),
        "rgba16": np.stack([ramp] * 4, axis=-1).astype(np.uint16),
        "gray_float": (ramp / 4000.0).astype(np.float32),
        "one_channel": (ramp % 256).astype(np.uint8)[..., None],
    }
    tifffile.imwrite(tmp_path / "in.tif", arrays[kind])
    assert main(["segment", str(tmp_path / "in.tif"), "-o", str(tmp_path / "o.png"), "-m",
                 str(tiny_unet_path), "-q"]) == 0
    assert np.array(Image.open(tmp_path / "o.png")).shape == (64, 70)


def test_models_lists_shipped(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "unet" in out and "segnet" in out and "deeplabv3" in out
