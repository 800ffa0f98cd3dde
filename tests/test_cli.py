"""The command line on real files: results, and one clear line for bad input."""

import os

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
        (["train", "--contact-weight", "2"], "--contact-weight goes with"),
        (["train", "--loss", "bce_dice_contact", "--contact-weight", "0"],
         "--contact-weight goes with"),
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


def test_a_folder_with_one_bad_image_writes_the_others(tmp_path, threshold_model_path, capsys):
    import tifffile

    from _helpers import synthetic_nuclei

    names = []
    for k in range(3):
        names.append(tmp_path / f"im{k}.tif")
        tifffile.imwrite(names[-1], synthetic_nuclei((90, 110), n=6, seed=k)[0])
    # a valid header over NaN pixels: found only once the pixels are read, mid-run
    tifffile.imwrite(tmp_path / "im1.tif", np.full((90, 110, 3), np.nan, np.float32))
    out = tmp_path / "out"
    argv = ["segment", *map(str, names), "--out-dir", str(out), "-m",
            str(threshold_model_path), "-q", "--geojson"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == (
        "nucleoseg: error: 1 of 3 images failed (im1.tif); the others were written")
    assert "im1.tif failed: im1.tif contains NaN" in captured.err
    lines = captured.out.splitlines()
    assert lines[0].startswith("im0.tif: ") and lines[2].startswith("im2.tif: ")  # in order
    assert "QuPath GeoJSON" in lines[1]
    for k in (0, 2):
        assert tifffile.imread(out / f"im{k}_labels.tif").max() >= 3
        assert (out / f"im{k}_labels.geojson").exists()
    assert not (out / "im1_labels.tif").exists()


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


def test_the_command_leaves_tensorflow_its_own_onednn_choice(monkeypatch):
    """Forcing TF_ENABLE_ONEDNN_OPTS=1 made TensorFlow's UNet over 10x slower on an
    AVX2-only CPU; the command (and every process it or an in-process call starts) keeps
    TensorFlow's default."""
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    assert main(["models"]) == 0
    assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ


def test_info_says_what_auto_picks_and_that_nothing_is_sent(capsys, monkeypatch):
    monkeypatch.delenv("NUCLEOSEG_BACKEND", raising=False)
    monkeypatch.delenv("NUCLEOSEG_OPENVINO_TELEMETRY", raising=False)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "auto picks: openvino on the cpu" in out  # this machine and CI: no GPU
    assert "tensorflow: installed" in out and "for a GPU: pip install" in out
    assert "its usage telemetry: off in NucleoSeg's processes" in out
    if "jax: installed" in out:
        from nucleoseg.models.precision import cache_root

        assert f"compiled programs kept in: {cache_root() / 'jax'}" in out


def test_slides_batch_to_zarr_with_exports_and_resume(tmp_path, threshold_model_path, capsys):
    import json

    from _helpers import synthetic_nuclei
    from nucleoseg.inference.wsi import read_labels_store
    from nucleoseg.io.images import write_pyramid_tiff

    slides = []
    for k in range(2):
        img, _ = synthetic_nuclei((400, 500), n=30, seed=k)
        slides.append(str(write_pyramid_tiff(tmp_path / f"s{k}.ome.tif", img, levels=2,
                                             tile=128)))
    out = tmp_path / "out"
    argv = ["segment", *slides, "--out-dir", str(out), "-m", str(threshold_model_path),
            "--block", "192", "--geojson", "--measurements", "-q"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    for k in range(2):
        store = read_labels_store(out / f"s{k}_nuclei.zarr")  # .ome.tif: one suffix
        assert store["complete"] and store["n_nuclei"] > 10
        features = json.loads((out / f"s{k}_nuclei.geojson").read_text())["features"]
        assert len(features) == store["n_nuclei"]
        rows = (out / f"s{k}_nuclei.csv").read_text().splitlines()
        assert rows[0].startswith("id,centroid_x_px") and len(rows) == store["n_nuclei"] + 1
    assert "nuclei ->" in text
    # the same exports, rebuilt later from the finished store alone
    from nucleoseg.inference.wsi import export_store

    export_store(out / "s0_nuclei.zarr", geojson=tmp_path / "again.geojson",
                 csv=tmp_path / "a.csv")
    assert json.loads((tmp_path / "again.geojson").read_text()) == json.loads(
        (out / "s0_nuclei.geojson").read_text())
    assert (tmp_path / "a.csv").read_text() == (out / "s0_nuclei.csv").read_text()
    assert main(argv) == 0  # a rerun finds the work done
    assert capsys.readouterr().out.count("already complete") == 2


def test_slide_bad_input_gives_one_line(tmp_path, threshold_model_path, capsys):
    from _helpers import synthetic_nuclei
    from nucleoseg.io.images import write_pyramid_tiff

    img, _ = synthetic_nuclei((300, 300))
    slide = str(write_pyramid_tiff(tmp_path / "s.ome.tif", img, levels=2, tile=128))
    model = ["-m", str(threshold_model_path), "-q"]
    assert main(["segment", slide, "-o", str(tmp_path / "x.tif"), *model]) == 2
    msg = _err(capsys)
    assert "whole slide" in msg and "-o s_nuclei.zarr" in msg
    cut = tmp_path / "cut.ome.tif"
    data = (tmp_path / "s.ome.tif").read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    assert main(["segment", str(cut), "-o", str(tmp_path / "c.zarr"), *model]) == 2
    msg = _err(capsys)
    assert "truncated" in msg or "cannot read" in msg
    assert not (tmp_path / "c.zarr").exists()  # no partial output
    assert main(["segment", slide, "-o", str(tmp_path / "s.zarr"), "--scheduler",
                 "tcp://127.0.0.1:9", *model]) == 2
    assert "cannot reach the dask scheduler" in _err(capsys)


def test_slide_on_a_dask_cluster_by_address(tmp_path, threshold_model_path, capsys):
    distributed = pytest.importorskip("distributed")
    from _helpers import synthetic_nuclei
    from nucleoseg.inference.wsi import read_labels_store
    from nucleoseg.io.images import write_pyramid_tiff

    img, _ = synthetic_nuclei((400, 420), n=30, seed=5)
    slide = str(write_pyramid_tiff(tmp_path / "c.ome.tif", img, levels=2, tile=128))
    common = [slide, "-m", str(threshold_model_path), "--block", "192", "-q"]
    assert main(["segment", *common, "-o", str(tmp_path / "local.zarr")]) == 0
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        assert main(["segment", *common, "-o", str(tmp_path / "cluster.zarr"),
                     "--scheduler", cluster.scheduler_address]) == 0
    a = read_labels_store(tmp_path / "local.zarr")["levels"][0][:]
    b = read_labels_store(tmp_path / "cluster.zarr")["levels"][0][:]
    assert a.max() > 0
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_benchmark_command_on_monuseg(tmp_path, threshold_model_path, data_root, capsys,
                                      precision):
    """`nucleoseg benchmark` on two real test tiles: table, JSON with the metric `precision`
    (a number) apart from the compute precision (a name), baseline row included."""
    import json

    out = tmp_path / "rows.json"
    assert main(["benchmark", str(threshold_model_path), "--data", str(data_root),
                 "--datasets", "monuseg", "--limit", "2", "--precision", precision,
                 "--json", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert f"precision {precision}" in text and "otsu_watershed" in text
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == [str(threshold_model_path), "otsu_watershed"]
    assert rows[0]["compute_precision"] == precision
    assert "compute_precision" not in rows[1]
    for r in rows:
        assert 0 < r["precision"] <= 1 and 0 < r["dice"] <= 1
        assert len(r["per_image"]) == 2


def test_benchmark_quality_setting(tmp_path, threshold_model_path, data_root, capsys):
    """`benchmark --tta` runs the models with 4 flips per tile and says so in its rows and
    title. The threshold model's kernels are symmetric, so flipped back and averaged its
    metrics must equal the plain run's (a flip left undone would mirror the nuclei)."""
    import json

    rows = {}
    for flag in ([], ["--tta"]):
        out = tmp_path / f"rows{len(flag)}.json"
        assert main(["benchmark", str(threshold_model_path), "--data", str(data_root),
                     "--datasets", "monuseg", "--limit", "1", "--no-baseline",
                     "--precision", "float32", "--json", str(out), "-q", *flag]) == 0
        rows[bool(flag)] = json.loads(out.read_text())[0]
        assert ("with --tta" in capsys.readouterr().out) == bool(flag)
    assert rows[True]["tta"] is True and rows[False]["tta"] is False
    assert rows[False]["dice"] > 0.3
    for key, tol in (("dice", 1e-6), ("pq", 1e-6), ("object_f1", 1e-6), ("aji", 1e-4)):
        assert rows[True][key] == pytest.approx(rows[False][key], abs=tol)  # float rounding


def test_benchmark_both_data_sets_with_types(tmp_path, threshold_model_path, data_root, capsys):
    """One table per data set; CoNSeP rows carry the nucleus-type metrics of the shipped
    classifier; the JSON maps data set to rows."""
    import json

    out = tmp_path / "rows.json"
    assert main(["benchmark", str(threshold_model_path), "--data", str(data_root),
                 "--limit", "1", "--no-baseline", "--precision", "float32",
                 "--json", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "MoNuSeg 2018 test tiles (1)" in text and "CoNSeP test tiles (1)" in text
    assert "F_inflammatory" in text and "recall" in text
    tables = json.loads(out.read_text())
    assert set(tables) == {"monuseg", "consep"}
    types = tables["consep"][0]["types"]
    assert 0 <= types["f_d"] <= 1 and "f_epithelial" in types
    assert "types" not in tables["monuseg"][0]


def test_segment_classify_exports(tmp_path, data_root, capsys):
    """`segment --classify` on a CoNSeP tile: counts per class, a class column in the CSV
    (id and centroids kept), a QuPath classification per GeoJSON detection."""
    import csv
    import json

    from nucleoseg.io.consep import list_tiles

    image = list_tiles("test", data_root)[0].image_path
    out = tmp_path / "t_labels.tif"
    assert main(["segment", str(image), "-o", str(out), "--model", "unet_lite", "--classify",
                 "--measurements", "--geojson", "-q"]) == 0
    text = capsys.readouterr().out
    assert "classes: other" in text and "inflammatory" in text
    with open(tmp_path / "t_labels_nuclei.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and {"id", "centroid_x_px", "centroid_y_px", "class"} <= set(rows[0])
    assert {r["class"] for r in rows} <= {"other", "inflammatory", "epithelial", "spindle"}
    feats = json.loads((tmp_path / "t_labels.geojson").read_text())["features"]
    by_id = {str(f["id"]): f["properties"]["classification"] for f in feats}
    for r in rows:
        assert by_id[r["id"]]["name"] == r["class"] and len(by_id[r["id"]]["color"]) == 3
    assert main(["segment", str(image), "-o", str(tmp_path / "x.tif"), "--classify", "nope"]
                ) == 2
    assert "no classifier named 'nope'" in capsys.readouterr().err


def test_evaluate_with_class_tables(tmp_path, capsys):
    """`evaluate --pred-classes --truth-classes`: HoVer-Net type metrics on a case counted
    by hand (two nuclei paired, one class right)."""
    from _helpers import typed_pair
    from nucleoseg.io.labels import write_labels

    truth, _, pred, _ = typed_pair()
    write_labels(tmp_path / "p.tif", pred)
    write_labels(tmp_path / "t.tif", truth)
    (tmp_path / "p.csv").write_text("id,centroid_x_px,class\n4,10,tumour\n9,35,immune\n")
    (tmp_path / "t.csv").write_text("id,type,name\n1,3,tumour\n2,3,tumour\n")
    assert main(["evaluate", str(tmp_path / "p.tif"), str(tmp_path / "t.tif"),
                 "--pred-classes", str(tmp_path / "p.csv"),
                 "--truth-classes", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "F_d 1.0000  accuracy 0.5000" in out
    # tumour: TP 1, FN 1 -> 2/(2+2) ; immune: FP 1 -> 0
    assert "F_tumour 0.5000" in out and "F_immune 0.0000" in out
    assert main(["evaluate", str(tmp_path / "p.tif"), str(tmp_path / "t.tif"),
                 "--pred-classes", str(tmp_path / "p.csv")]) == 2


def test_finetune_command_reports_held_out_before_after(tmp_path, tiny_unet_path, capsys):
    """`nucleoseg finetune`: trains on 80 % of the pair, prints held-out Dice/AJI before and
    after and where it saved; the card keeps the validation, best epoch and pair sizes."""
    import json

    from PIL import Image

    from _helpers import synthetic_nuclei
    from nucleoseg.io.labels import write_labels

    img, lab = synthetic_nuclei((320, 320), n=30)
    Image.fromarray(img).save(tmp_path / "x.png")
    write_labels(tmp_path / "x_labels.tif", lab)
    assert main(["finetune", "--base", str(tiny_unet_path), "--image", str(tmp_path / "x.png"),
                 "--labels", str(tmp_path / "x_labels.tif"), "--name", "mine", "--out",
                 str(tmp_path / "m"), "--epochs", "2", "--steps", "3", "--batch-size", "2",
                 "--lr", "3e-3", "-q"]) == 0
    out = capsys.readouterr().out
    assert "held-out 20% of each pair" in out and "Dice" in out and "saved" in out
    card = json.loads((tmp_path / "m" / "mine.json").read_text())
    val = card["fine_tune"]["validation"]
    assert set(val) >= {"before", "after", "best_epoch", "improved"}
    assert card["fine_tune"]["pair_sizes"] == [[320, 320]]
    assert main(["finetune", "--image", str(tmp_path / "x.png"), "--labels",
                 str(tmp_path / "x_labels.tif"), "--name", "../escape"]) == 2
    with pytest.raises(SystemExit):  # argparse: --labels is required
        main(["finetune", "--image", str(tmp_path / "x.png"), "--name", "ok"])


def test_finetune_rounds_accumulate_kept_corrections(tmp_path, tiny_unet_path, capsys):
    """Round 1 keeps its pair (with consent); round 2 starts from round 1's model and trains
    on both rounds' pairs; a card pointing its corrections outside its folder is refused."""
    import json

    import numpy as np
    from PIL import Image

    from _helpers import synthetic_nuclei
    from nucleoseg.io.labels import write_labels
    from nucleoseg.training.finetune import kept_corrections

    common = ["--epochs", "1", "--steps", "2", "--batch-size", "2", "--holdout", "0", "-q",
              "--out", str(tmp_path / "m"), "--precision", "float32"]
    for k in (1, 2):
        img, lab = synthetic_nuclei((96, 96), n=6, seed=k)
        Image.fromarray(img).save(tmp_path / f"x{k}.png")
        write_labels(tmp_path / f"x{k}_labels.tif", lab)
    assert main(["finetune", "--base", str(tiny_unet_path), "--image", str(tmp_path / "x1.png"),
                 "--labels", str(tmp_path / "x1_labels.tif"), "--name", "r1",
                 "--keep-corrections", *common]) == 0
    r1 = tmp_path / "m" / "r1.keras"
    first = kept_corrections(r1)
    assert len(first) == 1
    np.testing.assert_array_equal(first[0][0], np.asarray(Image.open(tmp_path / "x1.png")))
    assert main(["finetune", "--base", str(r1), "--image", str(tmp_path / "x2.png"),
                 "--labels", str(tmp_path / "x2_labels.tif"), "--name", "r2",
                 "--keep-corrections", "--with-previous", *common]) == 0
    out = capsys.readouterr().out
    assert "round 2: trained on 1 pair(s) of earlier rounds and 1 new" in out
    card = json.loads((tmp_path / "m" / "r2.json").read_text())["fine_tune"]
    assert card["round"] == 2 and card["pairs"] == 2 and card["corrections"]["pairs"] == 2
    assert len(kept_corrections(tmp_path / "m" / "r2.keras")) == 2
    assert len(kept_corrections(r1)) == 1  # the base's corrections are untouched
    from nucleoseg.io.atomic import current_umask

    mode = (tmp_path / "m" / "r2.corrections").stat().st_mode & 0o777
    assert mode == 0o777 & ~current_umask()  # not mkdtemp's 0700
    # without consent nothing is kept
    assert main(["finetune", "--base", str(r1), "--image", str(tmp_path / "x2.png"),
                 "--labels", str(tmp_path / "x2_labels.tif"), "--name", "r3", *common]) == 0
    assert not (tmp_path / "m" / "r3.corrections").exists()
    assert kept_corrections(tmp_path / "m" / "r3.keras") == []
    # a card must not lead outside its folder
    path = tmp_path / "m" / "r2.json"
    bad = json.loads(path.read_text())
    bad["fine_tune"]["corrections"]["folder"] = "../../elsewhere"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="outside the model's folder"):
        kept_corrections(tmp_path / "m" / "r2.keras")


def test_tune_chooses_the_marker_rule_on_validation_tiles(tmp_path, threshold_model_path,
                                                         data_root, capsys):
    """`nucleoseg tune --markers-only --write` on a copy of a model: the card keeps its
    thresholds, records the marker search and what it replaced; the shipped folder is
    refused before any work."""
    import json
    import shutil

    from nucleoseg.training.postprocess_choice import MARKER_DYNAMICS, MARKER_LEVELS, MARKER_SIGMAS

    for suffix in (".keras", ".json"):
        shutil.copy(threshold_model_path.with_suffix(suffix), tmp_path / f"m{suffix}")
    before = json.loads((tmp_path / "m.json").read_text())
    assert main(["tune", str(tmp_path / "m.keras"), "--data", str(data_root), "--datasets",
                 "monuseg", "--markers-only", "--write"]) == 0
    out = capsys.readouterr().out
    assert "monuseg: Dice" in out and "(card: Dice" in out
    card = json.loads((tmp_path / "m.json").read_text())
    chosen, old = card["postprocess"], before["postprocess"]
    assert chosen["threshold"] == old["threshold"] and chosen["min_size"] == old["min_size"]
    trials = card["marker_search"]
    assert len(trials) == 1 + len(MARKER_DYNAMICS) * len(MARKER_SIGMAS) * len(MARKER_LEVELS)
    assert trials[0]["marker_dynamic"] == 0 and trials[0]["interior_threshold"] == \
        old["interior_threshold"]
    best = max(trials, key=lambda t: t["dice"] + t["aji"])
    if best["marker_dynamic"] > 0:  # one data set: the pooled score decides
        assert chosen["marker_dynamic"] == best["marker_dynamic"]
    assert card["validation_before_marker_search"]["postprocess"] == old
    assert card["validation_by_dataset"]["monuseg"]["aji"] >= trials[0]["aji"] - 1e-4
    assert card["sha256"] == before["sha256"]

    # --min-size-only: the thresholds and the marker rule stay, the size is the grid's best
    # by Dice + AJI + PQ (the first of equals, the card's own size tried first)
    from nucleoseg.training.postprocess_choice import MIN_SIZES

    assert main(["tune", str(tmp_path / "m.keras"), "--data", str(data_root), "--datasets",
                 "monuseg", "--min-size-only", "--write"]) == 0
    assert "PQ" in capsys.readouterr().out
    sized = json.loads((tmp_path / "m.json").read_text())
    assert {k: v for k, v in sized["postprocess"].items() if k != "min_size"} == \
        {k: v for k, v in chosen.items() if k != "min_size"}
    sizes = sized["min_size_search"]
    tried = [t["min_size"] for t in sizes]
    assert tried[0] == chosen["min_size"] and sorted(tried) == sorted({*MIN_SIZES, tried[0]})
    top = max(sizes, key=lambda t: t["dice"] + t["aji"] + t["pq"])
    assert sized["postprocess"]["min_size"] == top["min_size"]
    assert sized["validation_before_min_size_search"]["postprocess"] == chosen

    from nucleoseg.models.weights import shipped_dir

    shipped = (shipped_dir() / "unet.json").read_bytes()
    assert main(["tune", "unet", "--data", str(data_root), "--markers-only", "--write"]) == 2
    assert "shipped weights folder" in capsys.readouterr().err
    assert (shipped_dir() / "unet.json").read_bytes() == shipped
