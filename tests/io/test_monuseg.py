import numpy as np
import pytest

from nucleoseg.io.monuseg import (
    VALIDATION_TILES,
    labels_to_regions,
    list_tiles,
    read_xml_labels,
    regions_to_labels,
    write_xml,
)

XML = """<Annotations MicronsPerPixel="0.25"><Annotation Id="1"><Regions>
<Region Id="9"><Vertices><Vertex X="3" Y="3"/><Vertex X="8" Y="3"/><Vertex X="8" Y="8"/>
<Vertex X="3" Y="8"/></Vertices></Region>
<Region Id="2"><Vertices><Vertex X="6.5" Y="6.5"/><Vertex X="12" Y="6.5"/><Vertex X="12" Y="12"/>
<Vertex X="6.5" Y="12"/></Vertices></Region>
<Region Id="5"><Vertices><Vertex X="1" Y="1"/><Vertex X="2" Y="2"/></Vertices></Region>
<Region Id="7"><Vertices><Vertex X="-3" Y="15"/><Vertex X="2" Y="15"/><Vertex X="2" Y="22"/>
</Vertices></Region>
</Regions></Annotation></Annotations>"""


def test_xml_rules(tmp_path):
    p = tmp_path / "t.xml"
    p.write_text(XML)
    lab = read_xml_labels(p, (20, 20))
    # document order, 2-vertex region skipped, out-of-tile vertices clipped
    assert lab.max() == 3
    # first region keeps the overlap (MATLAB rule); 1-based -> 0-based shift
    assert lab[5, 5] == 1 and lab[6, 6] == 1 and lab[10, 10] == 2
    # 1-based vertices 3..8 cover 0-based pixels 3..7: like poly2mask, pixel centres lying
    # exactly on the top/left outline are outside, on the bottom/right outline inside
    assert lab[2, 2] == 0 and lab[3, 3] == 1 and lab[7, 3] == 1 and lab[3, 8] == 0
    assert (lab[14:, :2] == 3).any()


def test_writer_round_trip(tmp_path):
    from skimage.draw import disk, ellipse

    lab = np.zeros((60, 70), np.int32)
    lab[disk((15, 15), 8)] = 1
    lab[ellipse(40, 45, 10, 6, rotation=0.5)] = 2
    lab[disk((15, 40), 5)] = 3
    lab[disk((22, 47), 5)] = 4  # touches 3
    write_xml(lab, tmp_path / "o.xml", microns_per_pixel=0.25)
    back = read_xml_labels(tmp_path / "o.xml", lab.shape)
    assert back.max() == 4
    for k in range(1, 5):
        a, b = lab == k, back == k
        assert (a & b).sum() / (a | b).sum() > 0.97
    assert len(labels_to_regions(lab)) == 4


def test_write_xml_rejects_bad_labels(tmp_path):
    from nucleoseg.io.images import ImageError

    with pytest.raises(ImageError):
        write_xml(np.zeros((3, 3, 3), np.int32), tmp_path / "x.xml")
    assert not (tmp_path / "x.xml").exists()


def test_regions_to_labels_skips_degenerate():
    regs = [np.array([[1.0, 1.0], [5.0, 5.0]]), np.array([[2.0, 2.0], [2.1, 2.0], [2.0, 2.1]])]
    assert regions_to_labels(regs, (10, 10)).max() == 0


def test_xml_reader_matches_reference_masks(data_root):
    """The 13 training tiles with both XML and the reference instance masks agree."""
    from PIL import Image

    tiles = [t for t in list_tiles("train", data_root) if t.xml_path and t.mask_path]
    assert len(tiles) == 13
    for t in tiles:
        ours = t.labels()
        ref = np.array(Image.open(t.mask_path))
        a, b = ours > 0, ref > 0
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice >= 0.98, (t.name, dice)
        assert abs(int(ours.max()) - int(ref.max())) <= 1


def test_splits(data_root):
    fit, val = list_tiles("fit", data_root), list_tiles("val", data_root)
    assert len(fit) + len(val) == 30 and len(val) == len(VALIDATION_TILES)
    assert len(list_tiles("test", data_root)) == 14
    assert not {t.name for t in fit} & {t.name for t in val}
    with pytest.raises(ValueError):
        list_tiles("nope", data_root)
    with pytest.raises(FileNotFoundError):
        list_tiles("test", data_root / "does-not-exist")
