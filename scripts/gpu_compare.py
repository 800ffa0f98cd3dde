"""Compare what ``scripts/gpu_check.sh`` brought back from a GPU with this CPU (issue 16).

For every model: the GPU probabilities on the MoNuSeg validation tile against TensorFlow's
float32 ones here (max and mean |difference|, relative L2), and the labels the GPU's
``nucleoseg segment --backend auto`` wrote for each validation tile against the same
command's labels here on the CPU in float32 (pixel Dice of the nucleus masks, AJI of the
instances, nuclei counted). Usage::

    python scripts/device_kit.py unpack FILES_AT /tmp/gpu_check
    python scripts/gpu_compare.py /tmp/gpu_check [DATA]
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

#: Issue 16's bars: float32 probabilities and the labels they give.
MEAN_DIFF = 1e-4
LABELS_DICE = 0.999


def _validation_tiles(data: str | None) -> dict:
    from nucleoseg.io.datasets import list_tiles

    return {t.name: t for ds in ("monuseg", "consep") for t in list_tiles(ds, "val", data)}


def main(argv: list[str]) -> int:
    import tifffile

    from nucleoseg.backend import apply, choose

    apply(choose("tensorflow", "cpu"))  # the reference: Keras on TensorFlow, float32
    from nucleoseg.cli import main as cli
    from nucleoseg.evaluation.metrics import evaluate_pair
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter

    run_dir = Path(argv[0])
    data = argv[1] if len(argv) > 1 else None
    tiles = _validation_tiles(data)
    tmp = Path(tempfile.mkdtemp())
    for name in ("info.txt", "cli_times.txt"):
        if (run_dir / name).exists():
            print((run_dir / name).read_text())
    for parity in sorted(run_dir.glob("parity_*.npz")):
        model = parity.stem.removeprefix("parity_")
        saved = np.load(parity)
        gpu = saved["probs"].astype(np.float32)
        seg = Segmenter.load(model, precision="float32")
        cpu = run(seg.probabilities(tiles[str(saved["tile"])].image()))
        d = np.abs(gpu - cpu)
        print(f"{model:10s} probabilities on {saved['tile']}: max|d| {d.max():.4f}  mean|d| "
              f"{d.mean():.1e}  rel.L2 {np.linalg.norm(gpu - cpu) / np.linalg.norm(cpu):.1e}"
              f"  ({'within' if d.mean() <= MEAN_DIFF else 'OVER'} mean |d| <= {MEAN_DIFF})")
        for labels in sorted(run_dir.glob(f"labels_{model}_*.tif")):
            name = labels.stem.removeprefix(f"labels_{model}_")
            mine = tmp / f"{model}_{name}.tif"
            cli(["segment", str(tiles[name].image_path), "-o", str(mine), "-m", model,
                 "--precision", "float32", "--backend", "tensorflow", "-q"])
            g, c = tifffile.imread(labels), tifffile.imread(mine)
            s = evaluate_pair(g, c)
            print(f"{'':10s} labels {name}: Dice {s['dice']:.5f}  AJI {s['aji']:.4f}  "
                  f"nuclei {int(g.max())} (GPU) vs {int(c.max())} (CPU)  "
                  f"({'meets' if s['dice'] >= LABELS_DICE else 'BELOW'} Dice >= {LABELS_DICE})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
