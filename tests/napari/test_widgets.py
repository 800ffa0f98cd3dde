"""The plugin in a real napari viewer (pytest-qt + Xvfb): widgets, workers, layers."""

from __future__ import annotations

import sys

import numpy as np
import pytest

napari = pytest.importorskip("napari")

PLUGIN = "napari-nucleoseg"


def _dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def _errors():
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records
            if n.severity in ("error", "ERROR") or getattr(n.severity, "value", "") == "error"]


@pytest.fixture
def he_image(data_root_or_none):
    """A real H&E image: a MoNuSeg test tile when the data is present, else a synthetic one."""
    if data_root_or_none is not None:
        from nucleoseg.io.monuseg import list_tiles

        t = list_tiles("test", data_root_or_none)[0]
        return t.image(), t.labels()
    from _helpers import synthetic_nuclei

    return synthetic_nuclei((400, 400), n=40)


@pytest.fixture
def data_root_or_none():
    from _helpers import DATA_ROOT

    return DATA_ROOT


def test_widgets_open_from_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    from nucleoseg._widgets.classify import ClassifyWidget
    from nucleoseg._widgets.evaluate import EvaluateWidget
    from nucleoseg._widgets.finetune import FineTuneWidget
    from nucleoseg._widgets.segment import SegmentWidget

    for name, cls in (("Segment nuclei", SegmentWidget), ("Fine-tune model", FineTuneWidget),
                      ("Evaluate segmentation", EvaluateWidget),
                      ("Classify nuclei", ClassifyWidget)):
        assert isinstance(_dock(viewer, name), cls)


def test_segment_real_image_and_viewer_stays_responsive(make_napari_viewer, qtbot, he_image):
    from qtpy.QtCore import QTimer

    image, _ = he_image
    viewer = make_napari_viewer()
    layer = viewer.add_image(image, name="tile", scale=(0.5, 0.5), translate=(10, 20))
    widget = _dock(viewer, "Segment nuclei")
    assert widget._model.value.endswith("unet.keras")  # shipped UNet first
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    progress = []
    widget._image.value = layer
    widget._on_run()
    widget._worker.yielded.connect(progress.append)
    qtbot.waitUntil(lambda: "tile nuclei" in viewer.layers, timeout=180_000)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=10_000)
    timer.stop()
    labels = viewer.layers["tile nuclei"]
    assert labels.data.shape == image.shape[:2] and labels.data.max() > 20
    assert tuple(labels.scale) == (0.5, 0.5) and tuple(labels.translate) == (10, 20)
    assert len(ticks) > 10  # the Qt event loop kept turning while the worker ran
    assert any(p[0] > 0 for p in progress)
    assert widget._run.enabled and not widget._cancel.enabled
    # the status names the count, the time and the precision "auto" resolved to (Keras
    # is not imported here: TensorFlow and the GL context cannot share this process)
    from nucleoseg.backend import installed
    from nucleoseg.models.precision import cpu_auto_precision

    status = widget._status.value
    assert status.startswith(f"{int(labels.data.max())} nuclei in ") and " s (" in status
    used = status.rsplit("(", 1)[1].rstrip(")").split(", ")
    # the compute process measured which precision pays here and left it in the (test's)
    # cache folder, which this process reads
    engine = "openvino" if installed("openvino") else "keras"
    assert used == ["openvino" if engine == "openvino" else "tensorflow", "CPU",
                    cpu_auto_precision(engine)[0]]


def test_segment_panel_switches_the_keras_backend(make_napari_viewer, qtbot, he_image):
    """Issue 16: the panel lists the installed backends; choosing JAX restarts the compute
    process on JAX and the status says which backend, device and precision ran."""
    image, _ = he_image
    viewer = make_napari_viewer()
    layer = viewer.add_image(image[:256, :256], name="crop")
    widget = _dock(viewer, "Segment nuclei")
    assert widget._backend.choices[0] == "auto" and "tensorflow" in widget._backend.choices
    if "jax" not in widget._backend.choices:
        pytest.skip("JAX is not installed (the testing extra installs it)")
    qtbot.waitUntil(lambda: widget._devices_worker.is_running is False, timeout=120_000)
    assert widget._device.choices[:2] == ("auto", "CPU")  # + each GPU by name, when seen
    first = widget._compute._proc.pid
    widget._backend.value = "jax"
    assert widget._compute.backend == "jax"
    qtbot.waitUntil(lambda: widget._devices_worker.is_running is False, timeout=120_000)
    assert widget._compute._proc.pid != first  # a new compute process, on JAX
    widget._image.value = layer
    widget._on_run()
    qtbot.waitUntil(lambda: "crop nuclei" in viewer.layers, timeout=180_000)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=10_000)
    assert viewer.layers["crop nuclei"].data.max() > 0
    assert "(jax, CPU, " in widget._status.value


