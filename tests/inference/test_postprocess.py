import numpy as np
from skimage.draw import disk

from nucleoseg.inference.postprocess import PostprocessParams, probabilities_to_labels
from nucleoseg.training.data import make_targets


def test_touching_nuclei_are_separated_by_interior_markers():
    lab = np.zeros((60, 60), np.int32)
    lab[disk((30, 20), 10)] = 1
    rr, cc = disk((30, 38), 10)
    free = lab[rr, cc] == 0
    lab[rr[free], cc[free]] = 2
    probs = make_targets(lab).astype(np.float32)
    out = probabilities_to_labels(probs, PostprocessParams(min_size=4))
    assert out.max() == 2
    assert ((out > 0) == (lab > 0)).all()
    # without the interior channel the two discs would merge under a plain threshold
    from scipy import ndimage as ndi

    assert ndi.label(lab > 0)[1] == 1


def test_min_size_and_unmarked_pieces():
    probs = np.zeros((40, 40, 2), np.float32)
    probs[5:15, 5:15, 0] = 0.9  # no interior: becomes its own object
    probs[30:32, 30:32, 0] = 0.9  # 4 px: dropped
    out = probabilities_to_labels(probs, PostprocessParams(min_size=10))
    assert out.max() == 1 and (out[5:15, 5:15] == 1).all()


def test_single_channel_uses_distance_markers():
    lab = np.zeros((40, 40), np.int32)
    lab[disk((20, 20), 8)] = 1
    out = probabilities_to_labels((lab > 0).astype(np.float32))
    assert out.max() == 1
