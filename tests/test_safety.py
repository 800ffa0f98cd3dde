"""Careless and hostile input through the CLI: nothing lost, one clear message, no traceback.

Each test names the item of the tester's report it covers.
"""

import os
import shutil
import stat

import numpy as np
import pytest
from PIL import Image

from nucleoseg.cli import main


def _image(path, size=64):
    from _helpers import synthetic_nuclei

    img, _ = synthetic_nuclei((size, size), n=3)
    Image.fromarray(img).save(path)
    return path


def test_output_never_replaces_the_input(tmp_path, capsys):
    """Item 1: `segment x.tif -o x.tif` refused before any work; the input is unchanged."""
    src = _image(tmp_path / "x.tif")
    before = src.read_bytes()
    assert main(["segment", str(src), "-o", str(src)]) == 2
    assert "would replace it" in capsys.readouterr().err
    assert src.read_bytes() == before


def test_two_inputs_never_share_an_output(tmp_path, capsys):
    """Item 2: a/x.tif and b/x.tif into one --out-dir would collide: refused up front; an
    input named like another's default output is never replaced."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = _image(tmp_path / "a" / "x.tif"), _image(tmp_path / "b" / "x.tif")
    assert main(["segment", str(a), str(b), "--out-dir", str(tmp_path / "out")]) == 2
    assert "would both write" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    y = _image(tmp_path / "y.tif")
    y_labels = _image(tmp_path / "y_labels.tif")
    before = y_labels.read_bytes()
    assert main(["segment", str(y), str(y_labels), "--out-dir", str(tmp_path)]) == 2
    assert "is an input image" in capsys.readouterr().err
    assert y_labels.read_bytes() == before


def test_bad_output_names_fail_before_inference(tmp_path, capsys):
    """Item 17: a bad -o suffix or a folder as output is reported before the model loads."""
    src = _image(tmp_path / "x.png")
    assert main(["segment", str(src), "-o", str(tmp_path / "out.jpg")]) == 2
    assert "cannot write labels as .jpg" in capsys.readouterr().err
    (tmp_path / "folder.tif").mkdir()
    assert main(["segment", str(src), "-o", str(tmp_path / "folder.tif")]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_xml_ground_truth_is_drawn_at_its_own_image_size(tmp_path, capsys, data_root):
    """Item 3: XML outlines take the size of their own image (or --shape), never the
    prediction's: a 500x500 prediction against a 1000x1000 tile's XML is a shape error, and
    an XML without its image asks for --shape."""
    from nucleoseg.io.labels import write_labels
    from nucleoseg.io.monuseg import list_tiles

    tile = next(t for t in list_tiles("test", data_root) if t.xml_path is not None)
    truth = tile.labels()
    small = tmp_path / "small.tif"
    write_labels(small, truth[:500, :500])
    assert main(["evaluate", str(small), str(tile.xml_path)]) == 2
    assert "differ in shape" in capsys.readouterr().err
    full = tmp_path / "full.tif"
    write_labels(full, truth)
    assert main(["evaluate", str(full), str(tile.xml_path)]) == 0
    out = capsys.readouterr().out
    assert "ground truth:" in out and " 1.0000" in out
    lonely = tmp_path / "lonely.xml"
    shutil.copy(tile.xml_path, lonely)
    assert main(["evaluate", str(full), str(lonely)]) == 2
    assert "--shape" in capsys.readouterr().err
    assert main(["evaluate", str(full), str(lonely), "--shape", "1000x1000"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(full), str(lonely), "--shape", "2000x2000"]) == 2
    assert "differ in shape" in capsys.readouterr().err


def test_outputs_follow_the_umask(tmp_path):
    """Item 8: atomic writes no longer leave 0600 files."""
    from nucleoseg.io.atomic import atomic_write_bytes

    old = os.umask(0o022)
    try:
        p = atomic_write_bytes(tmp_path / "f.csv", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_model_names_are_checked_before_any_work(tmp_path, capsys):
    """Items 6 and 11: a name that escapes the folder or is 300 characters long is refused
    at once (no data is read, nothing is written)."""
    from nucleoseg.models.weights import WeightsError, check_model_name

    for bad in ("x/../../escape/X", "../x", "a" * 300, ".hidden", ""):
        with pytest.raises(WeightsError):
            check_model_name(bad)
    assert check_model_name("unet_my_lab-2") == "unet_my_lab-2"
    assert main(["train", "--name", "x/../../escape/X", "--data", str(tmp_path / "none"),
                 "--out", str(tmp_path / "out")]) == 2
    assert "invalid model name" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape").exists()
    assert main(["train", "--name", "a" * 300, "--out", str(tmp_path / "out")]) == 2
    assert "too long" in capsys.readouterr().err


def test_disk_errors_are_one_line(tmp_path, capsys):
    """Item 11: an OSError while writing (here a --csv path under a file, which even root
    cannot create) ends in one line, exit 2."""
    from nucleoseg.io.labels import write_labels

    lab = np.zeros((20, 20), np.int32)
    lab[2:8, 2:8] = 1
    write_labels(tmp_path / "p.tif", lab)
    (tmp_path / "plain").write_text("not a folder")
    assert main(["evaluate", str(tmp_path / "p.tif"), str(tmp_path / "p.tif"),
                 "--csv", str(tmp_path / "plain" / "t.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nucleoseg: error:") and "Traceback" not in err


def test_a_model_card_without_checksum_is_refused(tmp_path, tiny_unet_path):
    """Item 7: a card without sha256 no longer loads any network silently."""
    import json

    from nucleoseg.models.weights import WeightsError, load_model

    model = tmp_path / "m.keras"
    shutil.copy(tiny_unet_path, model)
    card = json.loads(tiny_unet_path.with_suffix(".json").read_text())
    model.with_suffix(".json").write_text(json.dumps(card))
    load_model(model)  # with its checksum it loads
    del card["sha256"]
    model.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="no sha256"):
        load_model(model)


def test_black_fill_is_never_a_nucleus(tmp_path, threshold_model_path):
    """Item 4: an all-black region gives no nucleus (the model calls dark "nucleus"); the
    rest of the image is segmented as before."""
    from _helpers import synthetic_nuclei
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter

    img, _ = synthetic_nuclei((160, 160), n=8)
    seg = Segmenter.load(str(threshold_model_path))
    before = run(seg.segment(img))
    black = img.copy()
    black[:, 100:] = 0
    labels = run(seg.segment(black))
    assert (labels[:, 100:] == 0).all()
    keep = before[:, :90] > 0
    assert ((labels[:, :90] > 0) == keep).mean() > 0.99


def test_exif_orientation_is_applied(tmp_path):
    """Item 4: a JPEG whose EXIF says "rotate 90" opens as viewers show it; the header
    check reports the turned shape too."""
    from nucleoseg.io.images import open_image, probe_image

    img = np.zeros((40, 60, 3), np.uint8)
    img[:10, :] = 255  # a white band along the top edge
    exif = Image.Exif()
    exif[0x0112] = 6  # stored pixels must be turned 90 degrees clockwise to display
    path = tmp_path / "turned.jpg"
    Image.fromarray(img).save(path, exif=exif, quality=95)
    shown = open_image(path)
    assert shown.shape == (60, 40, 3)
    assert probe_image(path)[0][:2] == (60, 40)
    assert shown[:, -10:].mean() > 200  # the top band is now on the right


def test_huge_xml_outline_is_bounded(tmp_path):
    """Item 9: an outline of 100,000 vertices zigzagging across a 1000x1000 tile (minutes
    with a per-pixel point-in-polygon test) rasterises in a few seconds; ordinary outlines
    keep the exact convention."""
    import time

    from nucleoseg.io.monuseg import read_xml_labels

    k = np.arange(100_000)
    xs = np.where(k % 2 == 0, 5.0, 995.0)
    ys = 5 + k * 990 / k.size
    verts = "".join(f'<Vertex X="{x:.2f}" Y="{y:.3f}"/>' for x, y in zip(xs, ys, strict=True))
    small = '<Vertex X="20" Y="20"/><Vertex X="30" Y="20"/><Vertex X="30" Y="30"/>' \
            '<Vertex X="20" Y="30"/>'
    xml = tmp_path / "big.xml"
    xml.write_text(f"<Annotations><Annotation><Regions><Region><Vertices>{small}</Vertices>"
                   f"</Region><Region><Vertices>{verts}</Vertices></Region></Regions>"
                   "</Annotation></Annotations>")
    t0 = time.perf_counter()
    lab = read_xml_labels(xml, (1000, 1000))
    assert time.perf_counter() - t0 < 20
    assert lab.max() == 2 and (lab == 1).sum() == 100  # the small square: 1-based 20..30


def test_images_too_large_for_the_memory_are_refused_before_decoding(tmp_path, monkeypatch,
                                                                     capsys):
    """Item 10: the in-memory path checks the memory it would need (~80 B/px) against the
    memory available before decoding, and says how to go block-wise."""
    from nucleoseg.io.images import ImageError, open_image

    src = _image(tmp_path / "x.png", size=256)
    monkeypatch.setenv("NUCLEOSEG_AVAILABLE_MEMORY", str(256 * 256 * 80 - 1))
    with pytest.raises(ImageError, match="needs about .* GB are available"):
        open_image(src)
    assert main(["segment", str(src), "-o", str(tmp_path / "y.tif")]) == 2
    assert "block-wise" in capsys.readouterr().err
    monkeypatch.setenv("NUCLEOSEG_AVAILABLE_MEMORY", str(256 * 256 * 80))
    assert open_image(src).shape == (256, 256, 3)


def test_a_tiff_too_large_for_the_memory_goes_block_wise(tmp_path, monkeypatch, capsys,
                                                         threshold_model_path):
    """Item 10: a plain TIFF that would not fit in memory is segmented block-wise into
    ``<stem>_nuclei.zarr`` instead of being refused (a PNG cannot be read by region and is
    refused with the advice to save it as a tiled TIFF)."""
    import tifffile

    from _helpers import synthetic_nuclei
    from nucleoseg.io.labels_store import read_labels_store
    from nucleoseg.io.wsi import is_slide

    img, _ = synthetic_nuclei((300, 320), n=20)
    tifffile.imwrite(tmp_path / "big.tif", img)
    assert not is_slide(tmp_path / "big.tif")
    monkeypatch.setenv("NUCLEOSEG_AVAILABLE_MEMORY", str(300 * 320 * 80 - 1))
    assert is_slide(tmp_path / "big.tif")
    assert main(["segment", str(tmp_path / "big.tif"), "-m", str(threshold_model_path),
                 "-q"]) == 0
    store = read_labels_store(tmp_path / "big_nuclei.zarr")
    assert store["complete"] and store["n_nuclei"] > 5
    assert "big.tif" in capsys.readouterr().out


def test_one_never_into_weights_rule(tmp_path, tiny_unet_path):
    """Issue 18: the one rule refuses the shipped folder and folders inside it, for models,
    fine-tunes, classifiers and model cards alike."""
    from nucleoseg.classify.classifier import ClassifierError, NucleusClassifier
    from nucleoseg.models.weights import WeightsError, check_not_shipped, shipped_dir
    from nucleoseg.training.finetune import fine_tune

    for folder in (shipped_dir(), shipped_dir() / "classifiers", shipped_dir() / "x" / "y"):
        with pytest.raises(WeightsError, match="shipped weights folder"):
            check_not_shipped(folder)
    check_not_shipped(tmp_path)
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(WeightsError):
        fine_tune(tiny_unet_path, [(img, np.zeros((64, 64), int))], "x", out_dir=shipped_dir())
    f = np.zeros((4, 36), np.float32)
    f[2:, 0] = 1
    with pytest.raises(ClassifierError):
        NucleusClassifier.fit(f, np.array([0, 0, 1, 1]), ["a", "b"], trees=2).save(
            shipped_dir() / "classifiers", "x")


def test_evaluate_says_which_file_is_which(tmp_path, capsys):
    """Item 5: swapped arguments swap precision and recall; the output names the roles."""
    from nucleoseg.io.labels import write_labels

    a = np.zeros((40, 40), np.int32)
    a[5:15, 5:15] = 1
    b = np.zeros_like(a)
    b[5:20, 5:20] = 1
    write_labels(tmp_path / "p.tif", a)
    write_labels(tmp_path / "t.tif", b)
    assert main(["evaluate", str(tmp_path / "p.tif"), str(tmp_path / "t.tif")]) == 0
    out = capsys.readouterr().out
    assert f"prediction: {tmp_path / 'p.tif'}   ground truth: {tmp_path / 't.tif'}" in out
