"""Nucleus type classifiers: a random forest over per-nucleus features, stored without pickle.

A classifier is ``<name>.npz`` (the forest's node arrays, ``allow_pickle=False``) plus
``<name>.json`` (its card: class names and colours, feature names, training data and
metrics, the ``.npz`` file's SHA-256). Training uses scikit-learn; prediction walks the stored
trees with numpy, so loading a classifier never runs code from a file.

Shipped classifiers live in ``weights/classifiers/`` (never written to); the user's own in
``<user model folder>/classifiers/``.
"""

from __future__ import annotations

import io as _io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .features import FEATURE_NAMES, nucleus_features
from .forest import Forest

#: The shipped CoNSeP classifier's name.
DEFAULT_CLASSIFIER = "consep_types"
CLASSIFIER_VERSION = 1
#: Distinct colours that stand out on H&E, one per class in order (then they repeat).
PALETTE = ("#ffd400", "#00c8ff", "#ff3030", "#30ff60", "#ff8c00", "#b070ff", "#ffffff",
           "#00ffd0")


class ClassifierError(RuntimeError):
    """A classifier that cannot be used (missing, corrupted, mismatched)."""


@dataclass
class NucleusClassifier:
    """Classes of nuclei from an image and its instance labels.

    Parameters
    ----------
    classes : list of str
        Class names; predictions are indices into this list.
    colors : list of str
        ``#rrggbb`` per class.
    forest : Forest
        The fitted trees.
    card : dict
        Everything else worth keeping (training data, metrics, time).
    patch_net : keras.Model, optional
        A :mod:`~nucleoseg.classify.patch_net` CNN whose probabilities are averaged with the
        forest's, weighted ``patch_weight`` (the shipped CoNSeP classifier has one).
    patch_weight : float
        Weight of the patch net's probabilities, in [0, 1].
    patch_ir : pathlib.Path, optional
        The patch net as an OpenVINO file (checked against the card), run without Keras.
    class_weights : list of float, optional
        A decision rule chosen on validation tiles: the probabilities are multiplied by these
        per-class weights and renormalised (rare classes the trees under-predict get more
        than 1). None = plain probabilities.
    """

    classes: list[str]
    colors: list[str]
    forest: Forest
    card: dict[str, Any] = field(default_factory=dict)
    patch_net: Any = None
    patch_weight: float = 0.0
    patch_ir: Path | None = None
    class_weights: list[float] | None = None
    _runner: Any = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        targets: np.ndarray,
        classes: list[str],
        colors: list[str] | None = None,
        trees: int = 100,
        max_depth: int | None = 16,
        min_samples_leaf: int = 2,
        seed: int = 0,
        class_weight: str | None = "balanced_subsample",
        card: dict[str, Any] | None = None,
    ) -> NucleusClassifier:
        """Train a random forest on ``(N, F)`` features and ``(N,)`` class indices."""
        from sklearn.ensemble import RandomForestClassifier

        targets = np.asarray(targets, int)
        if features.shape[0] != targets.shape[0] or features.shape[0] == 0:
            raise ValueError("need one class per nucleus, and at least one nucleus")
        if targets.min() < 0 or targets.max() >= len(classes):
            raise ValueError("class indices must lie in 0..len(classes)-1")
        if np.unique(targets).size < 2:
            raise ValueError("mark nuclei of at least two classes")
        rf = RandomForestClassifier(
            n_estimators=trees, max_depth=max_depth, min_samples_leaf=min_samples_leaf,
            class_weight=class_weight, random_state=seed, n_jobs=1,
            max_features="sqrt",
        )
        rf.fit(features, targets)
        colors = list(colors or [PALETTE[i % len(PALETTE)] for i in range(len(classes))])
        info = {"trees": trees, "max_depth": max_depth, "min_samples_leaf": min_samples_leaf,
                "class_weight": class_weight, "seed": seed, "nuclei": int(targets.size),
                "per_class": {c: int((targets == i).sum()) for i, c in enumerate(classes)}}
        return cls(list(classes), colors, Forest.from_sklearn(rf, len(classes)),
                   {**(card or {}), "training": {**(card or {}).get("training", {}), **info}})

    def predict_features(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, F)`` features to ``(class indices (N,), probabilities (N, C))`` by the forest
        alone (with :attr:`class_weights` applied)."""
        proba = self._weighted(self._forest_proba(features))
        return proba.argmax(axis=1), proba

    def _forest_proba(self, features: np.ndarray) -> np.ndarray:
        if features.shape[1] != len(FEATURE_NAMES):
            raise ClassifierError(f"expected {len(FEATURE_NAMES)} features, got "
                                  f"{features.shape[1]}")
        return self.forest.predict_proba(features.astype(np.float32))

    def _weighted(self, proba: np.ndarray) -> np.ndarray:
        """``proba`` times :attr:`class_weights`, renormalised (unchanged without them)."""
        if self.class_weights is None:
            return proba
        proba = proba * np.asarray(self.class_weights, np.float32)
        return proba / np.maximum(proba.sum(axis=1, keepdims=True), 1e-12)

    @property
    def runs_without_keras(self) -> bool:
        """Whether :meth:`predict_proba` imports no Keras: no patch net, or one shipped as an
        OpenVINO file (what napari's process needs)."""
        from ..inference.openvino_engine import available

        return self.patch_net is None or (self.patch_ir is not None and available())

    def predict_proba(
        self, image: np.ndarray, labels: np.ndarray,
        features: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities of every nucleus: ``(ids (N,), probabilities (N, C))``.

        ``features`` is ``nucleus_features(image, labels)`` when the caller has it already.
        """
        original = None
        if features is None:
            from ..io.labels import compact_ids

            # a slide block's sparse ids: renumbered once for the features and the patches
            labels, original = compact_ids(labels)
        ids, feats = nucleus_features(image, labels) if features is None else features
        proba = self._forest_proba(feats)
        if self.patch_net is not None and ids.size:
            from .patch_net import nucleus_patches

            if self._runner is None:
                self._runner = self._patch_runner()
            cnn = self._runner(nucleus_patches(image, labels, ids))
            proba = (1 - self.patch_weight) * proba + self.patch_weight * cnn
        proba = self._weighted(proba)
        return (ids if original is None else original[ids]), proba

    def _patch_runner(self) -> Any:
        """The patch net's runner: its OpenVINO file when there is one, else Keras (read on
        first use)."""
        from .patch_net import PatchRunner

        if self.runs_without_keras:
            return PatchRunner(ir=self.patch_ir, n_classes=len(self.classes))
        if isinstance(self.patch_net, Path):  # loaded on first use (imports Keras)
            self.patch_net = _read_patch_net(self.patch_net, len(self.classes))
        return PatchRunner(self.patch_net, self.card.get("patch_net", {}).get("sha256"))

    def predict(self, image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class of every nucleus: ``(ids (N,), class indices (N,))``."""
        ids, proba = self.predict_proba(image, labels)
        return ids, proba.argmax(axis=1)

    def class_names(self, indices: np.ndarray) -> list[str]:
        """Names of class indices."""
        return [self.classes[int(i)] for i in indices]

    # ------------------------------------------------------------ files
    def save(self, directory: str | Path, name: str) -> Path:
        """Write ``directory/name.npz`` and its card atomically; returns the ``.npz`` path.

        Refuses the shipped folder.
        """
        from ..io.atomic import atomic_write_bytes
        from ..models.weights import WeightsError, check_model_name, check_not_shipped, sha256

        check_model_name(name)
        directory = Path(directory)
        try:
            check_not_shipped(directory, "classifier")
        except WeightsError as exc:
            raise ClassifierError(str(exc)) from None
        buf = _io.BytesIO()
        np.savez_compressed(buf, **self.forest.arrays())
        card = {k: v for k, v in self.card.items() if k != "patch_net"}
        if self.patch_net is not None:
            from ..io.atomic import atomic_write
            from .patch_net import PATCH

            net = self.patch_net
            net_path = atomic_write(directory / f"{name}.keras",
                                    (lambda p: shutil.copyfile(net, p)) if isinstance(net, Path)
                                    else (lambda p: net.save(p)))
            card["patch_net"] = {"file": net_path.name, "sha256": sha256(net_path),
                                 "weight": self.patch_weight, "patch": PATCH}
            ir = self._save_patch_ir(directory / f"{name}_patch_net.xml")
            if ir is not None:
                card["patch_net"]["openvino"] = {
                    "file": ir.name, "sha256": sha256(ir),
                    "weights_sha256": sha256(ir.with_suffix(".bin"))}
        path = atomic_write_bytes(directory / f"{name}.npz", buf.getvalue())
        if self.class_weights is not None:
            card["class_weights"] = [float(w) for w in self.class_weights]
        card = {**card, "name": name, "kind": "nucleus_classifier",
                "card_version": CLASSIFIER_VERSION, "classes": self.classes,
                "colors": self.colors, "features": list(FEATURE_NAMES),
                "sha256": sha256(path)}
        atomic_write_bytes(path.with_suffix(".json"), (json.dumps(card, indent=2) + "\n").encode())
        return path

    def _save_patch_ir(self, xml: Path) -> Path | None:
        """Write the patch net's OpenVINO file to ``xml`` (+ ``.bin``): copied when the
        classifier has one, converted from a Keras net on TensorFlow where OpenVINO is
        installed; None otherwise (the net then runs with Keras)."""
        from ..inference.openvino_engine import available, export_ir
        from ..io.atomic import atomic_write

        if self.patch_ir is not None:
            src = self.patch_ir
            # the weights first: a reader that finds the .xml finds its .bin
            atomic_write(xml.with_suffix(".bin"),
                         lambda p: shutil.copyfile(src.with_suffix(".bin"), p))
            return atomic_write(xml, lambda p: shutil.copyfile(src, p))
        if isinstance(self.patch_net, Path) or not available():
            return None
        import keras

        if keras.backend.backend() != "tensorflow":
            return None
        return export_ir(self.patch_net, xml)

    @classmethod
    def load(cls, name_or_path: str | Path) -> NucleusClassifier:
        """Load a classifier by name (shipped, then user) or ``.npz`` path.

        Raises
        ------
        ClassifierError
            Missing files, a card without or with a different SHA-256, wrong features.
        """
        from ..models.weights import sha256

        path = resolve_classifier_path(name_or_path)
        card_path = path.with_suffix(".json")
        try:
            card = json.loads(card_path.read_text())
        except (OSError, ValueError) as exc:
            raise ClassifierError(f"classifier card {card_path.name} unreadable: {exc}") from None
        expected = card.get("sha256")
        if not expected:
            raise ClassifierError(f"{card_path.name} has no sha256: refusing an unverified file")
        if sha256(path) != expected:
            raise ClassifierError(f"{path.name} is corrupted or was changed (SHA-256 differs "
                                  "from its card)")
        if list(card.get("features", [])) != list(FEATURE_NAMES):
            raise ClassifierError(f"{path.name} was trained on other features; retrain it")
        try:
            with np.load(path, allow_pickle=False) as z:
                forest = Forest(*(z[k] for k in ("feature", "threshold", "left", "right",
                                                 "value", "roots")))
        except (OSError, ValueError, KeyError) as exc:
            raise ClassifierError(f"cannot read {path.name}: {exc}") from None
        classes, colors = list(card["classes"]), list(card["colors"])
        if forest.value.shape[1] != len(classes) or len(colors) != len(classes):
            raise ClassifierError(f"{path.name}: classes and trees do not match")
        net, weight, ir = _load_patch_net(path, card.get("patch_net"), len(classes))
        weights = card.get("class_weights")
        if weights is not None:
            try:
                weights = [float(w) for w in weights]
            except (TypeError, ValueError):
                weights = []
            if len(weights) != len(classes) or not all(0 < w < 1e6 for w in weights):
                raise ClassifierError(f"{card_path.name}: class_weights must be one positive "
                                      "number per class")
        return cls(classes, colors, forest, card, net, weight, ir, weights)


def _beside(npz_path: Path, file: Any, what: str) -> Path:
    """The file a card names, which must lie beside the card."""
    name = Path(str(file or ""))
    path = npz_path.parent / name.name
    if not name.name or name.name != str(name) or not path.is_file():
        raise ClassifierError(f"{npz_path.name}: its {what} {name} is missing")
    return path


def _load_patch_net(npz_path: Path, entry: dict | None, n_classes: int
                    ) -> tuple[Any, float, Path | None]:
    """The patch net a card names (checked against its checksums): ``(path of the Keras
    file, weight, path of the OpenVINO file or None)``, or ``(None, 0.0, None)``."""
    if not entry:
        return None, 0.0, None
    from ..models.weights import sha256
    from .patch_net import PATCH

    net_path = _beside(npz_path, entry.get("file"), "patch net")
    if not entry.get("sha256") or sha256(net_path) != entry["sha256"]:
        raise ClassifierError(f"{net_path.name} is corrupted or was changed (SHA-256 differs "
                              "from its card)")
    if entry.get("patch") != PATCH:
        raise ClassifierError(f"{net_path.name} expects {entry.get('patch')}-px patches; "
                              f"this version cuts {PATCH}")
    weight = float(entry.get("weight", 0.5))
    if not 0 <= weight <= 1:
        raise ClassifierError(f"{npz_path.name}: patch net weight {weight} outside [0, 1]")
    ir = None
    if entry.get("openvino"):
        ov_entry = entry["openvino"]
        ir = _beside(npz_path, ov_entry.get("file"), "patch net's OpenVINO file")
        if ir.suffix != ".xml":
            raise ClassifierError(f"{ir.name}: an OpenVINO model file ends in .xml")
        weights = _beside(npz_path, ir.with_suffix(".bin").name, "patch net's OpenVINO weights")
        if sha256(ir) != ov_entry.get("sha256") or \
                sha256(weights) != ov_entry.get("weights_sha256"):
            raise ClassifierError(f"{ir.name} is corrupted or was changed (SHA-256 differs "
                                  "from its card)")
    # verified paths: Keras reads the net on first use, so loading a classifier (e.g. in the
    # napari process, where TensorFlow must not be imported) imports no Keras
    return net_path, weight, ir


def _read_patch_net(path: Path, n_classes: int) -> Any:
    """Read a verified patch net file with Keras."""
    import keras

    try:
        net = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises several types for a damaged file
        raise ClassifierError(f"cannot read {path.name}: {exc}") from None
    if int(net.outputs[0].shape[-1]) != n_classes:
        raise ClassifierError(f"{path.name}: classes and patch net do not match")
    return net


def shipped_classifier_dir() -> Path:
    from ..models.weights import shipped_dir

    return shipped_dir() / "classifiers"


def user_classifier_dir() -> Path:
    from ..models.weights import user_dir

    return user_dir() / "classifiers"


def available_classifiers() -> list[dict[str, Any]]:
    """``{"name", "path", "source"}`` of every shipped and user classifier."""
    out = []
    for source, folder in (("shipped", shipped_classifier_dir()),
                           ("user", user_classifier_dir())):
        if folder.is_dir():
            for p in sorted(folder.glob("*.npz")):
                if p.with_suffix(".json").is_file():
                    out.append({"name": p.stem, "path": p, "source": source})
    return out


def resolve_classifier_path(name_or_path: str | Path) -> Path:
    """A classifier name or ``.npz`` path to an existing ``.npz`` path."""
    p = Path(name_or_path)
    if p.suffix == ".npz":
        if not p.is_file():
            raise ClassifierError(f"classifier file not found: {p}")
        return p
    for entry in available_classifiers():
        if entry["name"] == str(name_or_path):
            return entry["path"]
    names = ", ".join(e["name"] for e in available_classifiers()) or "none installed"
    raise ClassifierError(f"no classifier named {name_or_path!r} (available: {names})")
