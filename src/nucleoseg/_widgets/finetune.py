"""Fine-tune panel: retrain a model on images whose labels the user corrected."""

from __future__ import annotations

import re

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)

import napari

from ..models.card import FineTuneSettings, setting_widget_options
from ._common import (
    ComputeWidget,
    backend_choice,
    image_layer_to_rgb,
    model_choices,
    notify_error,
)


def _crop_boxes(shapes_layer, shape: tuple[int, int]) -> list[tuple[slice, slice]]:
    boxes = []
    for data in shapes_layer.data:
        pts = np.asarray(data)[:, -2:]
        r0, c0 = np.floor(pts.min(axis=0)).astype(int)
        r1, c1 = np.ceil(pts.max(axis=0)).astype(int)
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(r1, shape[0]), min(c1, shape[1])
        if r1 > r0 and c1 > c0:
            boxes.append((slice(r0, r1), slice(c0, c1)))
    return boxes


class FineTuneWidget(ComputeWidget):
    """Pick (image, corrected labels), a base model and a name; train; save a user model."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(viewer)
        self._image = create_widget(annotation="napari.layers.Image", label="image")
        self._labels_layer = create_widget(annotation="napari.layers.Labels",
                                           label="corrected labels")
        self._roi = create_widget(annotation="napari.layers.Shapes | None", label="regions (opt.)")
        self._in_view = CheckBox(text="only the part in view", value=False)
        self._base = ComboBox(label="start from", choices=model_choices)
        self._backend = backend_choice()
        self._name = LineEdit(label="new model name", value="my_model")
        # the fields and their defaults come from FineTuneSettings, as the CLI's flags do
        self._epochs = SpinBox(**setting_widget_options(FineTuneSettings, "epochs"))
        self._steps = SpinBox(**setting_widget_options(FineTuneSettings, "steps_per_epoch"))
        self._lr = FloatSpinBox(**setting_widget_options(FineTuneSettings, "learning_rate"))
        self._lr.native.setDecimals(6)
        freeze = setting_widget_options(FineTuneSettings, "freeze_encoder")
        self._freeze = CheckBox(text="freeze encoder", value=freeze["value"],
                                tooltip=freeze["tooltip"])
        self._keep = CheckBox(
            text="keep corrections for later rounds", value=False,
            tooltip="stores the image and labels beside the new model (your user folder), so "
                    "the next round can learn from them again")
        self._previous = CheckBox(
            text="reuse earlier rounds' corrections", value=True,
            tooltip="when the model you start from kept its corrections")
        self._run = PushButton(text="Fine-tune")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="progress", value=0, max=1)
        self._status = Label(value="")
        self._status.native.setWordWrap(True)
        self._status.native.setMinimumWidth(10)
        self.extend([self._image, self._labels_layer, self._roi, self._in_view, self._base,
                     self._backend, self._name, self._epochs, self._steps, self._lr,
                     self._freeze, self._keep, self._previous, self._run, self._cancel,
                     self._progress, self._status])
        self._history: dict[str, list[float]] = _empty_history()
        self._make_plot()
        self._backend.changed.connect(
            lambda value: self._compute.set_backend(str(value)))
        self._run.clicked.connect(self._on_run)
        self._cancel.clicked.connect(self._on_cancel)

    def _make_plot(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self._figure = Figure(figsize=(3.2, 2.2), tight_layout=True)
        self._axes = self._figure.add_subplot(111)
        self._canvas = FigureCanvasQTAgg(self._figure)
        self._canvas.setMinimumHeight(170)
        # the plot follows the panel's width instead of widening the dock (and squeezing
        # the canvas of the viewer)
        from qtpy.QtWidgets import QSizePolicy

        self._canvas.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self._canvas.setMinimumWidth(200)
        self.inner.layout().addWidget(self._canvas)
        self._draw()

    def _draw(self) -> None:
        ax = self._axes
        ax.clear()
        h = self._history
        ax.plot(h["step"], h["loss"], color="tab:red", label="loss")
        ax.plot(h["step"], h["dice"], color="tab:blue", label="Dice (training)")
        if h["val_step"]:
            ax.plot(h["val_step"], h["val_dice"], "o-", color="tab:green",
                    label="Dice (held out)")
        ax.set_xlabel("step", fontsize=8)
        ax.set_xlim(0, max([1] + h["step"]))
        ax.set_ylim(0, max([1.0] + [v for v in h["loss"] if v == v]))
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper right")
        ax.set_title("loss / Dice", fontsize=8)
        self._canvas.draw_idle()

    # ------------------------------------------------------------------ running
    def _pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        from ..io.images import ImageError

        image_layer, labels_layer = self._image.value, self._labels_layer.value
        if image_layer is None or labels_layer is None:
            raise ImageError("choose an image layer and a labels layer")
        image = image_layer_to_rgb(image_layer, self._viewer)
        labels = np.asarray(labels_layer.data)
        if labels.shape != image.shape[:2]:
            raise ImageError(f"labels layer {labels.shape} and image {image.shape[:2]} "
                             "differ in size")
        if self._in_view.value:
            # the labels layer's data-coordinate box of what the canvas shows
            (r0, c0), (r1, c1) = np.asarray(labels_layer.corner_pixels)[:, -2:]
            box = (slice(max(int(r0), 0), int(r1) + 1), slice(max(int(c0), 0), int(c1) + 1))
            image, labels = image[box], labels[box]
            if min(labels.shape) < 1:
                raise ImageError("nothing of the image is in view")
        roi = self._roi.value
        if roi is None or len(roi.data) == 0:
            return [(image, labels)]
        boxes = _crop_boxes(roi, labels.shape)
        if not boxes:
            raise ImageError(f"no region of {roi.name} overlaps the image")
        return [(image[b], labels[b]) for b in boxes]

    def _on_run(self) -> None:
        name = self._name.value.strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
            notify_error(ValueError("model name: letters, digits, '_', '-', '.' (max 64)"))
            return
        try:
            pairs = self._pairs()
        except Exception as exc:
            notify_error(exc)
            return
        if not self._base.value:
            notify_error(ValueError("no base model available"))
            return
        from napari.qt.threading import thread_worker

        base, epochs, steps = self._base.value, self._epochs.value, self._steps.value
        lr, freeze = float(self._lr.value), bool(self._freeze.value)
        keep, previous = bool(self._keep.value), bool(self._previous.value)
        self._history = _empty_history()
        self._progress.max = epochs * steps
        self._progress.value = 0
        compute = self._compute

        @thread_worker(ignore_errors=True)
        def work():
            return (yield from compute.run(
                "fine_tune", base=base, pairs=pairs, name=name, epochs=epochs,
                steps_per_epoch=steps, learning_rate=lr, freeze_encoder=freeze,
                keep_corrections=keep, previous_corrections=previous))

        worker = work()
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_done)
        worker.errored.connect(lambda exc: (notify_error(exc), self._set_status("failed")))
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._run.enabled, self._cancel.enabled = False, True
        self._status.value = "training..."
        worker.start()

    def _set_status(self, text: str) -> None:
        self._status.value = text

    def _on_progress(self, value) -> None:
        if value[0] == "step":
            self._on_step(value[1:])
        elif value[0] == "epoch":
            logs = value[2]
            if "val_dice" in logs and self._history["step"]:
                self._history["val_step"].append(self._history["step"][-1])
                self._history["val_dice"].append(float(logs["val_dice"]))
            self._draw()

    def _on_step(self, value) -> None:
        step, total, logs = value
        self._progress.value = step
        self._history["step"].append(step)
        self._history["loss"].append(float(logs.get("loss", np.nan)))
        self._history["dice"].append(float(logs.get("nucleus_dice", np.nan)))
        if step % 5 == 0 or step == total:
            self._draw()
        self._status.value = f"step {step}/{total}, loss {logs.get('loss', 0):.3f}"

    def _on_done(self, path) -> None:
        import json

        from napari.utils.notifications import show_info, show_warning

        if path is None:
            self._status.value = "cancelled: nothing saved"
            return
        self._base.reset_choices()
        try:
            val = json.loads(path.with_suffix(".json").read_text())["fine_tune"].get(
                "validation")
        except (OSError, ValueError, KeyError):
            val = None
        if not val:
            self._status.value = (f"saved {path.stem} (pick it in Segment); no held-out "
                                  "check: the corrected region is too small")
            show_info(f"NucleoSeg: saved model {path.stem} to {path.parent}")
            return
        b, a = val["before"], val["after"]
        change = (f"held-out Dice {b['dice']:.3f} -> {a['dice']:.3f}, AJI {b['aji']:.3f} -> "
                  f"{a['aji']:.3f} (epoch {val['best_epoch']} kept)")
        if val["improved"]:
            self._status.value = f"saved {path.stem}: {change}. Pick it in Segment."
            show_info(f"NucleoSeg: {path.stem} is better on the held-out part: {change}")
        else:
            self._status.value = (f"saved {path.stem}, but it is NOT better than the base: "
                                  f"{change}. Keep using the base, or correct more.")
            show_warning(f"NucleoSeg: {path.stem} is not better than its base on the held-out "
                         f"part ({change})")

    def _on_finished(self) -> None:
        self._run.enabled, self._cancel.enabled = True, False
        self._worker = None
        self._draw()

    def _on_cancel(self) -> None:
        self._compute.cancel()
        self._status.value = "stopping after this step..."


def _empty_history() -> dict[str, list[float]]:
    return {"step": [], "loss": [], "dice": [], "val_step": [], "val_dice": []}