def test_segment_panel_loads_the_model_before_the_first_click(make_napari_viewer):
    from nucleoseg.inference.predict import run

    viewer = make_napari_viewer()
    widget = _dock(viewer, "Segment nuclei")
    first = widget._model.value
    # no Segment pressed: the compute process already holds the chosen model
    assert run(widget._compute.run("loaded")) == [(first, "auto", [])]
    lite = next(v for v in widget._model.choices if v.endswith("unet_lite.keras"))
    widget._model.value = lite
    widget._precision.value = "float32"
    assert run(widget._compute.run("loaded")) == [(lite, "float32", [])]
    # choosing an image traces the model for its tiles: 1000x700 fits one 1008x704 tile
    widget._image.value = viewer.add_image(np.zeros((1000, 700, 3), np.uint8), name="im")
    assert run(widget._compute.run("loaded")) == [(lite, "float32", [(1, 1008, 704, 3)])]


def test_cancel_stops_within_a_batch_and_adds_no_layer(make_napari_viewer, qtbot, he_image):
    image, _ = he_image
    big = np.tile(image, (2, 2, 1))
    viewer = make_napari_viewer()
    viewer.add_image(big, name="big")
    widget = _dock(viewer, "Segment nuclei")
    widget._tile.value, widget._halo.value = 128, 32
    seen = []

    def on_progress(value):
        seen.append(value)
        if value[0] >= 1 and not widget._status.value.startswith("cancelling"):
            widget._on_cancel()

    widget._on_run()
    widget._worker.yielded.connect(on_progress)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    done = [d for d, t, _ in seen if t > 0]
    total = max(t for _, t, _ in seen)
    batch = 4  # the model card's batch size
    first = min(d for d in done if d >= 1)
    assert max(done) <= first + 2 * batch  # the request lands within a batch or two
    assert max(done) < total
    assert "big nuclei" not in viewer.layers
    assert widget._status.value == "cancelled"


def test_finetune_saves_user_model_that_segment_lists(make_napari_viewer, qtbot,
                                                      tiny_unet_path, he_image):
    import shutil

    from nucleoseg.models.weights import shipped_dir, user_dir

    folder = user_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".keras", ".json"):
        shutil.copy(tiny_unet_path.with_suffix(suffix), folder / f"tiny{suffix}")
    shipped_before = sorted(p.stat().st_mtime for p in shipped_dir().iterdir())
    image, labels = he_image
    viewer = make_napari_viewer()
    viewer.add_image(image[:320, :320], name="img")
    corrected = viewer.add_labels(labels[:320, :320].astype(np.int32), name="corrected")
    seg = _dock(viewer, "Segment nuclei")
    ft = _dock(viewer, "Fine-tune model")
    assert ft._freeze.value is False  # the same default as fine_tune() and the CLI
    ft._base.value = str(folder / "tiny.keras")
    ft._name.value = "tiny_ft"
    ft._epochs.value, ft._steps.value = 1, 2
    ft._labels_layer.value = corrected
    before = corrected.data.copy()
    ft._on_run()
    qtbot.waitUntil(lambda: ft._worker is None, timeout=120_000)
    assert (folder / "tiny_ft.keras").is_file() and (folder / "tiny_ft.json").is_file()
    assert len(ft._history["loss"]) == 2 and np.isfinite(ft._history["loss"]).all()
    # the held-out fifth of the pair scored before and after, shown to the user
    assert "held-out Dice" in ft._status.value and len(ft._history["val_dice"]) == 1
    qtbot.waitUntil(lambda: any("tiny_ft" in str(c) for c in seg._model.choices),
                    timeout=10_000)
    np.testing.assert_array_equal(corrected.data, before)  # user labels untouched
    assert sorted(p.stat().st_mtime for p in shipped_dir().iterdir()) == shipped_before


