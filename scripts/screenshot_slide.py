"""Screenshot of the Segment panel on a whole slide (a pyramidal OME-TIFF stitched from
MoNuSeg training tiles), segmented block-wise and shown as a lazy multiscale Labels layer.

    xvfb-run -a -s "-screen 0 1920x1080x24" python scripts/screenshot_slide.py docs/
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from screenshots import PLUGIN, wait  # same folder: the shared event-loop wait

import napari
from nucleoseg.io.images import write_pyramid_tiff
from nucleoseg.io.monuseg import list_tiles


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tiles = [t.image() for t in list_tiles("train")[:25]]
    rows = [np.concatenate(tiles[5 * r : 5 * r + 5], axis=1) for r in range(5)]
    image = np.concatenate(rows, axis=0)[:4608, :4608]
    folder = Path(tempfile.mkdtemp(prefix="nucleoseg-slide-"))
    path = write_pyramid_tiff(folder / "monuseg_slide.ome.tif", image, levels=4,
                              compression="jpeg")
    viewer = napari.Viewer(title="NucleoSeg")
    viewer.window._qt_window.resize(1600, 1000)
    layer = viewer.open(str(path), plugin=PLUGIN)[0]
    _, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment nuclei")
    seg._image.value = layer
    seg._tile.value = 1280  # blocks of 2 x 1152 px: a block corner at (2304, 2304)
    seg._on_run()
    wait(lambda: seg._worker is None)
    labels = viewer.layers[f"{layer.name} nuclei"]
    labels.opacity = 0.45
    # a block corner (2304, 2304) in view: nuclei on the seams keep one colour
    viewer.camera.center = (2304, 2304)
    viewer.camera.zoom = 1.2
    wait(lambda: True)
    time.sleep(2)
    wait(lambda: True)
    viewer.screenshot(str(out / "slide.png"), canvas_only=False, flash=False)
    print("saved", out / "slide.png", seg._status.value)
    viewer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
