"""The CoNSeP reader: layout, split, labels, types; on files the test writes and on the data."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from nucleoseg.io import consep, datasets
from nucleoseg.io.images import ImageError


def _write_tile(folder, name, labels, types, suffix=".png"):
    for sub in ("images", "labels", "types"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    image = np.full((*labels.shape, 3), 200, np.uint8)
    image[0, 0] = (10, 20, 30)
    Image.fromarray(image).save(folder / "images" / f"{name}{suffix}", lossless=True)
    tifffile.imwrite(folder / "labels" / f"{name}.tif", labels.astype(np.uint16))
    rows = "".join(f"{i},{t},{consep.CLASS_NAMES[t]}\n" for i, t in types.items())
    (folder / "types" / f"{name}.csv").write_text("id,type,name\n" + rows)


def test_reader_on_written_tiles(tmp_path):
    lab = np.zeros((20, 30), np.int32)
    lab[2:6, 2:6] = 1
    lab[10:15, 20:28] = 2
    root = tmp_path / "consep"
    for k in (1, 2, 10, 13):  # 13 is a validation tile; natural order 1, 2, 10
        # lossless WebP is what scripts/pack_data.py carries to a GPU machine
        _write_tile(root / "train", f"train_{k}", lab, {1: 2, 2: 4},
                    ".webp" if k == 10 else ".png")
    (root / "train" / "images" / "notes.txt").write_text("not a tile")
    tiles = consep.list_tiles("train", tmp_path)
    assert [t.name for t in tiles] == ["train_1", "train_2", "train_10", "train_13"]
    assert [t.name for t in consep.list_tiles("val", tmp_path)] == ["train_2", "train_13"]
    assert [t.name for t in consep.list_tiles("fit", root)] == ["train_1", "train_10"]
    t = tiles[0]
    assert t.image().shape == (20, 30, 3)
    np.testing.assert_array_equal(tiles[2].image(), t.image())  # the WebP one, lossless
    np.testing.assert_array_equal(t.labels(), lab)
    assert t.types() == {1: 2, 2: 4}
    tm = consep.type_map(t.labels(), t.types())
    assert tm[3, 3] == 2 and tm[12, 25] == 4 and tm[0, 0] == 0
    # the generic entry finds it under a data root and by the folder itself
    assert len(datasets.list_tiles("consep", "train", tmp_path)) == 4
    assert datasets.present(tmp_path) == ["consep"]
    with pytest.raises(FileNotFoundError, match="CoNSeP data not found"):
        consep.list_tiles("test", tmp_path)


def test_bad_types_csv_is_a_clear_error(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("id,kind\n1,2\n")
    with pytest.raises(ImageError, match="id,type"):
        consep.read_types(p)
    p.write_text("id,type\n1,x\n")
    with pytest.raises(ImageError, match="integers"):
        consep.read_types(p)


def test_parse_datasets():
    assert datasets.parse_datasets("consep, monuseg") == ["consep", "monuseg"]
    assert datasets.parse_datasets(None) == list(datasets.DATASETS)
    with pytest.raises(ValueError, match="unknown data set"):
        datasets.parse_datasets("monuseg,pannuke")


@pytest.mark.data
def test_real_consep(data_root):
    train = consep.list_tiles("train", data_root)
    test = consep.list_tiles("test", data_root)
    assert len(train) == 27 and len(test) == 14
    assert len(consep.list_tiles("val", data_root)) == len(consep.VALIDATION_TILES)
    tile = test[0]
    image, labels, types = tile.image(), tile.labels(), tile.types()
    assert image.shape == (1000, 1000, 3) and image.dtype == np.uint8
    ids = set(np.unique(labels)) - {0}
    assert ids == set(types) and set(types.values()) <= {1, 2, 3, 4}
    # no test tile is ever a fit/validation tile
    names = {t.name for t in train}
    assert not names & {t.name for t in test}