def test_finetune_cancel_keeps_previous_model(make_napari_viewer, qtbot, tiny_unet_path,
                                              he_image):
    import shutil

    from nucleoseg.models.weights import user_dir

    folder = user_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".keras", ".json"):
        shutil.copy(tiny_unet_path.with_suffix(suffix), folder / f"keep{suffix}")
    old = (folder / "keep.keras").read_bytes()
    image, labels = he_image
    viewer = make_napari_viewer()
    viewer.add_image(image[:128, :128], name="img")
    viewer.add_labels(labels[:128, :128].astype(np.int32), name="lab")
    ft = _dock(viewer, "Fine-tune model")
    ft._base.value = str(folder / "keep.keras")
    ft._name.value = "keep"  # would replace the model it starts from
    ft._epochs.value, ft._steps.value = 3, 50
    ft._on_run()
    ft._worker.yielded.connect(lambda v: ft._on_cancel())
    qtbot.waitUntil(lambda: ft._worker is None, timeout=120_000)
    assert (folder / "keep.keras").read_bytes() == old
    assert ft._status.value.startswith("cancelled")


def test_evaluate_reproduces_core_numbers(make_napari_viewer):
    from nucleoseg.evaluation.metrics import evaluate_pair

    truth = np.zeros((50, 60), np.int32)
    truth[5:20, 5:20] = 1
    truth[30:40, 30:45] = 2
    pred = np.zeros_like(truth)
    pred[6:21, 5:18] = 3
    pred[30:40, 48:55] = 4
    viewer = make_napari_viewer()
    p = viewer.add_labels(pred, name="pred")
    t = viewer.add_labels(truth, name="gt")
    w = _dock(viewer, "Evaluate segmentation")
    w._pred.value, w._truth.value = p, t
    w._on_run()
    expected = evaluate_pair(pred, truth)
    row = w._rows[0]
    for k, v in expected.items():
        assert row[k] == v
    table = w._table.to_dict("list") if hasattr(w._table, "to_dict") else None
    assert table is None or table["dice"][0] == round(expected["dice"], 4)
    overlay = viewer.layers["errors: pred vs gt"].data
    assert (overlay == 2).sum() == ((pred > 0) & (truth == 0)).sum()


def test_evaluate_shape_mismatch_is_a_clear_message(make_napari_viewer):
    viewer = make_napari_viewer()
    p = viewer.add_labels(np.zeros((10, 10), np.int32), name="a")
    t = viewer.add_labels(np.zeros((10, 12), np.int32), name="b")
    w = _dock(viewer, "Evaluate segmentation")
    w._pred.value, w._truth.value = p, t
    w._on_run()
    assert w._rows == []
    assert any("differ in shape" in m for m in _errors())


def test_reader_writer_and_sample_data(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "synthetic_he")
    assert layers[0].rgb and layers[0].data.shape == (512, 512, 3)
    lab = np.zeros((40, 50), np.int32)
    lab[5:15, 5:20] = 1
    lab[25:35, 30:45] = 2
    layer = viewer.add_labels(lab, name="lab")
    out = tmp_path / "lab.xml"
    written = layer.save(str(out), plugin=PLUGIN)
    assert written and out.is_file()
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "lab.png")
    read = viewer.open(str(out), plugin=PLUGIN)
    assert read[0].data.shape == (40, 50) and read[0].data.max() == 2


def test_core_tests_and_gui_tests_are_separate_processes():
    """Guard for the test layout: this process (the napari one) never loaded TensorFlow."""
    assert "tensorflow" not in sys.modules and "keras" not in sys.modules


def test_demo_opens_sample_with_segment_docked(make_napari_viewer):
    from nucleoseg.demo import main

    viewer = main(["--no-run"])
    try:
        assert any(layer.rgb for layer in viewer.layers if hasattr(layer, "rgb"))
        assert any("Segment nuclei" in name for name in viewer.window.dock_widgets)
        active = viewer.layers.selection.active  # issue 19 item 17: never a hidden layer
        assert active is not None and active.visible and active._type_string == "image"
    finally:
        viewer.close()


