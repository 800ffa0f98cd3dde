import numpy as np
import pytest
from PIL import Image

from nucleoseg.io.dsb2018 import list_samples, read_sample
from nucleoseg.io.images import ImageError
from nucleoseg.io.labels import read_labels, write_labels


def _make_sample(root, name="s1"):
    (root / name / "images").mkdir(parents=True)
    (root / name / "masks").mkdir()
    img = np.zeros((20, 30, 4), np.uint8)
    img[..., 0] = 200
    img[..., 3] = 255
    Image.fromarray(img).save(root / name / "images" / f"{name}.png")
    for k, (r, c) in enumerate([(5, 5), (12, 20)]):
        m = np.zeros((20, 30), np.uint8)
        m[r : r + 4, c : c + 4] = 255
        Image.fromarray(m).save(root / name / "masks" / f"m{k}.png")
    return root / name


def test_dsb_sample(tmp_path):
    folder = _make_sample(tmp_path)
    image, labels = read_sample(folder)
    assert image.shape == (20, 30, 3) and labels.max() == 2 and (labels > 0).sum() == 32
    gray, _ = read_sample(folder, grayscale=True)
    assert (gray[..., 0] == gray[..., 1]).all()
    assert list_samples(tmp_path) == [folder]


def test_dsb_real_samples(data_root):
    samples = list_samples(data_root / "dsb2018")
    assert len(samples) == 60
    image, labels = read_sample(samples[1])
    assert image.shape[2] == 3 and labels.max() == len(list((samples[1] / "masks").glob("*")))


@pytest.mark.parametrize("suffix", [".tif", ".png", ".npy"])
def test_labels_round_trip(tmp_path, suffix):
    lab = np.zeros((10, 12), np.int32)
    lab[2:5, 3:6] = 7
    lab[6:9, 1:3] = 300
    p = write_labels(tmp_path / f"l{suffix}", lab)
    np.testing.assert_array_equal(read_labels(p), lab)


def test_labels_errors(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ImageError, match="RGB"):
        read_labels(tmp_path / "rgb.png")
    np.save(tmp_path / "f.npy", np.array([[0.5, 1.0], [0.0, 2.0]]))
    with pytest.raises(ImageError, match="integers"):
        read_labels(tmp_path / "f.npy")
    with pytest.raises(ImageError, match="cannot write"):
        write_labels(tmp_path / "l.jpg", np.zeros((2, 2), np.int32))


def test_inner_boundary_is_skimages():
    from skimage.segmentation import find_boundaries

    from nucleoseg.io.labels import inner_boundary

    rng = np.random.default_rng(3)
    for shape in [(1, 1), (1, 7), (5, 1), (40, 33)]:
        lab = rng.integers(0, 4, shape).astype(np.int32)
        lab[rng.random(shape) < 0.5] = 0
        np.testing.assert_array_equal(inner_boundary(lab), find_boundaries(lab, mode="inner"))
    big = np.kron(rng.integers(0, 5, (12, 12)), np.ones((6, 6), np.int64))
    np.testing.assert_array_equal(inner_boundary(big), find_boundaries(big, mode="inner"))
