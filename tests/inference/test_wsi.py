"""Whole slides block-wise: equality with in-memory inference, seams, resume, distributed,
exports and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _helpers import needs_data
from nucleoseg.inference.postprocess import probabilities_to_labels
from nucleoseg.inference.predict import Cancelled, predict_padded, run
from nucleoseg.inference.segment import Segmenter
from nucleoseg.inference.tiling import make_grid, pad_image
from nucleoseg.inference.wsi import (
    first_pixel_ids,
    plan_slide,
    read_labels_store,
    segment_slide,
)
from nucleoseg.io.images import ImageError, write_pyramid_tiff


def slide_grid_probabilities(seg: Segmenter, img: np.ndarray) -> np.ndarray:
    """In-memory probabilities on the whole-slide tile grid (reflect-padded halo, equal
    cores); in-memory images use fitted tiles, which differ near seams and borders."""
    grid = make_grid(img.shape[:2], tile=seg.tile, halo=seg.halo, stride=seg.stride)
    return run(predict_padded(seg.model, pad_image(img, grid), grid, seg.batch_size,
                              flips=seg.flips))


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two label images split the pixels identically (ids may differ)."""
    pairs = np.unique(np.stack([a.ravel().astype(np.int64), b.ravel().astype(np.int64)]),
                      axis=1)
    ok_a = len(np.unique(pairs[0])) == pairs.shape[1]
    ok_b = len(np.unique(pairs[1])) == pairs.shape[1]
    return bool(ok_a and ok_b and ((a > 0) == (b > 0)).all())


def test_first_pixel_ids_are_global_and_position_coded():
    local = np.array([[0, 2, 2], [1, 1, 2]], np.int32)
    ids = first_pixel_ids(local, origin=(10, 20), width=1000)
    # label 2 starts at (0, 1), label 1 at (1, 0), shifted by the origin
    assert ids[0] == 0
    assert ids[2] == 1 + 10 * 1000 + 21
    assert ids[1] == 1 + 11 * 1000 + 20


def _tiny_slide(tmp_path, size=(700, 900), seed=0):
    from _helpers import synthetic_nuclei

    img, _ = synthetic_nuclei(size, n=60, seed=seed)
    return img, write_pyramid_tiff(tmp_path / "tiny.ome.tif", img, levels=2, tile=128)


def test_tiny_slide_matches_in_memory_and_resumes_after_cancel(tmp_path,
                                                              threshold_model_path):
    from skimage.draw import disk

    from _helpers import synthetic_nuclei

    img, _ = synthetic_nuclei((700, 900), n=60, seed=0)
    # tile 128 / halo 16 / stride 4 on 700 x 900: make_grid shrinks the cores to 88 x 92,
    # so blocks of "192" px are 2 x 2 cores = 176 x 184; put nuclei on seams and a corner
    for centre in ((176, 184), (300, 368), (352, 500), (528, 736)):
        img[disk(centre, 7, shape=img.shape[:2])] = (90, 50, 140)
    path = write_pyramid_tiff(tmp_path / "s.ome.tif", img, levels=2, tile=128)
    seg = Segmenter.load(str(threshold_model_path))
    probs = slide_grid_probabilities(seg, img)[..., :2].astype(np.float16).astype(np.float32)
    reference = probabilities_to_labels(probs, seg.params)
    assert reference.max() > 40

    job = plan_slide(path, tmp_path / "out.zarr", str(threshold_model_path), block=192)
    assert job.block == (176, 184) and job.n_blocks == (4, 5)
    seams = [np.intersect1d(reference[:, k - 1], reference[:, k]) for k in (184, 368, 552, 736)]
    seams += [np.intersect1d(reference[k - 1], reference[k]) for k in (176, 352, 528)]
    seam_nuclei = np.concatenate(seams)
    assert len(np.unique(seam_nuclei[seam_nuclei > 0])) >= 4  # nuclei straddling seams
    calls = []

    def stop_after_some() -> bool:
        calls.append(1)
        return len(calls) > 6

    with pytest.raises(Cancelled):
        run(segment_slide(job, workers=1, should_stop=stop_after_some))
    store = read_labels_store(tmp_path / "out.zarr")
    assert store["complete"] is False  # an interrupted run never claims to be complete
    done = list((tmp_path / "out.zarr" / "progress").glob("predict-*"))
    assert 0 < len(done) < len(job.blocks)

    summary = run(segment_slide(job, workers=2))
    assert summary["tasks_skipped"] >= len(done)
    store = read_labels_store(tmp_path / "out.zarr")
    assert store["complete"] is True
    labels = np.asarray(store["levels"][0][:])
    assert labels.shape == img.shape[:2]
    assert same_partition(labels, reference)
    assert summary["n_nuclei"] == len(np.unique(labels)) - 1
    assert not (tmp_path / "out.zarr" / "probabilities").exists()
    # a rerun of a finished job does nothing
    again = run(segment_slide(job))
    assert again["tasks_run"] == 0