def test_demo_script_exits_cleanly_while_the_panel_lists_devices(tmp_path):
    """README command 1's check (`python -m nucleoseg.demo --no-run`) exits 0: the Segment
    panel's device listing is still waiting on its compute child when the script ends, and a
    worker that finished after Python tore down its Qt objects aborted the process (134)."""
    import os
    import subprocess

    env = {**os.environ, "NAPARI_CONFIG": str(tmp_path / "napari.yaml")}
    for _ in range(2):
        res = subprocess.run([sys.executable, "-m", "nucleoseg.demo", "--no-run"], env=env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "has been deleted" not in res.stderr


def test_finetune_region_choices(make_napari_viewer, qtbot, he_image):
    """Whole layer, the part in view, or the rectangles of a Shapes layer."""
    image, labels = he_image
    viewer = make_napari_viewer()
    viewer.add_image(image, name="img")
    lab = viewer.add_labels(labels.astype(np.int32), name="lab")
    ft = _dock(viewer, "Fine-tune model")
    ft._labels_layer.value = lab
    (whole_img, whole_lab), = ft._pairs()
    assert whole_lab.shape == labels.shape
    viewer.camera.center = (labels.shape[0] / 4, labels.shape[1] / 4)
    viewer.camera.zoom = 8
    viewer.window.show()

    def view_size():
        (r0, c0), (r1, c1) = np.asarray(lab.corner_pixels)[:, -2:]
        return (r1 - r0) * (c1 - c0)

    qtbot.waitUntil(lambda: view_size() < labels.size / 4, timeout=10_000)
    ft._in_view.value = True
    (view_img, view_lab), = ft._pairs()
    assert view_lab.size < labels.size / 4 and view_img.shape[:2] == view_lab.shape
    ft._in_view.value = False
    shapes = viewer.add_shapes([[[10, 20], [10, 90], [60, 90], [60, 20]]],
                               shape_type="rectangle")
    ft._roi.value = shapes
    (roi_img, roi_lab), = ft._pairs()
    assert roi_lab.shape == (50, 70)
    np.testing.assert_array_equal(roi_lab, labels[10:60, 20:90])


def test_geojson_writer(make_napari_viewer, tmp_path):
    import json

    viewer = make_napari_viewer()
    lab = np.zeros((30, 40), np.int32)
    lab[5:15, 5:20] = 1
    layer = viewer.add_labels(lab, name="lab")
    out = tmp_path / "lab.geojson"
    assert layer.save(str(out), plugin=PLUGIN)
    data = json.loads(out.read_text())
    assert data["features"][0]["properties"]["objectType"] == "detection"


def test_slide_reader_claims_slides_but_not_every_tiff():
    from napari.plugins._npe2 import get_readers

    assert PLUGIN in get_readers("scan.svs") and PLUGIN in get_readers("scan.ome.tif")
    assert PLUGIN in get_readers("result.zarr")
    # ordinary images stay with napari's reader, without a "which plugin?" question
    assert PLUGIN not in get_readers("tile.tif") and PLUGIN not in get_readers("tile.png")


def test_slide_opens_lazily_and_segments_blockwise_and_in_view(make_napari_viewer, qtbot,
                                                               tmp_path, threshold_model_path):
    import shutil

    from _helpers import synthetic_nuclei
    from nucleoseg._widgets.segment import VIEW
    from nucleoseg.inference.wsi import read_labels_store
    from nucleoseg.io.images import write_pyramid_tiff
    from nucleoseg.models.weights import user_dir

    img, _ = synthetic_nuclei((1100, 1300), n=200, seed=1)
    path = write_pyramid_tiff(tmp_path / "slide.ome.tif", img, levels=3, tile=128)
    errors_before = len(_errors())  # notifications of earlier tests stay in the manager
    viewer = make_napari_viewer()
    layer = viewer.open(str(path), plugin=PLUGIN)[0]
    assert layer.multiscale and len(layer.data) == 3 and layer.rgb
    assert type(layer.data[0]).__module__.startswith("dask")  # lazy: tiles read on demand
    folder = user_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".keras", ".json"):
        shutil.copy(threshold_model_path.with_suffix(suffix), folder / f"discs{suffix}")
    widget = _dock(viewer, "Segment nuclei")
    widget._model.reset_choices()
    widget._model.value = str(folder / "discs.keras")
    widget._image.value = layer
    progress = []
    widget._on_run()
    widget._worker.yielded.connect(progress.append)
    qtbot.waitUntil(lambda: "slide nuclei" in viewer.layers, timeout=180_000)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=10_000)
    assert any("block" in str(p[2]) for p in progress)  # per-block progress
    labels = viewer.layers["slide nuclei"]
    store = read_labels_store(tmp_path / "slide_nuclei.zarr")  # beside the slide
    assert store["complete"] and store["n_nuclei"] > 100
    assert labels.multiscale and labels.data[0].shape == (1100, 1300)
    assert np.asarray(labels.data[0][:]).max() > 0
    # File > Save Selected Layer through the plugin's writers, exported from the store
    import json

    napari.save_layers(str(tmp_path / "nuclei.geojson"), [labels], plugin=PLUGIN)
    napari.save_layers(str(tmp_path / "nuclei.csv"), [labels], plugin=PLUGIN)
    features = json.loads((tmp_path / "nuclei.geojson").read_text())["features"]
    rows = (tmp_path / "nuclei.csv").read_text().splitlines()
    assert len(features) == store["n_nuclei"] == len(rows) - 1
    assert "nan" not in rows[1]  # hematoxylin read from the slide the store names

    # the part on screen only, placed where it belongs
    viewer.window.show()
    viewer.camera.center = (300, 400)
    viewer.camera.zoom = 6
    from nucleoseg._widgets._common import view_region

    qtbot.waitUntil(lambda: (lambda r: (r[1] - r[0]) * (r[3] - r[2]))(view_region(layer))
                    < 1100 * 1300 / 4, timeout=10_000)
    r0, r1, c0, c1 = view_region(layer)
    widget._region.value = VIEW
    widget._on_run()
    qtbot.waitUntil(lambda: "slide nuclei (view)" in viewer.layers, timeout=120_000)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=10_000)
    view = viewer.layers["slide nuclei (view)"]
    assert view.data.shape == (r1 - r0, c1 - c0)
    assert tuple(view.translate) == (r0, c0)
    assert _errors()[errors_before:] == []

    # the store reopens through the plugin's reader as a lazy multiscale Labels layer
    again = viewer.open(str(tmp_path / "slide_nuclei.zarr"), plugin=PLUGIN)[0]
    assert again._type_string == "labels" and again.multiscale


