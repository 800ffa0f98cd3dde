"""Many images through one model with reading and finishing overlapped (segment_many)."""

import threading

import numpy as np
import pytest
from PIL import Image

from nucleoseg.inference.batch import segment_many
from nucleoseg.inference.predict import Cancelled
from nucleoseg.inference.segment import Segmenter
from nucleoseg.io.images import ImageError, open_image
from nucleoseg.io.labels import read_labels, write_labels


@pytest.fixture
def files(tmp_path):
    """Five PNG files of synthetic nuclei (sizes differ) and a damaged one in the middle."""
    from _helpers import synthetic_nuclei

    paths = []
    for k, shape in enumerate([(120, 90), (64, 64), None, (150, 130), (96, 100)]):
        p = tmp_path / f"im{k}.png"
        if shape is None:
            p.write_bytes(b"not a png")
        else:
            Image.fromarray(synthetic_nuclei(shape, n=8, seed=k)[0]).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def seg(threshold_model_path):
    return Segmenter.load(str(threshold_model_path), precision="float32")


def _run(seg, files, out, overlap, **kw):
    out.mkdir()

    def save(i, image, labels):
        return write_labels(out / f"{i}.tif", labels)

    return list(segment_many(seg, files, open_image, save, overlap=overlap, **kw))


def test_overlapped_equals_one_at_a_time_and_a_bad_file_spares_the_rest(seg, files, tmp_path):
    ref = _run(seg, files, tmp_path / "serial", overlap=False)
    got = _run(seg, files, tmp_path / "overlap", overlap=True)
    for outcomes in (ref, got):
        assert [o.index for o in outcomes] == [0, 1, 2, 3, 4]  # input order
        assert isinstance(outcomes[2].error, ImageError) and outcomes[2].labels is None
        assert all(o.error is None for k, o in enumerate(outcomes) if k != 2)
    for k in (0, 1, 3, 4):
        a = read_labels(tmp_path / "serial" / f"{k}.tif")
        b = read_labels(tmp_path / "overlap" / f"{k}.tif")
        assert a.shape == open_image(files[k]).shape[:2] and a.max() >= 3  # real nuclei
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(got[k].labels, b)
        assert got[k].saved == tmp_path / "overlap" / f"{k}.tif"
    assert not (tmp_path / "overlap" / "2.tif").exists()


def test_reads_at_most_one_image_ahead_and_finishes_off_the_calling_thread(seg, files):
    good = [p for k, p in enumerate(files) if k != 2]
    read_started: list[int] = []
    finished_in: list[str] = []
    ahead: list[int] = []

    def read(path):
        read_started.append(good.index(path))
        return open_image(path)

    def progress(i, done, total, msg):
        ahead.append(max(read_started) - i)

    def save(i, image, labels):
        finished_in.append(threading.current_thread().name)

    outcomes = list(segment_many(seg, good, read, save, progress=progress))
    assert [o.error for o in outcomes] == [None] * 4
    assert ahead and max(ahead) <= 1  # never more than the next image in memory
    assert read_started == [0, 1, 2, 3]
    assert finished_in and all(name.startswith("nucleoseg-finish") for name in finished_in)


def test_cancel_keeps_what_was_finished(seg, files, tmp_path):
    good = [p for k, p in enumerate(files) if k != 2]
    seen: list[int] = []

    def progress(i, done, total, msg):
        seen.append(i)

    outcomes = []
    with pytest.raises(Cancelled):
        for outcome in segment_many(
            seg, good, open_image, lambda i, im, lab: write_labels(tmp_path / f"{i}.tif", lab),
            progress=progress, should_stop=lambda: bool(seen) and seen[-1] == 2,
        ):
            outcomes.append(outcome)
    # image 2 was stopped in the model; 0 and 1 were finished, saved and handed out
    assert [o.index for o in outcomes] == [0, 1]
    assert (tmp_path / "0.tif").exists() and (tmp_path / "1.tif").exists()
    assert not (tmp_path / "2.tif").exists() and not (tmp_path / "3.tif").exists()


def test_the_model_loads_while_the_first_image_is_read(threshold_model_path, files):
    reading = threading.Event()

    def read(path):
        reading.set()
        return open_image(path)

    def load():
        # only returns in time if the first read runs beside it
        assert reading.wait(timeout=30), "the first image was not being read"
        return Segmenter.load(str(threshold_model_path), precision="float32")

    outcomes = list(segment_many(load, files[:2], read))
    assert [o.error for o in outcomes] == [None, None] and outcomes[1].labels.max() >= 3