def test_local_cluster_gives_the_single_process_labels(tmp_path, threshold_model_path):
    distributed = pytest.importorskip("distributed")
    _, path = _tiny_slide(tmp_path, size=(500, 600), seed=3)
    model = str(threshold_model_path)
    single = plan_slide(path, tmp_path / "single.zarr", model, block=192)
    run(segment_slide(single))
    multi = plan_slide(path, tmp_path / "multi.zarr", model, block=192)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        summary = run(segment_slide(multi, scheduler=cluster.scheduler_address))
    assert summary["complete"] and summary["tasks_run"] > 0
    a = np.asarray(read_labels_store(tmp_path / "single.zarr")["levels"][0][:])
    b = np.asarray(read_labels_store(tmp_path / "multi.zarr")["levels"][0][:])
    assert a.max() > 0
    np.testing.assert_array_equal(a, b)  # global ids: identical, not only the same partition


def test_two_slides_at_once_in_one_process_do_not_interfere(tmp_path, threshold_model_path,
                                                              tiny_unet_path):
    """Each run has its own model cache and cancel flag: two slides with two models run
    together in two threads and give their single-run labels; cancelling one leaves the
    other running to completion."""
    import threading

    from _helpers import synthetic_nuclei

    _, a_path = _tiny_slide(tmp_path, size=(500, 600), seed=3)
    b_img, _ = synthetic_nuclei((400, 500), n=30, seed=4)
    b_path = write_pyramid_tiff(tmp_path / "b.ome.tif", b_img, levels=2, tile=128)
    alone = {}
    for key, path, model in (("a", a_path, threshold_model_path), ("b", b_path, tiny_unet_path)):
        run(segment_slide(plan_slide(path, tmp_path / f"{key}_alone.zarr", str(model),
                                     block=192)))
        alone[key] = np.asarray(read_labels_store(tmp_path / f"{key}_alone.zarr")["levels"][0][:])
    jobs = {"a": plan_slide(a_path, tmp_path / "a.zarr", str(threshold_model_path), block=192),
            "b": plan_slide(b_path, tmp_path / "b.zarr", str(tiny_unet_path), block=192),
            "c": plan_slide(a_path, tmp_path / "c.zarr", str(tiny_unet_path), block=192)}
    stop_c = threading.Event()
    outcome: dict[str, object] = {}

    def work(key: str) -> None:
        try:
            outcome[key] = run(segment_slide(jobs[key], workers=2,
                                             should_stop=stop_c.is_set if key == "c" else None))
        except Cancelled as exc:
            outcome[key] = exc

    threads = [threading.Thread(target=work, args=(k,)) for k in jobs]
    stop_c.set()  # "c" is cancelled from its start; "a" and "b" must not notice
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert isinstance(outcome["c"], Cancelled)
    for key in ("a", "b"):
        assert outcome[key]["complete"], key
        labels = np.asarray(read_labels_store(tmp_path / f"{key}.zarr")["levels"][0][:])
        np.testing.assert_array_equal(labels, alone[key])
    assert alone["a"].max() > 0
    from nucleoseg.inference import slide_stages

    assert not slide_stages._RUNS  # finished runs hold no model and no open slide file


def test_slide_smaller_than_a_block_and_a_tile(tmp_path, tiny_unet_path):
    from _helpers import synthetic_nuclei

    img, _ = synthetic_nuclei((40, 50), n=3)
    path = write_pyramid_tiff(tmp_path / "small.ome.tif", img, levels=1, tile=16)
    job = plan_slide(path, tmp_path / "small.zarr", str(tiny_unet_path))
    assert len(job.blocks) == 1
    summary = run(segment_slide(job))
    store = read_labels_store(tmp_path / "small.zarr")
    assert summary["complete"] and store["levels"][0].shape == (40, 50)