def _two_kinds_image():
    """Small dark round nuclei (left half) and large pale elongated ones (right half)."""
    from skimage.draw import disk, ellipse

    img = np.full((240, 240, 3), (235, 200, 220), np.uint8)
    lab = np.zeros((240, 240), np.int32)
    k = 0
    centres = {"round": [], "long": []}
    for r in range(20, 240, 40):
        for c in range(20, 240, 40):
            k += 1
            if c < 120:
                rr, cc = disk((r, c), 5, shape=lab.shape)
                img[rr, cc] = (60, 30, 110)
                centres["round"].append((r, c))
            else:
                rr, cc = ellipse(r, c, 6, 15, shape=lab.shape)
                img[rr, cc] = (150, 110, 180)
                centres["long"].append((r, c))
            lab[rr, cc] = k
    return img, lab, centres


def test_classify_panel_trains_from_marks_and_fills_features(make_napari_viewer, tmp_path,
                                                             monkeypatch):
    """Mark three nuclei of each of two classes, train: every nucleus gets its class in the
    labels layer's features, a coloured classes layer appears, the table counts them; the
    classifier saves to the user folder and applies again from there."""
    monkeypatch.setenv("NUCLEOSEG_USER_MODELS", str(tmp_path / "models"))
    errors_before = len(_errors())
    img, lab, centres = _two_kinds_image()
    viewer = make_napari_viewer()
    image = viewer.add_image(img, name="he", scale=(0.5, 0.5))
    labels = viewer.add_labels(lab, name="nuclei", scale=(0.5, 0.5))
    w = _dock(viewer, "Classify nuclei")
    w._image.value, w._labels_layer.value = image, labels
    w._names.value = "round, long"
    w._on_marks()
    marks = viewer.layers["class marks"]
    for cls in ("round", "long"):
        w._mark_as.value = cls
        for r, c in centres[cls][:3]:
            marks.add(np.array([r, c]))  # data coordinates of the marks layer
    assert list(marks.features["class"]) == ["round"] * 3 + ["long"] * 3
    w._on_train()
    assert len(_errors()) == errors_before, _errors()[errors_before:]
    feats = labels.features
    assert len(feats) == lab.max()
    by_id = dict(zip(feats["index"], feats["class"], strict=True))
    for cls in ("round", "long"):
        for r, c in centres[cls]:
            assert by_id[int(lab[r, c])] == cls
    table = w._table.to_dict("list") if hasattr(w._table, "to_dict") else w._table.value
    assert "classes: nuclei" in viewer.layers
    assert viewer.layers["classes: nuclei"].data is labels.data  # no copy
    w._mpp.value = 0.5
    w._save_name.value = "round_long"
    w._on_save()
    saved = tmp_path / "models" / "classifiers" / "round_long.npz"
    assert saved.is_file() and saved.with_suffix(".json").is_file()
    labels.features = {}
    w._saved.value = str(saved)
    w._on_apply()
    assert len(labels.features) == lab.max()
    table = w._table.value
    counts = dict(zip(table["data"] and [r[0] for r in table["data"]],
                      [r[1] for r in table["data"]], strict=True))
    assert counts == {"round": len(centres["round"]), "long": len(centres["long"])}
    # a density per mm² with the pixel size: 240x240 px at 0.5 µm = 0.0144 mm²
    assert table["data"][0][2] == int(round(len(centres["round"]) / 0.0144))


