import json

import numpy as np
import pytest
from skimage.draw import disk, ellipse

from nucleoseg.io.geojson import (
    MEASUREMENT_COLUMNS,
    corners,
    geojson_to_labels,
    labels_to_geojson,
    measure_nuclei,
    write_geojson,
    write_measurements_csv,
)


def _labels():
    lab = np.zeros((80, 90), np.int32)
    lab[disk((20, 20), 9)] = 1
    lab[ellipse(50, 60, 12, 7, rotation=0.7)] = 2
    lab[disk((20, 45), 6)] = 5
    rr, cc = disk((28, 52), 6)
    free = lab[rr, cc] == 0
    lab[rr[free], cc[free]] = 7  # touches 5
    return lab


def test_qupath_structure_and_area_round_trip(tmp_path):
    lab = _labels()
    path = write_geojson(tmp_path / "n.geojson", lab)
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 4
    for f in data["features"]:
        assert f["type"] == "Feature" and f["geometry"]["type"] == "Polygon"
        ring = f["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) >= 4
        assert f["properties"]["objectType"] == "detection"
        assert f["properties"]["classification"]["name"] == "Nucleus"
        xs, ys = np.array(ring).T
        assert xs.min() >= 0 and ys.min() >= 0 and xs.max() <= 90 and ys.max() <= 80
    back = geojson_to_labels(data, lab.shape)
    areas_in = sorted(np.bincount(lab.ravel())[[1, 2, 5, 7]])
    areas_out = sorted(np.bincount(back.ravel())[1:5])
    for a, b in zip(areas_in, areas_out, strict=True):
        assert abs(a - b) / a < 0.01
    # QuPath's polygon area (shoelace, pixel-corner coordinates) is close to the pixel count
    for f in data["features"]:
        x, y = np.array(f["geometry"]["coordinates"][0]).T
        shoelace = 0.5 * abs(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))
        pixels = (lab == f["id"]).sum()
        assert abs(shoelace - pixels) / pixels < 0.15


def test_outlines_keep_only_their_corners_and_the_same_pixels():
    """Vertices on a straight run between their neighbours are dropped: a square's traced
    outline keeps its 8 corners (cut at 45 degrees), and every nucleus rasterises to the
    same pixels as its full traced outline, in half the vertices or fewer."""
    from nucleoseg.io.monuseg import labels_to_regions

    square = np.zeros((12, 12), np.int32)
    square[3:8, 2:9] = 1
    (traced,) = labels_to_regions(square)
    kept = corners(traced)
    assert len(traced) > 20 and len(kept) == 8
    assert {tuple(v) for v in kept} <= {tuple(v) for v in traced}
    np.testing.assert_array_equal(corners(np.array([[0, 0], [0, 1], [0, 0]])), [[0, 0], [0, 1]])
    lab = _labels()
    full = {"features": [{"geometry": {"type": "Polygon", "coordinates": [
        (r - 0.5).tolist()]}} for r in labels_to_regions(lab)]}
    data = labels_to_geojson(lab)
    np.testing.assert_array_equal(geojson_to_labels(data, lab.shape),
                                  geojson_to_labels(full, lab.shape))
    for f, r in zip(data["features"], full["features"], strict=True):
        assert len(f["geometry"]["coordinates"][0]) <= len(r["geometry"]["coordinates"][0]) / 2


def test_offset_and_object_type():
    lab = np.zeros((10, 10), np.int32)
    lab[2:5, 3:7] = 1
    a = labels_to_geojson(lab)
    b = labels_to_geojson(lab, object_type="annotation", offset=(100, 1000))
    ra = np.array(a["features"][0]["geometry"]["coordinates"][0])
    rb = np.array(b["features"][0]["geometry"]["coordinates"][0])
    np.testing.assert_allclose(rb - ra, np.tile([1000, 100], (len(ra), 1)))
    assert b["features"][0]["properties"]["objectType"] == "annotation"
    with pytest.raises(ValueError):
        labels_to_geojson(lab, object_type="cell")


def test_measurements(tmp_path):
    lab = np.zeros((60, 60), np.int32)
    lab[disk((30, 20), 8)] = 3
    img = np.full((60, 60, 3), 230, np.uint8)
    img[lab > 0] = (80, 40, 140)
    rows = measure_nuclei(lab, img, microns_per_pixel=0.25)
    (row,) = rows
    assert row["id"] == 3 and row["area_px"] == (lab > 0).sum()
    assert row["centroid_x_px"] == pytest.approx(20.5)
    assert row["centroid_y_px"] == pytest.approx(30.5)
    assert row["area_um2"] == pytest.approx(row["area_px"] * 0.0625)
    assert row["eccentricity"] < 0.2 and row["hematoxylin_mean"] > 0
    text = write_measurements_csv(tmp_path / "m.csv", rows).read_text()
    assert text.splitlines()[0] == ",".join(MEASUREMENT_COLUMNS)
    assert np.isnan(measure_nuclei(lab)[0]["hematoxylin_mean"])


def test_geojson_classification_round_trips(tmp_path):
    """Classes go out as QuPath classifications (name + RGB) and come back by feature id."""
    import json

    from nucleoseg.io.geojson import geojson_classes, geojson_to_labels, write_geojson

    lab = np.zeros((40, 40), np.int32)
    lab[2:10, 2:10] = 1
    lab[20:30, 20:30] = 2
    lab[32:38, 2:8] = 3
    path = write_geojson(tmp_path / "c.geojson", lab,
                         classes={1: ("tumour", "#ff3030"), 2: ("immune", "#00c8ff")})
    data = json.loads(path.read_text())
    cls = {f["id"]: f["properties"]["classification"] for f in data["features"]}
    assert cls[1] == {"name": "tumour", "color": [255, 48, 48]}
    assert cls[3]["name"] == "Nucleus"  # unclassified ids keep the generic class
    assert geojson_classes(data) == {1: "tumour", 2: "immune", 3: "Nucleus"}
    back = geojson_to_labels(data, lab.shape)
    assert {int(back[5, 5]), int(back[25, 25])} == {1, 2}
