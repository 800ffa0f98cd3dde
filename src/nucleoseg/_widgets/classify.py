"""Classify panel: name classes, mark a few nuclei per class, train, see every nucleus by class.

The QuPath habit in napari: a Points layer "class marks" holds the marks (each point's
``class`` feature is the class chosen when it was placed); *Train & apply* describes the
nuclei under the marks (:mod:`nucleoseg.classify.features`), fits a random forest in well
under a second and classifies every nucleus of the labels layer. The labels layer's
``features`` get a ``class`` column; a "classes" layer shows the same labels (no copy)
coloured by class; the table counts nuclei per class and, with a pixel size, their density
per mm². Classifiers save to the user folder (atomic, with a card) and load from there; the
shipped CoNSeP classifier applies with one click, whole: its patch CNN runs from its
OpenVINO file. Runs in the GUI process: no Keras needed.
"""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
from magicgui.widgets import (
    ComboBox,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    Table,
    create_widget,
)

import napari

from ._common import Panel, image_layer_to_rgb, notify_error, spatial_transform

MARKS = "class marks"
DEFAULT_CLASSES = "tumour, immune, stroma"


def _warm_up() -> None:
    """What the first *Train & apply* would otherwise wait for (~3.5 s on 2 cores), done
    while the user marks nuclei: the classifier's compiled kernels, scikit-learn's import and
    napari's compile of its direct label colouring."""
    import sklearn.ensemble  # noqa: F401
    from napari.utils.colormaps import DirectLabelColormap

    from ..classify import kernels  # noqa: F401

    with contextlib.suppress(Exception):  # napari's own texture path: only a warm-up
        DirectLabelColormap(color_dict={1: "red", None: "transparent"})._data_to_texture(
            np.ones((2, 2), np.int32))