def test_classify_panel_applies_the_shipped_classifier_whole(make_napari_viewer):
    """The shipped CoNSeP classifier applies with its patch net (from its OpenVINO file, no
    TensorFlow in napari's process): the panel's classes are the library's."""
    from nucleoseg.classify.classifier import (
        DEFAULT_CLASSIFIER,
        NucleusClassifier,
        resolve_classifier_path,
    )

    errors_before = len(_errors())
    img, lab, w, labels = _classify_panel(make_napari_viewer)
    w._saved.value = str(resolve_classifier_path(DEFAULT_CLASSIFIER))
    w._on_apply()
    assert len(_errors()) == errors_before, _errors()[errors_before:]
    assert "forest part" not in w._status.value and DEFAULT_CLASSIFIER in w._status.value
    clf = NucleusClassifier.load(DEFAULT_CLASSIFIER)
    ids, proba = clf.predict_proba(img, lab)
    by_id = dict(zip(labels.features["index"], labels.features["class"], strict=True))
    assert [by_id[int(i)] for i in ids] == clf.class_names(proba.argmax(axis=1))
    shown = np.asarray(labels.features["probability"], float)
    np.testing.assert_allclose(shown, proba.max(axis=1), atol=1e-6)
    forest_only = clf.predict_features(w._cache[2])[1].max(axis=1)
    assert np.abs(shown - forest_only).max() > 0.01  # the net took part


def _classify_panel(make_napari_viewer):
    """``(image, labels, panel, labels layer)``: the two-kinds image and its labels in a
    viewer, chosen in a docked Classify panel."""
    img, lab, _ = _two_kinds_image()
    viewer = make_napari_viewer()
    image = viewer.add_image(img, name="he")
    labels = viewer.add_labels(lab, name="nuclei")
    w = _dock(viewer, "Classify nuclei")
    w._image.value, w._labels_layer.value = image, labels
    return img, lab, w, labels


def test_classify_panel_clear_messages(make_napari_viewer):
    _, lab, w, _ = _classify_panel(make_napari_viewer)
    viewer = w._viewer
    w._on_train()
    assert any("mark a few nuclei" in m for m in _errors())
    other = viewer.add_labels(lab[:100], name="small")
    w._labels_layer.value = other
    w._on_apply()
    assert any("differ in size" in m for m in _errors())


