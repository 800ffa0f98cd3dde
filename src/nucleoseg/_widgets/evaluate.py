"""Evaluate panel: prediction vs ground-truth labels -> metrics table and error overlay."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import FileEdit, Label, PushButton, Table, create_widget

import napari

from ._common import Panel, notify_error, spatial_transform

#: Overlay colours that stand out on H&E (no pinks or purples): true positive green, false
#: positive cyan, false negative yellow.
OVERLAY_COLORS = {0: "transparent", 1: "#2ca02c", 2: "#00e5ff", 3: "#ffd700", 4: "#ff3df5",
                  None: "transparent"}
#: Table columns (pixel F1 is Dice, so it is not repeated); AJI comes early so it shows
#: without scrolling.
COLUMNS = ("dice", "aji", "object_f1", "pq", "merged", "split", "iou", "precision", "recall",
           "accuracy")
LEGEND = "green TP, cyan FP, yellow FN, magenta merged nuclei"


class EvaluateWidget(Panel):
    """Compare two Labels layers with the project's metric definitions."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = viewer
        self._pred = create_widget(annotation="napari.layers.Labels", label="prediction")
        self._truth = create_widget(annotation="napari.layers.Labels", label="ground truth")
        self._run = PushButton(text="Evaluate")
        self._table = Table(value={"metric": [], "value": []})
        # the table scrolls within the panel's width rather than widening the dock
        from qtpy.QtWidgets import QSizePolicy

        self._table.native.setSizePolicy(QSizePolicy.Policy.Ignored,
                                         QSizePolicy.Policy.Expanding)
        self._table.native.setMinimumWidth(200)
        self._copy = PushButton(text="Copy table")
        self._csv = FileEdit(label="CSV", mode="w", filter="*.csv")
        self._save = PushButton(text="Save CSV")
        self._status = Label(value=LEGEND)
        self._status.native.setWordWrap(True)
        self.extend([self._pred, self._truth, self._run, self._table, self._copy, self._csv,
                     self._save, self._status])
        self._rows: list[dict] = []
        self._run.clicked.connect(self._guarded(self._on_run))
        self._copy.clicked.connect(self._guarded(self._on_copy))
        self._save.clicked.connect(self._guarded(self._on_save))

    @staticmethod
    def _guarded(handler):
        """A button handler whose failures become one notification (never a Qt abort)."""

        def run(*_):
            try:
                handler()
            except Exception as exc:
                notify_error(exc)

        return run

    def _on_run(self) -> None:
        from ..evaluation.metrics import error_overlay, evaluate_set

        pred_layer, truth_layer = self._pred.value, self._truth.value
        if pred_layer is None or truth_layer is None:
            notify_error(ValueError("choose a prediction and a ground-truth labels layer"))
            return
        pred, truth = np.asarray(pred_layer.data), np.asarray(truth_layer.data)
        for layer, arr in ((pred_layer, pred), (truth_layer, truth)):
            if arr.size and arr.min() < 0:
                raise ValueError(f"{layer.name} holds negative ids ({int(arr.min())}); "
                                 "labels must be 0 (background) or positive")
        if pred.shape != truth.shape:
            notify_error(ValueError(
                f"{pred_layer.name} {pred.shape} and {truth_layer.name} {truth.shape} differ "
                "in shape; evaluate layers of the same image"))
            return
        if pred.ndim == 2:
            planes, names = [(pred, truth)], [pred_layer.name]
        else:  # a stack: one row per plane, plus the pooled row
            flat_p = pred.reshape(-1, *pred.shape[-2:])
            flat_t = truth.reshape(-1, *truth.shape[-2:])
            planes = list(zip(flat_p, flat_t, strict=True))
            names = [f"plane {i}" for i in range(len(planes))]
        rows, overall = evaluate_set(planes, names=names)
        self._rows = rows + ([{"name": "overall", **overall}] if len(rows) > 1 else [])
        data = {"image": [r["name"] for r in self._rows]}
        for k in COLUMNS:
            data[k] = [round(r[k], 4) for r in self._rows]
        self._table.value = data
        overlay = np.stack([error_overlay(p, t, mark_merged=True) for p, t in planes]
                           ).reshape(pred.shape)
        name = f"errors: {pred_layer.name} vs {truth_layer.name}"
        kwargs = {"colormap": _overlay_colormap(), "opacity": 0.6}
        if name in self._viewer.layers:
            self._viewer.layers[name].data = overlay
        else:
            self._viewer.add_labels(overlay, name=name, **kwargs,
                                    **spatial_transform(pred_layer))
        r = self._rows[-1]
        status = (f"Dice {r['dice']:.4f}  AJI {r['aji']:.4f}  object F1 {r['object_f1']:.4f}"
                  f"  merged {r['merged']:.1%}  split {r['split']:.1%}   ({LEGEND})")
        if pred.ndim == 2:
            types = _type_scores(pred_layer, truth_layer, pred, truth)
            if types:
                status += "\n" + types
        self._status.value = status

    def _text(self, sep: str) -> str:
        lines = [sep.join(("image", *COLUMNS))]
        for r in self._rows:
            lines.append(sep.join([r["name"], *(f"{r[k]:.6f}" for k in COLUMNS)]))
        return "\n".join(lines) + "\n"

    def _on_copy(self) -> None:
        from qtpy.QtWidgets import QApplication

        QApplication.clipboard().setText(self._text("\t"))

    def _on_save(self) -> None:
        from ..io.atomic import atomic_write_bytes

        if not self._rows:
            notify_error(ValueError("evaluate first"))
            return
        path = self._csv.value
        if not str(path) or path.is_dir():
            notify_error(ValueError("choose a CSV file name"))
            return
        try:
            atomic_write_bytes(path, self._text(",").encode())
        except OSError as exc:
            raise ValueError(f"cannot save {path}: {exc.strerror or exc}") from None
        self._status.value = f"saved {path}"


def _type_scores(pred_layer, truth_layer, pred: np.ndarray, truth: np.ndarray) -> str:
    """HoVer-Net type metrics when both layers' features carry a ``class`` per nucleus."""
    from ..evaluation.classification import named_type_scores

    def classes(layer) -> dict[int, str]:
        f = layer.features
        if "class" not in f or not len(f):
            return {}
        ids = f.get("index", f.index)
        return {int(i): str(c) for i, c in zip(ids, f["class"], strict=True)}

    pc, tc = classes(pred_layer), classes(truth_layer)
    if not pc or not tc:
        return ""
    s, names = named_type_scores(truth, tc, pred, pc)
    per_class = "  ".join(f"F_{n} {s['f_' + n]:.3f}" for n in names)
    return f"types: F_d {s['f_d']:.3f}  accuracy {s['accuracy']:.3f}  {per_class}"


def _overlay_colormap():
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict=OVERLAY_COLORS)