def test_slide_tta_equals_in_memory_tta_on_the_slide_grid(tmp_path):
    """`tta` on a slide of several blocks: every tile averaged over its 4 flips, as one
    in-memory run on the slide's grid does (a model that looks 2 px off-centre, so its
    flips differ); the store remembers it, so a run without it is not mixed into it."""
    from _helpers import make_threshold_model

    model = str(make_threshold_model(tmp_path / "m", offset=2))
    img, path = _tiny_slide(tmp_path, size=(300, 340))
    seg = Segmenter.load(model, tta=True)
    probs = slide_grid_probabilities(seg, img)[..., :2]
    reference = probabilities_to_labels(probs.astype(np.float16).astype(np.float32),
                                        seg.params)
    plain = slide_grid_probabilities(Segmenter.load(model), img)[..., :2]
    assert not same_partition(probabilities_to_labels(plain, seg.params), reference)
    job = plan_slide(path, tmp_path / "t.zarr", model, block=192, tta=True)
    assert len(job.blocks) > 1 and job.fingerprint["tta"] is True
    run(segment_slide(job, workers=1))
    labels = np.asarray(read_labels_store(tmp_path / "t.zarr")["levels"][0][:])
    assert reference.max() > 10 and same_partition(labels, reference)
    without = plan_slide(path, tmp_path / "t.zarr", model, block=192)
    with pytest.raises(ImageError, match="other settings"):
        run(segment_slide(without))


def test_bad_outputs_are_refused_without_touching_anything(tmp_path, tiny_unet_path):
    _, path = _tiny_slide(tmp_path, size=(300, 300))
    foreign = tmp_path / "mine.zarr"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("user data")
    job = plan_slide(path, foreign, str(tiny_unet_path))
    with pytest.raises(ImageError, match="not a nucleoseg output"):
        run(segment_slide(job))
    assert (foreign / "keep.txt").read_text() == "user data"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    job = plan_slide(path, blocker / "out.zarr", str(tiny_unet_path))
    with pytest.raises(ImageError, match="is not a folder"):
        run(segment_slide(job))
    # same output path, other settings: refused unless overwrite
    run(segment_slide(plan_slide(path, tmp_path / "o.zarr", str(tiny_unet_path))))
    other = plan_slide(path, tmp_path / "o.zarr", str(tiny_unet_path), threshold=0.9)
    with pytest.raises(ImageError, match="other settings"):
        run(segment_slide(other))
    assert run(segment_slide(other, overwrite=True))["complete"]


def test_resolution_is_resampled_to_the_model(tmp_path, tiny_unet_path):
    from _helpers import synthetic_nuclei

    img, _ = synthetic_nuclei((300, 400), n=10)
    path = write_pyramid_tiff(tmp_path / "20x.ome.tif", img, mpp=0.5, levels=1, tile=64)
    job = plan_slide(path, tmp_path / "r.zarr", str(tiny_unet_path), block=192)
    assert job.scale == pytest.approx(2.0) and job.shape == (600, 800)
    assert job.to_level0 == pytest.approx(0.5)
    run(segment_slide(job))
    store = read_labels_store(tmp_path / "r.zarr")
    assert store["scale"] == pytest.approx(0.5)
    assert store["levels"][0].shape == (600, 800)


# ---------------------------------------------------------------- real data, real model
@pytest.fixture(scope="module")
def real_slide(tmp_path_factory, data_root):
    """A 4608 x 4608 pyramidal OME-TIFF stitched from 25 MoNuSeg training tiles."""
    from nucleoseg.io.monuseg import list_tiles

    tiles = [t.image() for t in list_tiles("train", data_root)[:25]]
    rows = [np.concatenate(tiles[5 * r : 5 * r + 5], axis=1) for r in range(5)]
    img = np.concatenate(rows, axis=0)[:4608, :4608]
    folder = tmp_path_factory.mktemp("slide")
    return img, write_pyramid_tiff(folder / "monuseg.ome.tif", img, mpp=0.25, levels=4)


