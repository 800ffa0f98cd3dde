"""Helpers shared by the widgets: layers to arrays, model lists, notifications."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Container

if TYPE_CHECKING:
    import napari

#: Largest image segmented in memory from the GUI (pixels).
MAX_GUI_PIXELS = 20_000 * 20_000


def image_layer_to_rgb(layer: napari.layers.Image, viewer: napari.Viewer | None = None
                       ) -> np.ndarray:
    """The pixels of an Image layer as ``(H, W, 3) uint8`` (core conversion rules).

    Multiscale layers give their full-resolution level; stacks (``ndim > 2``, not RGB) give
    the plane the viewer shows.
    """
    from ..io.images import ImageError, to_rgb_uint8

    data = layer.data[0] if layer.multiscale else layer.data
    spatial = data.shape[:-1] if layer.rgb else data.shape
    if len(spatial) > 2:
        if viewer is None:
            raise ImageError(f"{layer.name} is a {len(spatial)}D stack; choose a 2D image")
        step = viewer.dims.current_step
        index = tuple(int(s) for s in step[: len(spatial) - 2])
        data = data[index]
        spatial = spatial[-2:]
    if int(np.prod(spatial)) > MAX_GUI_PIXELS:
        raise ImageError(
            f"{layer.name} has {spatial[0]}x{spatial[1]} pixels; the panel segments up to "
            "20000x20000 - crop a region first (whole-slide support is not available yet)"
        )
    return to_rgb_uint8(np.asarray(data), name=layer.name)


def spatial_transform(layer: Any) -> dict[str, Any]:
    """``scale``/``translate`` of a layer's last two (spatial) axes, for derived layers."""
    return {"scale": tuple(layer.scale[-2:]), "translate": tuple(layer.translate[-2:])}


def model_choices(*_: Any) -> list[tuple[str, str]]:
    """``(label, value)`` pairs of every available model for a ComboBox."""
    from ..models.weights import available_models

    out = []
    for m in available_models():
        label = m["name"] if m["source"] == "shipped" else f"{m['name']} (yours)"
        out.append((label, str(m["path"])))
    return out


def notify_error(exc: BaseException) -> None:
    """Show an error as a napari notification with one clear sentence."""
    from napari.utils.notifications import show_error

    from ..io.images import ImageError
    from ..models.weights import WeightsError

    if isinstance(exc, (ImageError, WeightsError, ValueError, FileNotFoundError)):
        show_error(str(exc))
    else:
        show_error(f"{type(exc).__name__}: {exc}")


class ComputeWidget(Container):
    """A panel that owns a viewer reference and a Keras child process (closed with it)."""

    def __init__(self, viewer: napari.viewer.Viewer):
        from .._compute import ComputeProcess

        super().__init__()
        self._viewer = viewer
        self._worker = None
        self._compute = ComputeProcess()
        self.native.destroyed.connect(lambda *_: self._compute.close())