def test_evaluate_panel_reports_types_and_shows_aji(make_napari_viewer):
    """Both layers carry a class per nucleus: the status adds F_d, accuracy and F_c; the
    table shows AJI without repeating Dice as f1."""
    from _helpers import typed_pair

    truth, true_cls, pred, pred_cls = typed_pair()
    viewer = make_napari_viewer()
    p = viewer.add_labels(pred, name="pred", features={"index": list(pred_cls),
                                                       "class": list(pred_cls.values())})
    t = viewer.add_labels(truth, name="gt", features={"index": list(true_cls),
                                                      "class": list(true_cls.values())})
    w = _dock(viewer, "Evaluate segmentation")
    w._pred.value, w._truth.value = p, t
    w._on_run()
    assert "F_d 1.000  accuracy 0.500" in w._status.value
    assert "F_tumour 0.500" in w._status.value
    from nucleoseg._widgets.evaluate import COLUMNS
    from nucleoseg.evaluation.metrics import evaluate_pair

    assert "aji" in COLUMNS[:3] and "f1" not in COLUMNS
    # where the instance errors come from: merged and split shares, in the table and status
    m = evaluate_pair(pred, truth)
    assert {"merged", "split"} <= set(COLUMNS)
    assert w._rows[-1]["merged"] == m["merged"] and w._rows[-1]["split"] == m["split"]
    assert f"merged {m['merged']:.1%}  split {m['split']:.1%}" in w._status.value


def test_evaluate_overlay_marks_merged_nuclei(make_napari_viewer):
    """A prediction that joins two true nuclei is drawn in the overlay's merged colour."""
    truth = np.zeros((30, 30), np.int32)
    truth[5:15, 5:12], truth[5:15, 12:19] = 1, 2
    truth[20:26, 20:26] = 3
    pred = np.zeros_like(truth)
    pred[5:15, 5:19] = 7  # both
    pred[20:26, 20:25] = 8
    viewer = make_napari_viewer()
    p, t = viewer.add_labels(pred, name="pred"), viewer.add_labels(truth, name="gt")
    w = _dock(viewer, "Evaluate segmentation")
    w._pred.value, w._truth.value = p, t
    w._on_run()
    overlay = viewer.layers["errors: pred vs gt"].data
    np.testing.assert_array_equal(overlay == 4, pred == 7)
    assert (overlay[20:26, 20:25] == 1).all() and (overlay[20:26, 25] == 3).all()
    assert "merged 50.0%  split 0.0%" in w._status.value and "magenta merged" in w._status.value


def test_evaluate_bad_labels_and_bad_csv_path_are_messages(make_napari_viewer, tmp_path):
    """Issue 19 item 12: negative ids and an unwritable CSV path give a notification, not an
    EmitLoopError dump (the handlers run as the buttons call them)."""
    viewer = make_napari_viewer()
    bad = np.zeros((10, 10), np.int32)
    bad[2:4, 2:4] = -3
    p = viewer.add_labels(bad, name="bad")
    t = viewer.add_labels(np.zeros((10, 10), np.int32), name="gt")
    w = _dock(viewer, "Evaluate segmentation")
    w._pred.value, w._truth.value = p, t
    w._run.clicked.emit()
    assert any("negative ids" in m for m in _errors())
    p.data = np.abs(bad)
    w._run.clicked.emit()
    (tmp_path / "plain").write_text("x")
    w._csv.value = tmp_path / "plain" / "t.csv"
    w._save.clicked.emit()
    assert any("cannot save" in m for m in _errors())


def test_long_model_description_does_not_widen_the_segment_panel(make_napari_viewer):
    """Issue 19 item 13: choosing unet_lite (long description) keeps the panel narrow and
    the canvas wide at napari's default window size."""
    viewer = make_napari_viewer(show=True)
    dock, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment nuclei")
    lite = next(v for v in w._model.choices if "unet_lite" in str(v))
    w._model.value = lite
    from qtpy.QtWidgets import QApplication

    for _ in range(20):
        QApplication.processEvents()
    canvas = viewer.window._qt_viewer.canvas.native
    assert dock.width() < 500, dock.width()
    assert canvas.width() > 300, canvas.width()


def test_closing_a_panel_ends_its_compute_process(make_napari_viewer, qtbot):
    """Issue 19 item 15: a closed Segment panel frees its compute process (~1 GB)."""
    viewer = make_napari_viewer()
    dock, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment nuclei")
    qtbot.waitUntil(lambda: w._compute._proc is not None and w._compute._proc.is_alive(),
                    timeout=30000)
    proc = w._compute._proc
    viewer.window.remove_dock_widget(dock)
    qtbot.waitUntil(lambda: not proc.is_alive(), timeout=15000)


