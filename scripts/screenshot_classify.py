"""Screenshot of the Classify panel on a CoNSeP test tile (real napari window, default size).

    xvfb-run -a -s "-screen 0 1920x1080x24" python scripts/screenshot_classify.py docs/

Segments the tile with ``nucleoseg segment`` in a subprocess (Keras stays out of the GUI
process), applies the shipped CoNSeP classifier, then trains a two-class user classifier
from marks to show the marks layer.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tifffile
from qtpy.QtWidgets import QApplication

import napari
from nucleoseg.io.consep import list_tiles

PLUGIN = "napari-nucleoseg"


def settle(seconds: float = 1.0) -> None:
    t0 = time.time()
    while time.time() - t0 < seconds:
        QApplication.processEvents()
        time.sleep(0.02)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tile = list_tiles("test")[0]
    labels_path = Path(tempfile.mkdtemp()) / "labels.tif"
    subprocess.run([sys.executable, "-m", "nucleoseg.cli", "segment", str(tile.image_path),
                    "-o", str(labels_path), "-q"], check=True)
    viewer = napari.Viewer(title="NucleoSeg")
    image = viewer.add_image(tile.image(), name=tile.name)
    labels = viewer.add_labels(tifffile.imread(labels_path), name=f"{tile.name} nuclei")
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify nuclei")
    w._image.value, w._labels_layer.value = image, labels
    w._saved.value = next(v for v in w._saved.choices if "consep_types" in str(v))
    w._mpp.value = 0.25
    w._on_apply()
    labels.visible = False
    viewer.camera.zoom = 1.4
    viewer.camera.center = (0, 350, 350)
    settle()
    viewer.screenshot(str(out / "classify.png"), canvas_only=False, flash=False)
    print("saved", out / "classify.png", "window", viewer.window._qt_window.size())
    viewer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
