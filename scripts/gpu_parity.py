"""Save tiled float32 probabilities of a model on one validation tile (GPU/CPU parity check).

    python scripts/gpu_parity.py MODEL DATA OUT.npz
"""

import sys

import numpy as np

from nucleoseg.inference.predict import run
from nucleoseg.inference.segment import Segmenter
from nucleoseg.io.monuseg import list_tiles

model, data, out = sys.argv[1:4]
seg = Segmenter.load(model, precision="float32")
tile = list_tiles("val", data)[0]
probs = run(seg.probabilities(tile.image()))
np.savez_compressed(out, probs=probs.astype(np.float16), tile=tile.name)
print("saved", out, probs.shape, float(probs.mean()))
