"""Time from pressing Segment to the labels layer, for the first press after the panel opens.

A fresh napari viewer with a MoNuSeg test tile, the Segment panel docked, then a pause (the
user choosing an image), then Segment, timed until the labels layer appears. "cold": the
compute process starts on the press (importing Keras/TensorFlow and loading the model inside
the timing); "loaded": the panel had it load the model in the background when it opened;
"traced": it also traced the model for the chosen image's tiles (what the panel does).
Each round opens a new viewer (a new compute process); the ways take turns. Needs a
display (``xvfb-run -a``):

    xvfb-run -a python benchmarks/first_click.py [--data DIR] [--model unet] [--rounds 2]
                                                 [--pause 15]
"""

from __future__ import annotations

import argparse
import time


def _wait(app, condition, timeout: float) -> None:
    end = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("timed out")
        app.processEvents()
        time.sleep(0.005)


def first_press(image, model: str, way: str, pause: float) -> float:
    """Seconds from pressing Segment to the labels layer in a fresh viewer."""
    from qtpy.QtWidgets import QApplication

    import napari
    from nucleoseg._compute import ComputeProcess

    original = ComputeProcess.prepare
    if way == "cold":
        ComputeProcess.prepare = lambda self, *a, **k: False
    elif way == "loaded":
        ComputeProcess.prepare = lambda self, task, **k: original(self, task,
                                                                  **{**k, "shape": None})
    try:
        viewer = napari.Viewer(show=False)
        viewer.add_image(image, name="tile")
        _, widget = viewer.window.add_plugin_dock_widget("napari-nucleoseg", "Segment nuclei")
        widget._model.value = next(v for v in widget._model.choices
                                   if v.endswith(f"{model}.keras"))
    finally:
        ComputeProcess.prepare = original
    app = QApplication.instance()
    end = time.perf_counter() + pause
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)
    t0 = time.perf_counter()
    widget._on_run()
    _wait(app, lambda: "tile nuclei" in viewer.layers, 600)
    seconds = time.perf_counter() - t0
    _wait(app, lambda: widget._worker is None, 60)
    viewer.close()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data")
    ap.add_argument("--model", default="unet")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pause", type=float, default=15.0,
                    help="seconds between opening the panel and pressing Segment")
    args = ap.parse_args()
    from nucleoseg.io.monuseg import list_tiles

    image = list_tiles("test", args.data)[0].image()
    ways = ["cold", "loaded", "traced"]
    times: dict[str, list[float]] = {way: [] for way in ways}
    for r in range(args.rounds):
        for way in ways if r % 2 == 0 else ways[::-1]:
            times[way].append(first_press(image, args.model, way, args.pause))
    print(f"first Segment press, {args.model}, a {image.shape[1]}x{image.shape[0]} MoNuSeg "
          f"tile, {args.pause:.0f} s after the panel opened; seconds to the labels layer")
    for way, values in times.items():
        print(f"{way:<10}" + "".join(f"{v:>8.2f}" for v in values)
              + f"   best {min(values):.2f}")


if __name__ == "__main__":
    main()