class ClassifyWidget(Panel):
    """Train a nucleus classifier from marked nuclei and apply it (see the module doc)."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = viewer
        self._image = create_widget(annotation="napari.layers.Image", label="image")
        self._labels_layer = create_widget(annotation="napari.layers.Labels", label="nuclei")
        self._names = LineEdit(value=DEFAULT_CLASSES, label="classes")
        self._mark_as = ComboBox(label="mark as", choices=lambda *_: self._class_names())
        self._marks = PushButton(text="Mark nuclei (points layer)")
        self._train = PushButton(text="Train && apply")
        self._saved = ComboBox(label="classifier", choices=_classifier_choices)
        self._apply = PushButton(text="Apply classifier")
        self._save_name = LineEdit(value="my_classes", label="save as")
        self._save = PushButton(text="Save classifier")
        self._mpp = FloatSpinBox(value=0.0, min=0.0, max=100.0, step=0.01,
                                 label="µm / pixel")
        self._table = Table(value={"class": [], "nuclei": [], "per mm²": []})
        self._status = Label(value="name classes, mark nuclei, then train")
        self._status.native.setWordWrap(True)
        self.extend([self._image, self._labels_layer, self._names, self._mark_as, self._marks,
                     self._train, self._saved, self._apply, self._save_name, self._save,
                     self._mpp, self._table, self._status])
        self._fit_table()
        self._warm_up = threading.Thread(target=_warm_up, name="nucleoseg-classify-warm-up",
                                         daemon=True)
        self._warm_up.start()
        self._clf = None
        self._cache: tuple | None = None  # (labels id, image id, ids, features)
        self._names.changed.connect(self._on_names)
        self._mark_as.changed.connect(self._on_mark_as)
        self._marks.clicked.connect(self._on_marks)
        self._train.clicked.connect(self._on_train)
        self._apply.clicked.connect(self._on_apply)
        self._save.clicked.connect(self._on_save)

    def _fit_table(self) -> None:
        """Columns share the panel's width (no horizontal scrolling), no row numbers."""
        from qtpy.QtWidgets import QHeaderView

        table = self._table.native
        table.setMaximumHeight(170)
        table.verticalHeader().setVisible(False)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)

    # ------------------------------------------------------------ classes and marks
    def _class_names(self) -> list[str]:
        names = [n.strip() for n in self._names.value.split(",") if n.strip()]
        return list(dict.fromkeys(names))

    def _colors(self, names: list[str]) -> list[str]:
        from ..classify.classifier import PALETTE

        return [PALETTE[i % len(PALETTE)] for i in range(len(names))]

    def _on_names(self, *_) -> None:
        names = self._class_names()
        self._mark_as.reset_choices()
        if MARKS in self._viewer.layers:
            self._style_marks(self._viewer.layers[MARKS], names)

    def _on_mark_as(self, *_) -> None:
        if MARKS in self._viewer.layers:
            self._style_marks(self._viewer.layers[MARKS], self._class_names())

    def _style_marks(self, layer, names: list[str]) -> None:
        """Colour existing marks by class; new marks take the 'mark as' class and colour."""
        colors = dict(zip(names, self._colors(names), strict=True))
        if len(layer.data):
            cls = layer.features["class"].astype(str)
            layer.face_color = [colors.get(c, "#808080") for c in cls]
        current = self._mark_as.value
        if current:
            layer.feature_defaults = {"class": current}
            layer.current_face_color = colors.get(current, "#808080")

    def _on_marks(self, *_) -> None:
        """Add (or select) the marks layer in add mode, coloured by class."""
        import pandas as pd

        names = self._class_names()
        if len(names) < 2:
            notify_error(ValueError("name at least two classes, separated by commas"))
            return
        if MARKS not in self._viewer.layers:
            ref = self._labels_layer.value or self._image.value
            kwargs = spatial_transform(ref) if ref is not None else {}
            layer = self._viewer.add_points(
                ndim=2, name=MARKS, size=10, border_color="white", **kwargs,
                features=pd.DataFrame({"class": pd.Series([], dtype=object)}))
        layer = self._viewer.layers[MARKS]
        self._style_marks(layer, names)
        self._viewer.layers.selection.active = layer
        layer.mode = "add"
        self._status.value = (f"click nuclei to mark them as '{self._mark_as.value}'; change "
                              "'mark as' for the next class")

    # ------------------------------------------------------------ train / apply
    def _features(self):
        """``(image, labels, ids, features)`` of the chosen layers (features cached per layer
        data)."""
        from ..classify.features import nucleus_features

        img_layer, lab_layer = self._image.value, self._labels_layer.value
        if img_layer is None or lab_layer is None:
            raise ValueError("choose an image and its nuclei labels layer")
        labels = np.asarray(lab_layer.data)
        if labels.ndim != 2:
            raise ValueError(f"{lab_layer.name} is {labels.ndim}D; choose 2D labels")
        image = image_layer_to_rgb(img_layer, self._viewer)
        if image.shape[:2] != labels.shape:
            raise ValueError(f"{img_layer.name} {image.shape[:2]} and {lab_layer.name} "
                             f"{labels.shape} differ in size")
        if labels.min() < 0:
            raise ValueError(f"{lab_layer.name} holds negative ids; labels must be >= 0")
        key = (id(lab_layer.data), id(img_layer.data), int(labels.max()), int(labels.sum()))
        if self._cache is None or self._cache[0] != key:
            ids, feats = nucleus_features(image, labels)
            self._cache = (key, ids, feats)
        _, ids, feats = self._cache
        return image, labels, ids, feats

    def _marked(self, labels: np.ndarray, lab_layer) -> tuple[np.ndarray, np.ndarray]:
        """Label ids under the marks and their class names (unmarked nuclei skipped)."""
        if MARKS not in self._viewer.layers or not len(self._viewer.layers[MARKS].data):
            raise ValueError("mark a few nuclei of each class first (Mark nuclei)")
        marks = self._viewer.layers[MARKS]
        world = np.asarray([marks.data_to_world(p) for p in marks.data])
        pos = np.asarray([lab_layer.world_to_data(w) for w in world])[:, -2:]
        rc = np.round(pos).astype(int)
        inside = ((rc >= 0) & (rc < labels.shape)).all(axis=1)
        rc = rc[inside]
        ids = labels[rc[:, 0], rc[:, 1]]
        names = np.asarray(marks.features["class"].astype(str))[inside]
        keep = ids > 0
        return ids[keep], names[keep]

    def _on_train(self, *_) -> None:
        from ..classify.classifier import NucleusClassifier

        try:
            t0 = time.perf_counter()
            _, labels, ids, feats = self._features()
            marked_ids, marked_names = self._marked(labels, self._labels_layer.value)
            names = [n for n in self._class_names() if n in set(marked_names)]
            if len(names) < 2:
                raise ValueError("mark nuclei of at least two classes (a mark must lie on a "
                                 "nucleus of the labels layer)")
            last = {}
            for i, n in zip(marked_ids, marked_names, strict=True):
                last[int(i)] = n  # a nucleus marked twice takes its latest class
            row = {int(i): k for k, i in enumerate(ids)}
            x = feats[[row[i] for i in last]]
            y = np.array([names.index(n) if n in names else -1 for n in last.values()])
            x, y = x[y >= 0], y[y >= 0]
            self._clf = NucleusClassifier.fit(
                x, y, names, self._colors(self._class_names())[: len(names)], trees=100,
                max_depth=None, min_samples_leaf=1,
                card={"description": "classes marked by hand in the Classify panel",
                      "training": {"image": self._image.value.name,
                                   "labels": self._labels_layer.value.name}})
            self._show(ids, feats)
            self._status.value = (f"trained on {len(y)} marked nuclei and applied to "
                                  f"{len(ids)} in {time.perf_counter() - t0:.2f} s")
        except Exception as exc:  # one message, nothing lost
            notify_error(exc)

    def _on_apply(self, *_) -> None:
        from ..classify.classifier import NucleusClassifier

        try:
            t0 = time.perf_counter()
            if not self._saved.value:
                raise ValueError("no classifier to apply")
            self._clf = NucleusClassifier.load(self._saved.value)
            image, labels, ids, feats = self._features()
            proba = None
            if self._clf.runs_without_keras:  # its patch net runs from its OpenVINO file
                proba = self._clf.predict_proba(image, labels, (ids, feats))[1]
            else:  # the forests (the context forest needs the centres)
                from ..classify.context import nucleus_centres

                proba = self._clf.predict_features(feats, nucleus_centres(labels, ids))[1]
            self._show(ids, feats, proba)
            # a patch net with no OpenVINO file needs TensorFlow, which must not load beside
            # napari's OpenGL: the panel then applies the forest part
            part = "" if self._clf.runs_without_keras else " (forest part)"
            self._status.value = (f"{self._clf.card.get('name', 'classifier')}{part}: "
                                  f"{len(ids)} nuclei in {time.perf_counter() - t0:.2f} s")
        except Exception as exc:
            notify_error(exc)

    def _show(self, ids: np.ndarray, feats: np.ndarray, proba: np.ndarray | None = None
              ) -> None:
        """Classes (from ``proba``, else from the features by the forest) into the labels
        layer's features, a coloured layer and the table."""
        import pandas as pd
        from napari.utils.colormaps import DirectLabelColormap

        clf = self._clf
        if proba is None:
            idx, proba = clf.predict_features(feats)
        else:
            idx = proba.argmax(axis=1)
        lab_layer = self._labels_layer.value
        names = np.asarray(clf.classes, dtype=object)[idx] if len(idx) else np.array([])
        table = pd.DataFrame({"index": ids.astype(int), "class": names,
                              "probability": proba.max(axis=1) if len(idx) else []})
        lab_layer.features = table
        colors = {int(i): clf.colors[int(k)] for i, k in zip(ids, idx, strict=True)}
        colors.update({0: "transparent", None: "transparent"})
        name = f"classes: {lab_layer.name}"
        cmap = DirectLabelColormap(color_dict=colors)
        if name in self._viewer.layers:
            layer = self._viewer.layers[name]
            layer.data = lab_layer.data
            layer.colormap = cmap
        else:
            layer = self._viewer.add_labels(lab_layer.data, name=name, colormap=cmap,
                                            opacity=0.7, **spatial_transform(lab_layer))
        layer.features = table
        counts = np.bincount(idx, minlength=len(clf.classes)) if len(idx) else \
            np.zeros(len(clf.classes), int)
        area_mm2 = None
        if self._mpp.value > 0:
            area_mm2 = lab_layer.data.shape[0] * lab_layer.data.shape[1] * \
                (self._mpp.value / 1000.0) ** 2
        self._table.value = {
            "class": list(clf.classes),
            "nuclei": [int(c) for c in counts],
            "per mm²": [int(round(c / area_mm2)) if area_mm2 else "-" for c in counts],
        }
        self._fit_table()

    def _on_save(self, *_) -> None:
        from ..classify.classifier import user_classifier_dir

        try:
            if self._clf is None:
                raise ValueError("train or apply a classifier first")
            path = self._clf.save(user_classifier_dir(), self._save_name.value.strip())
            self._saved.reset_choices()
            self._saved.value = str(path)
            self._status.value = f"saved {path}"
        except Exception as exc:
            notify_error(exc)


def _classifier_choices(*_) -> list[tuple[str, str]]:
    from ..classify.classifier import available_classifiers

    return [(c["name"] if c["source"] == "shipped" else f"{c['name']} (yours)", str(c["path"]))
            for c in available_classifiers()]
