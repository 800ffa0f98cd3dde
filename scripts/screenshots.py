"""Screenshots of the three panels in use on a MoNuSeg test tile (real napari window).

    xvfb-run -a -s "-screen 0 1920x1080x24" python scripts/screenshots.py docs/
"""

import sys
import time
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QApplication

import napari

PLUGIN = "napari-nucleoseg"


def wait(cond, timeout=600):
    t0 = time.time()
    while not cond():
        QApplication.processEvents()
        time.sleep(0.05)
        if time.time() - t0 > timeout:
            raise TimeoutError
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="NucleoSeg")
    # napari's default window size: what a new user sees
    image, truth = viewer.open_sample(PLUGIN, "monuseg_tile")
    dock, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment nuclei")
    seg._advanced.value = True
    seg._on_run()
    wait(lambda: seg._worker is None)
    pred = viewer.layers[f"{image.name} nuclei"]
    pred.contour = 1
    viewer.camera.zoom = 1.6
    viewer.camera.center = (0, 300, 300)
    wait(lambda: True)
    viewer.screenshot(str(out / "segment.png"), canvas_only=False, flash=False)

    viewer.window.remove_dock_widget(dock)
    _, ft = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune model")
    corrected = viewer.add_labels(np.asarray(truth.data), name="corrected labels")
    roi = viewer.add_shapes([[[100, 100], [100, 612], [612, 612], [612, 100]]],
                            shape_type="rectangle", edge_color="yellow", face_color="transparent",
                            edge_width=4, name="training region")
    ft._labels_layer.value = corrected
    ft._roi.value = roi
    ft._name.value = "unet_my_slides"
    ft._epochs.value, ft._steps.value = 3, 6
    ft._on_run()
    wait(lambda: ft._worker is None)
    viewer.camera.zoom = 0.9
    viewer.camera.center = (0, 500, 500)
    wait(lambda: True)
    viewer.screenshot(str(out / "finetune.png"), canvas_only=False, flash=False)
    for name in ("corrected labels", "training region"):
        viewer.layers.remove(name)

    viewer.window.remove_dock_widget("all")
    _, ev = viewer.window.add_plugin_dock_widget(PLUGIN, "Evaluate segmentation")
    truth.visible = True
    ev._pred.value, ev._truth.value = pred, truth
    ev._on_run()
    pred.visible = truth.visible = False
    viewer.camera.zoom = 1.6
    viewer.camera.center = (0, 300, 300)
    wait(lambda: True)
    viewer.screenshot(str(out / "evaluate.png"), canvas_only=False, flash=False)
    print("saved", sorted(p.name for p in out.glob("*.png")))
    viewer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
