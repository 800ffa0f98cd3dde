"""Open napari with the Segment widget docked on a sample image: ``python -m nucleoseg.demo``.

The sample is the first MoNuSeg test tile when the data set is found (``NUCLEOSEG_DATA`` or
``../shared/data``), else a synthetic H&E-like image generated on the spot.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None):
    import napari

    viewer = napari.Viewer(title="NucleoSeg")
    try:
        viewer.open_sample("napari-nucleoseg", "monuseg_tile")
    except FileNotFoundError as exc:
        print(f"{exc}; showing a synthetic image instead", file=sys.stderr)
        viewer.open_sample("napari-nucleoseg", "synthetic_he")
    viewer.window.add_plugin_dock_widget("napari-nucleoseg", "Segment nuclei")
    # the image is the layer to work on (the hidden ground truth came last), and the view is
    # refit to the canvas the docked panel left
    images = [layer for layer in viewer.layers if layer._type_string == "image"]
    if images:
        viewer.layers.selection.active = images[0]
    viewer.reset_view()
    if "--no-run" not in (argv if argv is not None else sys.argv[1:]):
        napari.run()
    return viewer


if __name__ == "__main__":
    main()
