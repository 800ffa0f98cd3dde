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

from .context import context_inputs, nucleus_centres, read_class_weights, read_sigmas
from .features import FEATURE_NAMES, nucleus_features
from .files import (  # noqa: F401 -- the public names, importable from here as before
    ClassifierError,
    available_classifiers,
    gate_entry,
    load_patch_net,
    read_patch_gate,
    read_patch_net,
    resolve_classifier_path,
    shipped_classifier_dir,
    user_classifier_dir,
)
from .forest import Forest, forest_margin

#: The shipped CoNSeP classifier's name.
DEFAULT_CLASSIFIER = "consep_types"
CLASSIFIER_VERSION = 1
#: Distinct colours that stand out on H&E, one per class in order (then they repeat).
PALETTE = ("#ffd400", "#00c8ff", "#ff3030", "#30ff60", "#ff8c00", "#b070ff", "#ffffff",
           "#00ffd0")


def context_width(n_features: int, n_classes: int, n_sigmas: int, with_net: bool) -> int:
    """How many inputs the context forest reads: the features, then the first forest's
    probabilities (and the patch net's, ``with_net``) and their neighbour mean at each
    sigma."""
    return n_features + n_classes * (1 + n_sigmas) * (1 + int(with_net))


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
    context_forest : Forest, optional
        A second forest that classifies each nucleus again from its features, the first
        forest's probabilities and its neighbours' (:mod:`~nucleoseg.classify.context`;
        trained on out-of-fold probabilities, :mod:`~nucleoseg.classify.stacking`).
    context_sigmas : tuple of float
        Its neighbourhood scales in pixels.
    patch_context : bool
        The patch net is a two-scale one (:func:`~nucleoseg.classify.patch_net.nucleus_patches`
        with ``context=True``: 8 channels).
    context_with_patch_net : bool
        The context forest also takes the patch net's probabilities and their neighbour
        means (trained on out-of-fold ones,
        :func:`~nucleoseg.classify.stacking.fit_context_forest`).
        Where the patch net cannot run, the first forest's probabilities are the forest part.
    patch_gate : float, optional
        Run the patch net only on the nuclei whose class-weighted forest probabilities have
        a margin (best minus second best) below this; the others keep the forests' answer.
        Chosen on validation tiles (:func:`~nucleoseg.classify.gate.choose_patch_gate`).
        None = every nucleus. Unused when the context forest takes the net's probabilities.
    """

    classes: list[str]
    colors: list[str]
    forest: Forest
    card: dict[str, Any] = field(default_factory=dict)
    patch_net: Any = None
    patch_weight: float = 0.0
    patch_ir: Path | None = None
    class_weights: list[float] | None = None
    context_forest: Forest | None = None
    context_sigmas: tuple[float, ...] = ()
    patch_context: bool = False
    context_with_patch_net: bool = False
    patch_gate: float | None = None
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
        targets = np.asarray(targets, int)
        if features.shape[0] != targets.shape[0] or features.shape[0] == 0:
            raise ValueError("need one class per nucleus, and at least one nucleus")
        if targets.min() < 0 or targets.max() >= len(classes):
            raise ValueError("class indices must lie in 0..len(classes)-1")
        if np.unique(targets).size < 2:
            raise ValueError("mark nuclei of at least two classes")
        forest = Forest.fit(features, targets, len(classes), trees, max_depth,
                            min_samples_leaf, seed, class_weight)
        colors = list(colors or [PALETTE[i % len(PALETTE)] for i in range(len(classes))])
        info = {"trees": trees, "max_depth": max_depth, "min_samples_leaf": min_samples_leaf,
                "class_weight": class_weight, "seed": seed, "nuclei": int(targets.size),
                "per_class": {c: int((targets == i).sum()) for i, c in enumerate(classes)}}
        return cls(list(classes), colors, forest,
                   {**(card or {}), "training": {**(card or {}).get("training", {}), **info}})

    def predict_features(self, features: np.ndarray, centres: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
        """``(N, F)`` features to ``(class indices (N,), probabilities (N, C))`` by the
        forests alone (with :attr:`class_weights` applied); the context forest runs when the
        nuclei's ``(N, 2)`` ``centres`` are given (and it needs no patch net)."""
        proba = self._weighted(self._forest_proba(features, centres))
        return proba.argmax(axis=1), proba

    def _forest_proba(self, features: np.ndarray, centres: np.ndarray | None = None,
                      cnn: np.ndarray | None = None) -> np.ndarray:
        """The first forest's probabilities, then the context forest's when it, the
        ``centres`` and (if it takes them) the patch net's probabilities ``cnn`` are there."""
        if features.shape[1] != len(FEATURE_NAMES):
            raise ClassifierError(f"expected {len(FEATURE_NAMES)} features, got "
                                  f"{features.shape[1]}")
        proba = self.forest.predict_proba(features.astype(np.float32))
        if self.context_forest is None or centres is None:
            return proba
        if self.context_with_patch_net:
            if cnn is None:
                return proba
            proba = np.hstack([proba, cnn])
        return self.context_forest.predict_proba(
            context_inputs(features, proba, centres, self.context_sigmas))

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
        if features is None:
            ids, feats, centres = nucleus_features(image, labels, with_centres=True)
        else:
            ids, feats = features
            centres = nucleus_centres(labels, ids) if self.context_forest is not None else None
        cnn = None
        if self.patch_net is not None and ids.size and self.context_with_patch_net:
            cnn = self._patch_proba(image, labels, ids, centres)
        proba = self._forest_proba(feats, centres, cnn)
        if cnn is not None:
            proba = (1 - self.patch_weight) * proba + self.patch_weight * cnn
        elif self.patch_net is not None and ids.size:
            runs = self.patch_runs(proba)
            if runs.any():
                cnn = self._patch_proba(image, labels, ids[runs],
                                        None if centres is None else centres[runs])
                mixed = (1 - self.patch_weight) * proba[runs] + self.patch_weight * cnn
                proba = proba.astype(mixed.dtype)  # the trees' float16 would round the mix
                proba[runs] = mixed
        proba = self._weighted(proba)
        return (ids if original is None else original[ids]), proba

    def patch_runs(self, forest_proba: np.ndarray) -> np.ndarray:
        """``(N,) bool``: the nuclei the patch net runs on, given the forests' ``(N, C)``
        probabilities (all of them without :attr:`patch_gate`)."""
        if self.patch_gate is None or forest_proba.shape[1] < 2:
            return np.ones(forest_proba.shape[0], bool)
        return forest_margin(self._weighted(forest_proba)) < self.patch_gate

    def _patch_proba(self, image: np.ndarray, labels: np.ndarray, ids: np.ndarray,
                     centres: np.ndarray | None) -> np.ndarray:
        """The patch net's ``(N, C)`` probabilities for the nuclei ``ids``."""
        from .patch_net import nucleus_patches

        if self._runner is None:
            self._runner = self._patch_runner()
        return self._runner(nucleus_patches(image, labels, ids, centres,
                                            context=self.patch_context))

    def _patch_runner(self) -> Any:
        """The patch net's runner: its OpenVINO file when there is one, else Keras (read on
        first use)."""
        from .patch_net import PatchRunner

        if self.runs_without_keras:
            return PatchRunner(ir=self.patch_ir, n_classes=len(self.classes))
        if isinstance(self.patch_net, Path):  # loaded on first use (imports Keras)
            self.patch_net = read_patch_net(self.patch_net, len(self.classes))
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
        arrays = self.forest.arrays()
        card = {k: v for k, v in self.card.items()
                if k not in ("patch_net", "class_weights", "context_forest")}
        if self.context_forest is not None:
            arrays.update({f"context_{k}": v for k, v in self.context_forest.arrays().items()})
            card["context_forest"] = {
                **self.card.get("context_forest", {}),
                "sigmas_px": [float(s) for s in self.context_sigmas],
                "inputs": "features, the first forest's probabilities" +
                          (" and the patch net's" if self.context_with_patch_net else "") +
                          ", the Gaussian-weighted mean of the other nuclei's at each sigma",
                "patch_net_inputs": self.context_with_patch_net,
                "input_count": context_width(len(FEATURE_NAMES), len(self.classes),
                                             len(self.context_sigmas),
                                             self.context_with_patch_net)}
        if self.class_weights is not None:
            card["class_weights"] = [float(w) for w in self.class_weights]
        np.savez_compressed(buf, **arrays)
        if self.patch_net is not None:
            from ..io.atomic import atomic_write
            from .patch_net import CONTEXT, PATCH

            net = self.patch_net
            net_path = atomic_write(directory / f"{name}.keras",
                                    (lambda p: shutil.copyfile(net, p)) if isinstance(net, Path)
                                    else (lambda p: net.save(p)))
            card["patch_net"] = {"file": net_path.name, "sha256": sha256(net_path),
                                 "weight": self.patch_weight, "patch": PATCH}
            if self.patch_gate is not None:
                card["patch_net"]["gate"] = gate_entry(self.patch_gate, self.card)
            if self.patch_context:
                card["patch_net"]["context"] = CONTEXT
            ir = self._save_patch_ir(directory / f"{name}_patch_net.xml")
            if ir is not None:
                card["patch_net"]["openvino"] = {
                    "file": ir.name, "sha256": sha256(ir),
                    "weights_sha256": sha256(ir.with_suffix(".bin"))}
        path = atomic_write_bytes(directory / f"{name}.npz", buf.getvalue())
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
        keys = ("feature", "threshold", "left", "right", "value", "roots")
        classes, colors = list(card["classes"]), list(card["colors"])
        n_in = len(FEATURE_NAMES)
        try:
            weights = read_class_weights(card, len(classes))
            sigmas = read_sigmas(card) if card.get("context_forest") is not None else ()
            with_net = bool(sigmas) and card["context_forest"].get("patch_net_inputs") is True
            if with_net and not card.get("patch_net"):
                raise ValueError("its context forest takes a patch net's probabilities, and "
                                 "it has no patch net")
            with np.load(path, allow_pickle=False) as z:
                if not set(keys) <= set(z.files) or \
                        (sigmas and not {f"context_{k}" for k in keys} <= set(z.files)):
                    raise ValueError("the file lacks forest arrays its card names")
                forest = Forest(*(z[k] for k in keys))
                context = Forest(*(z[f"context_{k}"] for k in keys)) if sigmas else None
            if len(colors) != len(classes):
                raise ValueError("one colour per class")
            forest.check(n_in, len(classes))
            if context is not None:
                width = context_width(n_in, len(classes), len(sigmas), with_net)
                fitted = card["context_forest"].get("input_count", width)
                if fitted != width:
                    raise ValueError(f"its context forest was fitted on {fitted} inputs; "
                                     f"the card's settings give {width}")
                context.check(width, len(classes))
        except (OSError, ValueError, KeyError) as exc:
            raise ClassifierError(f"cannot use {path.name}: {exc}") from None
        net, weight, ir, two_scale = load_patch_net(path, card.get("patch_net"), len(classes))
        gate = read_patch_gate(card, path.name) if net is not None else None
        return cls(classes, colors, forest, card, net, weight, ir, weights, context, sigmas,
                   two_scale, with_net, gate)
