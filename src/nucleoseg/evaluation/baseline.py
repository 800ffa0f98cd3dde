"""The non-learned reference: hematoxylin channel, Otsu threshold, distance watershed.

Prior-art Keras repositories scored no better than this classic pipeline on MoNuSeg; the
benchmark reports it beside the models so the gain is visible.
"""

from __future__ import annotations

import numpy as np


def otsu_watershed(image: np.ndarray, min_size: int = 16, sigma: float = 1.0,
                   min_distance: int = 4) -> np.ndarray:
    """Segment nuclei without learning.

    Colour deconvolution (Ruifrok & Johnston) to hematoxylin, Gaussian smoothing, Otsu
    threshold, hole filling, then a watershed on the distance transform seeded by its local
    maxima (``min_distance`` apart).

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, 3) uint8`` RGB.

    Returns
    -------
    numpy.ndarray
        ``(H, W) int32`` instance labels.
    """
    from scipy import ndimage as ndi
    from skimage.color import rgb2hed
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import relabel_sequential, watershed

    hema = gaussian(rgb2hed(image)[..., 0], sigma)
    mask = ndi.binary_fill_holes(hema > threshold_otsu(hema))
    mask = ndi.binary_opening(mask, iterations=1)
    dist = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=ndi.label(mask)[0],
                           exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-dist, markers, mask=mask)
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    labels[small[labels]] = 0
    return relabel_sequential(labels)[0].astype(np.int32)
