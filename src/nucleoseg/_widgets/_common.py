"""Helpers shared by the widgets: layers to arrays, model lists, notifications."""

from __future__ import annotations

import atexit
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Container

if TYPE_CHECKING:
    import napari

#: Largest image segmented in memory from the GUI (pixels).
MAX_GUI_PIXELS = 20_000 * 20_000


def spatial_shape(layer: napari.layers.Image) -> tuple[int, ...]:
    """The layer's full-resolution shape without the RGB(A) axis (stack axes included)."""
    data = layer.data[0] if layer.multiscale else layer.data
    return tuple(data.shape[:-1] if layer.rgb else data.shape)


def image_layer_to_rgb(layer: napari.layers.Image, viewer: napari.Viewer | None = None
                       ) -> np.ndarray:
    """The pixels of an Image layer as ``(H, W, 3) uint8`` (core conversion rules).

    Multiscale layers give their full-resolution level; stacks (``ndim > 2``, not RGB) give
    the plane the viewer shows.
    """
    from ..io.images import ImageError, to_rgb_uint8

    data = layer.data[0] if layer.multiscale else layer.data
    spatial = spatial_shape(layer)
    if len(spatial) > 2:
        if viewer is None:
            raise ImageError(f"{layer.name} is a {len(spatial)}D stack; choose a 2D image")
        step = viewer.dims.current_step
        index = tuple(int(s) for s in step[: len(spatial) - 2])
        data = data[index]
        spatial = spatial[-2:]
    from ..io.images import check_memory

    check_memory(spatial, layer.name, advice="choose region 'current view', or open the file "
                 "with the NucleoSeg slide reader to segment it block-wise")
    if int(np.prod(spatial)) > MAX_GUI_PIXELS:
        raise ImageError(
            f"{layer.name} has {spatial[0]}x{spatial[1]} pixels; the panel segments up to "
            "20000x20000 in memory; open the file with the NucleoSeg slide reader to segment "
            "it block-wise, or choose region 'current view'"
        )
    return to_rgb_uint8(np.asarray(data), name=layer.name)


#: Largest field of view segmented by region "current view" (pixels of level 0).
MAX_VIEW_PIXELS = 8192 * 8192


def slide_path(layer: Any) -> str | None:
    """The slide file behind an image layer, when it was opened from one."""
    from ..io.wsi import is_slide

    path = layer.metadata.get("nucleoseg_slide") or getattr(layer.source, "path", None)
    if path and is_slide(path):
        return str(path)
    return None


def view_region(layer: Any) -> tuple[int, int, int, int]:
    """``(r0, r1, c0, c1)`` in full-resolution pixels of the part of ``layer`` on screen."""
    corners = np.asarray(layer.corner_pixels, dtype=float)[:, -2:]
    shape0 = np.asarray(layer.level_shapes[0] if layer.multiscale else layer.data.shape)
    shape0 = shape0[-3:-1] if layer.rgb else shape0[-2:]
    factor = np.ones(2)
    if layer.multiscale:
        level = np.asarray(layer.level_shapes[layer.data_level])
        level = level[-3:-1] if layer.rgb else level[-2:]
        factor = shape0 / level
    lo = np.clip(np.floor(corners[0] * factor), 0, shape0).astype(int)
    hi = np.clip(np.ceil((corners[1] + 1) * factor), 0, shape0).astype(int)
    return int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1])


def view_pixels(layer: Any, region: tuple[int, int, int, int]) -> np.ndarray:
    """RGB ``uint8`` pixels of a full-resolution region of a (multiscale) image layer."""
    from ..io.images import ImageError, to_rgb_uint8

    r0, r1, c0, c1 = region
    if (r1 - r0) * (c1 - c0) > MAX_VIEW_PIXELS:
        raise ImageError(f"the view shows {c1 - c0}x{r1 - r0} pixels; zoom in to at most "
                         "8192x8192, or segment the whole slide")
    if r1 <= r0 or c1 <= c0:
        raise ImageError(f"{layer.name} is not on screen")
    data = layer.data[0] if layer.multiscale else layer.data
    return to_rgb_uint8(np.asarray(data[r0:r1, c0:c1]), name=layer.name)


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