def test_a_script_without_main_guard_starts_the_compute_process_once(tmp_path):
    """Issue 19 item 16: the spawned child no longer re-runs the caller's script (which
    would open a second viewer and break the pipe)."""
    import subprocess

    marker = tmp_path / "runs.txt"
    script = tmp_path / "no_guard.py"
    script.write_text(
        "from nucleoseg._compute import ComputeProcess\n"
        "from nucleoseg.inference.predict import run\n"
        f"open({str(marker)!r}, 'a').write('ran\\n')\n"
        "cp = ComputeProcess()\n"
        "print('child', run(cp.run('ping')))\n"
        "cp.close()\n")
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "child" in res.stdout
    assert marker.read_text().count("ran") == 1


def test_every_panel_shows_its_field_labels_and_several_fit_the_window(make_napari_viewer):
    """Issue 19 items 14/17: each field has its label (a panel attribute must not shadow
    magicgui's ``_labels`` switch), and Segment, Fine-tune and Evaluate docked together
    keep napari's default window height: the compute panels scroll inside their docks."""
    from qtpy.QtWidgets import QApplication, QScrollArea

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    height = window.height()
    panels = {}
    for name in ("Segment nuclei", "Fine-tune model", "Classify nuclei",
                 "Evaluate segmentation"):
        panels[name] = _dock(viewer, name)
        QApplication.processEvents()
    for name, panel in panels.items():
        assert panel.labels is True, name
        first = next(w for w in panel if w.label)
        assert first._labeled_widget() is not None, f"{name}: no label column"
    for name in ("Segment nuclei", "Fine-tune model", "Classify nuclei"):
        assert isinstance(panels[name].native, QScrollArea), name
    assert window.height() <= max(height, 700)
    assert viewer.window._qt_viewer.canvas.native.width() > 300  # the canvas keeps its room


def test_segment_panel_checks_the_memory_before_copying_pixels(make_napari_viewer, monkeypatch):
    """Issue 19 item 10: the panel decides from the memory available, not a fixed cap."""
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((300, 300, 3), np.uint8), rgb=True, name="big")
    from nucleoseg._widgets._common import image_layer_to_rgb
    from nucleoseg.io.images import ImageError

    assert image_layer_to_rgb(layer, viewer).shape == (300, 300, 3)
    monkeypatch.setenv("NUCLEOSEG_AVAILABLE_MEMORY", str(300 * 300 * 80 - 1))
    with pytest.raises(ImageError, match="current view"):
        image_layer_to_rgb(layer, viewer)


def test_finetune_panel_trains_on_the_chosen_backend(make_napari_viewer, qtbot,
                                                     tiny_unet_path, he_image):
    """Issue 16: the Fine-tune panel offers the installed backends too; a fine-tune after
    choosing JAX runs on JAX (the saved card says which backend trained it)."""
    import json
    import shutil

    from nucleoseg.models.weights import user_dir

    folder = user_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".keras", ".json"):
        shutil.copy(tiny_unet_path.with_suffix(suffix), folder / f"tiny{suffix}")
    image, labels = he_image
    viewer = make_napari_viewer()
    viewer.add_image(image[:128, :128], name="img")
    corrected = viewer.add_labels(labels[:128, :128].astype(np.int32), name="lab")
    ft = _dock(viewer, "Fine-tune model")
    assert ft._backend.choices[0] == "auto" and "tensorflow" in ft._backend.choices
    if "jax" not in ft._backend.choices:
        pytest.skip("JAX is not installed (the testing extra installs it)")
    ft._backend.value = "jax"
    assert ft._compute.backend == "jax"
    ft._base.value = str(folder / "tiny.keras")
    ft._name.value = "tiny_jax"
    ft._epochs.value, ft._steps.value = 1, 2
    ft._labels_layer.value = corrected
    ft._on_run()
    qtbot.waitUntil(lambda: ft._worker is None, timeout=180_000)
    card = json.loads((folder / "tiny_jax.json").read_text())
    assert card["fine_tune"]["keras_backend"] == "jax"
