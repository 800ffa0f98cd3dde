"""Segment dock widget: image layer + model -> Labels layer, tiled, in a worker thread."""

from __future__ import annotations

import time

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)

import napari

from ..inference.predict import Cancelled
from ..models.card import InferenceSettings, PostprocessParams, setting_widget_options
from ._common import (
    ComputeWidget,
    backend_choice,
    image_layer_to_rgb,
    model_choices,
    notify_error,
    slide_path,
    spatial_shape,
    spatial_transform,
    view_pixels,
    view_region,
)

#: Region choices: the whole image (block-wise for slides) or the part on screen.
WHOLE, VIEW = "whole image", "current view"


class SegmentWidget(ComputeWidget):
    """Choose an image and a model, press Segment: one Labels layer, one id per nucleus."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(viewer)
        self._image = create_widget(annotation="napari.layers.Image", label="image")
        self._model = ComboBox(label="model", choices=model_choices)
        self._device = ComboBox(label="device", choices=["auto", "CPU"], value="auto",
                                tooltip="the devices the compute process's backend sees")
        self._backend = backend_choice()
        self._region = ComboBox(label="region", choices=[WHOLE, VIEW], value=WHOLE,
                                tooltip="whole image: slides are segmented block-wise into a "
                                        "zarr store beside the file; current view: only "
                                        "the part on screen, at full resolution")
        # the fields come from the model card's settings: one place for bounds and help
        self._tile = SpinBox(**{**setting_widget_options(InferenceSettings, "tile"),
                                "label": "tile size", "max": 4096})
        self._advanced = CheckBox(text="advanced options", value=False)
        self._threshold = FloatSpinBox(**setting_widget_options(PostprocessParams, "threshold"))
        self._min_size = SpinBox(**setting_widget_options(PostprocessParams, "min_size"))
        self._halo = SpinBox(**setting_widget_options(InferenceSettings, "halo"))
        self._precision = ComboBox(
            label="precision", choices=["auto", "float32", "bfloat16"], value="auto",
            tooltip="auto: bfloat16 on CPUs that compute it natively (about 1.7x faster, "
                    "same accuracy on MoNuSeg), float32 elsewhere")
        self._tta = CheckBox(text="quality: average 4 flips (4x slower)", value=False,
                             tooltip="test-time augmentation, whole slides too")
        self._advanced_widgets = [self._threshold, self._min_size, self._halo, self._precision,
                                  self._tta]
        self._run = PushButton(text="Segment")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="progress", value=0, max=1, visible=False)
        self._status = Label(value="")
        self._status.native.setWordWrap(True)  # a long model description must not widen
        self._status.native.setMinimumWidth(10)  # the panel past the window
        self.extend([self._image, self._model, self._device, self._backend, self._region,
                     self._tile,
                     self._advanced,
                     *self._advanced_widgets, self._run, self._cancel, self._progress,
                     self._status])
        for w in self._advanced_widgets:
            w.visible = False
        self._advanced.changed.connect(self._on_advanced)
        self._model.changed.connect(self._on_model)
        self._precision.changed.connect(self._prepare)
        self._backend.changed.connect(self._on_backend)
        self._image.changed.connect(self._prepare)
        self._run.clicked.connect(self._on_run)
        self._cancel.clicked.connect(self._on_cancel)
        self._on_model()
        self._list_devices()
        self._watch_user_models()

    # ------------------------------------------------------------------ settings
    def _watch_user_models(self) -> None:
        """Refresh the model list whenever a model is saved to the user folder."""
        from qtpy.QtCore import QFileSystemWatcher

        from ..models.weights import user_dir

        folder = user_dir()
        folder.mkdir(parents=True, exist_ok=True)
        self._watcher = QFileSystemWatcher([str(folder)], self.native)
        self._watcher.directoryChanged.connect(lambda *_: self._model.reset_choices())

    def _on_backend(self, *_) -> None:
        try:
            self._compute.set_backend(str(self._backend.value))
        except Exception as exc:  # a run in flight: keep the current backend
            notify_error(exc)
            return
        self._prepare()
        self._list_devices()

    def _list_devices(self) -> None:
        """Ask the compute process which devices its backend sees; list them by name."""
        from napari.qt.threading import thread_worker

        compute = self._compute

        @thread_worker(ignore_errors=True)
        def work():
            return (yield from compute.run("devices"))

        def show(devices) -> None:
            keep = self._device.value if self._device.value in devices else "auto"
            self._device.choices = devices
            self._device.value = keep

        worker = work()
        worker.returned.connect(show)
        worker.start()
        self._devices_worker = worker

    def _on_advanced(self, value: bool = False) -> None:
        for w in self._advanced_widgets:
            w.visible = bool(self._advanced.value)

    def _on_model(self, *_) -> None:
        """Show the chosen model's card settings as the defaults."""
        if not self._model.value:
            self._status.value = "no model installed"
            return
        from ..models.weights import read_card

        try:
            card = read_card(self._model.value)
        except Exception as exc:  # unreadable card: say so, keep the widget usable
            self._status.value = str(exc)
            return
        for widget, value in ((self._tile, card.inference.tile),
                              (self._halo, card.inference.halo),
                              (self._threshold, card.postprocess.threshold),
                              (self._min_size, card.postprocess.min_size)):
            widget.value = min(max(value, widget.min), widget.max)
        test = card.scores
        self._status.value = (f"{card.description}; Dice {test['dice']:.3f}, "
                              f"AJI {test['aji']:.3f}" if test else "")
        self._prepare()

    def _prepare(self, *_) -> None:
        """Have the compute process import Keras, load the chosen model and trace it for the
        chosen image's tiles now, in the background, so the first Segment does not wait."""
        if not self._model.value:
            return
        layer = self._image.value
        shape = (None if layer is None or layer.multiscale
                 else tuple(int(n) for n in spatial_shape(layer)[-2:]))
        self._compute.prepare("prepare_segment", model=self._model.value,
                              precision=str(self._precision.value), shape=shape,
                              settings={"tile": int(self._tile.value),
                                        "halo": int(self._halo.value)})

    # ------------------------------------------------------------------ running
    def _settings(self) -> dict:
        return {"tile": int(self._tile.value), "halo": int(self._halo.value),
                "threshold": float(self._threshold.value), "min_size": int(self._min_size.value),
                "precision": str(self._precision.value), "tta": bool(self._tta.value)}

    def _on_run(self) -> None:
        layer = self._image.value
        if layer is None:
            notify_error(ValueError("open an image first (File > Open, or File > Open Sample)"))
            return
        if not self._model.value:
            notify_error(ValueError("no model available"))
            return
        slide = slide_path(layer)
        if self._region.value == VIEW:
            return self._run_view(layer)
        if slide is not None:
            return self._run_slide(layer, slide)
        try:
            image = image_layer_to_rgb(layer, self._viewer)
        except Exception as exc:
            notify_error(exc)
            return
        from napari.qt.threading import thread_worker

        device = self._device.value
        name = f"{layer.name} nuclei"
        transform = spatial_transform(layer)

        compute, model, settings = self._compute, self._model.value, self._settings()

        @thread_worker(ignore_errors=True)
        def work():
            return (yield from compute.run("segment", model=model, image=image,
                                           settings=settings, device=device))

        self._start(work(), lambda result: self._on_done(result, name, transform))

    def _run_view(self, layer) -> None:
        """Segment the part of the layer on screen, at full resolution."""
        try:
            region = view_region(layer)
        except Exception as exc:
            notify_error(exc)
            return
        from napari.qt.threading import thread_worker

        r0, _, c0, _ = region
        scale = tuple(layer.scale[-2:])
        translate = (layer.translate[-2] + r0 * scale[0], layer.translate[-1] + c0 * scale[1])
        transform = {"scale": scale, "translate": translate}
        name = f"{layer.name} nuclei (view)"
        compute, model, settings = self._compute, self._model.value, self._settings()
        device = self._device.value

        @thread_worker(ignore_errors=True)
        def work():
            yield 0, 0, "reading the view..."
            image = view_pixels(layer, region)  # lazy layers read here, off the GUI thread
            return (yield from compute.run("segment", model=model, image=image,
                                           settings=settings, device=device))

        self._start(work(), lambda result: self._on_done(result, name, transform))

    def _run_slide(self, layer, slide: str) -> None:
        """Block-wise whole-slide segmentation into a zarr store, shown lazily."""
        from napari.qt.threading import thread_worker

        compute, model, settings = self._compute, self._model.value, self._settings()
        transform = spatial_transform(layer)

        @thread_worker(ignore_errors=True)
        def work():
            return (yield from compute.run("segment_slide", slide=slide, model=model,
                                           settings=settings))

        self._start(work(), lambda summary: self._on_slide_done(summary, layer.name,
                                                                transform))

    def _on_slide_done(self, summary: dict, name: str, transform: dict) -> None:
        from ..io.labels_store import read_labels_store

        store = read_labels_store(summary["out"])
        levels = store["levels"]
        scale = tuple(s * store["scale"] for s in transform["scale"])
        layer_name = f"{name} nuclei"
        if layer_name in self._viewer.layers:
            self._viewer.layers.remove(layer_name)
        self._viewer.add_labels(levels if len(levels) > 1 else levels[0], name=layer_name,
                                multiscale=len(levels) > 1, scale=scale,
                                translate=transform["translate"],
                                metadata={"nucleoseg_store": summary["out"]})
        self._status.value = f"{summary['n_nuclei']} nuclei -> {summary['out']}"

    def _start(self, worker, on_result) -> None:
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(on_result)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._set_busy(True)
        self._started = time.perf_counter()
        self._status.value = "starting..."
        from napari.utils import progress

        self._pbar = progress(total=0, desc="NucleoSeg: segmenting")
        worker.start()

    def _on_progress(self, value) -> None:
        done, total, message = value
        self._status.value = message
        if total > 0:
            self._progress.max = total
            self._progress.value = done
        pbar = getattr(self, "_pbar", None)
        if pbar is None:  # a late report after the run ended
            return
        if total > 0:
            pbar.total = total
            pbar.n = done
        pbar.set_description(f"NucleoSeg: {message}")
        pbar.refresh()

    def _on_done(self, result: dict, name: str, transform: dict) -> None:
        labels = result["labels"]
        if name in self._viewer.layers:
            self._viewer.layers[name].data = labels
        else:
            self._viewer.add_labels(labels, name=name, **transform)
        seconds = time.perf_counter() - self._started
        self._status.value = (f"{int(labels.max())} nuclei in {seconds:.1f} s "
                              f"({result.get('backend', '')}, {result.get('device', '')}, "
                              f"{result['precision']})")

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self._status.value = "cancelled"
            return
        self._status.value = "failed"
        notify_error(exc)

    def _on_finished(self) -> None:
        self._set_busy(False)
        self._worker = None
        pbar = getattr(self, "_pbar", None)
        if pbar is not None:
            pbar.close()
            self._pbar = None

    def _on_cancel(self) -> None:
        if self._worker is not None:
            self._status.value = "cancelling after this batch..."
            self._compute.cancel()

    def _set_busy(self, busy: bool) -> None:
        self._run.enabled = not busy
        self._cancel.enabled = busy
        self._progress.visible = busy
        if busy:
            self._progress.value = 0