def backend_choice() -> Any:
    """A drop-down of ``auto`` and the Keras backends installed here (found without
    importing them), for a panel's compute process."""
    from magicgui.widgets import ComboBox

    from ..backend import BACKENDS, installed

    return ComboBox(
        label="backend", choices=["auto", *(b for b in BACKENDS[1:] if installed(b))],
        value="auto",
        tooltip="backend of the compute process: auto = a GPU-capable backend that sees a "
                "GPU, else OpenVINO on the CPU (TensorFlow when OpenVINO is missing; "
                "training always runs on Keras); the next run restarts the process")


def notify_error(exc: BaseException) -> None:
    """Show an error as a napari notification with one clear sentence."""
    from napari.utils.notifications import show_error

    from ..io.images import ImageError
    from ..models.weights import WeightsError

    if isinstance(exc, (ImageError, WeightsError, ValueError, FileNotFoundError)):
        show_error(str(exc))
    else:
        show_error(f"{type(exc).__name__}: {exc}")


class Panel(Container):
    """A dock panel that scrolls: napari docks ``native``, here the scroll area around the
    fields, so several panels docked at once keep the window within the screen."""

    def __init__(self) -> None:
        super().__init__(scrollable=True)

    @property
    def native(self):
        """The scroll area (what napari docks; magicgui's ``native`` is the inner widget)."""
        return self.root_native_widget

    @property
    def inner(self):
        """The widget holding the panel's layout, inside the scroll area."""
        return self._widget._mgui_get_native_widget()

    def insert(self, key: int, widget: Any) -> None:
        """Add a field; drop-down lists keep a fixed width instead of growing with their
        longest choice (a long layer name must not widen the dock and squeeze the canvas)."""
        from qtpy.QtWidgets import QComboBox

        super().insert(key, widget)
        native = getattr(widget, "native", None)
        if isinstance(native, QComboBox):
            native.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            native.setMinimumContentsLength(12)


#: Every panel's compute process, for :func:`_finish_at_exit`.
_LIVE_COMPUTE: weakref.WeakSet = weakref.WeakSet()


def _finish_at_exit() -> None:
    """At interpreter exit, end the panels' compute children (a worker waiting on one then
    ends at once) and let background workers finish while their Qt objects still exist: a
    worker that ended after Python had torn them down aborted the process (``python -m
    nucleoseg.demo --no-run`` exited 134 about one run in four)."""
    for compute in list(_LIVE_COMPUTE):
        compute.close()
    from qtpy.QtCore import QThreadPool

    pool = QThreadPool.globalInstance()  # None once the application is gone
    if pool is not None:
        pool.waitForDone(15_000)


atexit.register(_finish_at_exit)


class ComputeWidget(Panel):
    """A panel that owns a viewer reference and a Keras child process (closed with it)."""

    def __init__(self, viewer: napari.viewer.Viewer):
        from .._compute import ComputeProcess

        super().__init__()
        self._viewer = viewer
        self._worker = None
        compute = self._compute = ComputeProcess()
        _LIVE_COMPUTE.add(compute)
        # the process ends with the panel: when Qt deletes it, and when napari takes it out
        # of the window (remove_dock_widget only unparents it, the Python object lives on)
        self.native.destroyed.connect(lambda *_: compute.close())
        self._closer = _CloseWhenUndocked(self.native, compute)


def _CloseWhenUndocked(widget, compute):
    """An event filter on ``widget`` that closes ``compute`` once the widget, having been
    docked, loses its parent (napari's ``remove_dock_widget`` and the dock's close button)."""
    from qtpy.QtCore import QEvent, QObject

    class Filter(QObject):
        docked = False

        def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
            if event.type() == QEvent.Type.ParentChange:
                if obj.parent() is not None:
                    self.docked = True
                elif self.docked:
                    compute.close()
            return False

    f = Filter(widget)
    widget.installEventFilter(f)
    return f