@pytest.mark.slow
@needs_data
def test_real_slide_blockwise_equals_in_memory_and_keeps_seam_nuclei_whole(
        real_slide, tmp_path):
    img, path = real_slide
    seg = Segmenter.load("unet", tile=1280)
    # the slide path computes every pixel in the same tile as one run on its grid
    probs = slide_grid_probabilities(seg, img)[..., :2]
    job = plan_slide(path, tmp_path / "s.zarr", "unet", block=2304, geojson=True, tile=1280)
    assert job.n_blocks == (2, 2) and job.block == (2304, 2304) and job.scale == 1.0
    summary = run(segment_slide(job, keep_probabilities=True))
    store = read_labels_store(tmp_path / "s.zarr")
    stored = np.asarray(
        __import__("zarr").open_array(str(tmp_path / "s.zarr" / "probabilities"))[:])
    np.testing.assert_array_equal(stored, probs.astype(np.float16))
    reference = probabilities_to_labels(stored.astype(np.float32), seg.params)
    labels = np.asarray(store["levels"][0][:])
    assert same_partition(labels, reference)
    assert summary["n_nuclei"] == int(reference.max()) > 5000
    # nuclei crossing the block seams (row and column 2304) keep one id
    straddle = 0
    for axis in (0, 1):
        before = np.take(reference, 2303, axis=axis)
        after = np.take(reference, 2304, axis=axis)
        both = np.intersect1d(before[before > 0], after[after > 0])
        straddle += len(both)
        for rid in both:
            assert len(np.unique(labels[reference == rid])) == 1
    assert straddle > 50
    # the label pyramid is there for display
    assert [lv.shape for lv in store["levels"]] == [(4608, 4608), (2304, 2304),
                                                   (1152, 1152), (576, 576)]
    np.testing.assert_array_equal(store["levels"][1][:], labels[::2, ::2])

    # QuPath GeoJSON: valid structure, one feature per nucleus, areas round-trip within 1 %
    from nucleoseg.io.geojson import geojson_to_labels

    data = json.loads(Path(summary["exports"]["geojson"]).read_text())
    assert data["type"] == "FeatureCollection"
    feats = data["features"]
    assert len(feats) == summary["n_nuclei"]
    ids = [f["id"] for f in feats]
    assert len(set(ids)) == len(ids) and set(ids) == set(np.unique(labels[labels > 0]).tolist())
    for f in feats[:200]:
        ring = f["geometry"]["coordinates"][0]
        assert f["type"] == "Feature" and f["geometry"]["type"] == "Polygon"
        assert len(ring) >= 4 and ring[0] == ring[-1]
        assert f["properties"]["objectType"] == "detection"
    back = geojson_to_labels(data, labels.shape)
    area_in = np.bincount(np.searchsorted(np.array(sorted(ids)), labels[labels > 0]))
    order = np.argsort(ids)
    area_back = np.bincount(back.ravel(), minlength=len(ids) + 1)[1:][order]
    rel = np.abs(area_back - area_in) / area_in
    assert abs(area_back.sum() / area_in.sum() - 1) < 0.01
    assert np.mean(rel < 0.01) > 0.95


def test_slide_exports_carry_classes_block_by_block(tmp_path, threshold_model_path):
    """`classify=` on a slide: every CSV row and GeoJSON detection gets a class, computed
    per block with the margin as context; they agree with classifying the whole labels in
    memory for nearly every nucleus (context windows differ only near block seams)."""
    import csv

    from _helpers import synthetic_nuclei
    from nucleoseg.classify.classifier import NucleusClassifier

    img, _ = synthetic_nuclei((500, 600), n=40, seed=3)
    path = write_pyramid_tiff(tmp_path / "s.ome.tif", img, levels=1, tile=128)
    job = plan_slide(path, tmp_path / "c.zarr", str(threshold_model_path), block=192,
                     geojson=True, measurements=True, classify="consep_types")
    summary = run(segment_slide(job, workers=1))
    with open(summary["exports"]["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["class"] in {"other", "inflammatory", "epithelial", "spindle"}
                        for r in rows)
    feats = json.loads(Path(summary["exports"]["geojson"]).read_text())["features"]
    by_id = {f["id"]: f["properties"]["classification"]["name"] for f in feats}
    assert {int(r["id"]): r["class"] for r in rows} == by_id
    labels = np.asarray(read_labels_store(tmp_path / "c.zarr")["levels"][0][:])
    ids, idx = NucleusClassifier.load("consep_types").predict(img, labels)
    clf = NucleusClassifier.load("consep_types")
    whole = {int(i): clf.classes[int(k)] for i, k in zip(ids, idx, strict=True)}
    agree = np.mean([whole[i] == c for i, c in by_id.items()])
    assert agree >= 0.9, agree


def test_slide_tiles_are_sized_to_the_memory_budget(tmp_path, tiny_unet_path, monkeypatch):
    """Issue 19 item 10: without --tile a slide runs with tiles that keep the peak within
    3 GB (or half the memory available); the card's smaller tile is kept."""
    from nucleoseg.inference.wsi import slide_tile

    assert slide_tile(2176, available=64_000_000_000) == 1280
    assert slide_tile(2176, available=4_400_000_000) == 1024
    assert slide_tile(2176, available=1_000_000_000) == 768
    assert slide_tile(512, available=64_000_000_000) == 512
    _, path = _tiny_slide(tmp_path, size=(300, 300))
    monkeypatch.setenv("NUCLEOSEG_AVAILABLE_MEMORY", str(64_000_000_000))
    job = plan_slide(path, tmp_path / "o.zarr", str(tiny_unet_path))
    assert job.tile[0] <= 128  # the tiny model's card tile, not raised
    assert plan_slide(path, tmp_path / "o.zarr", "unet").fingerprint["tile"][0] <= 1280
