"""Where classifiers live and the files beside them: folders, names, the patch net's files
(checked against the card before anything reads them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ClassifierError(RuntimeError):
    """A classifier that cannot be used (missing, corrupted, mismatched)."""


def beside(npz_path: Path, file: Any, what: str) -> Path:
    """The file a card names, which must lie beside the card."""
    name = Path(str(file or ""))
    path = npz_path.parent / name.name
    if not name.name or name.name != str(name) or not path.is_file():
        raise ClassifierError(f"{npz_path.name}: its {what} {name} is missing")
    return path


def load_patch_net(npz_path: Path, entry: dict | None, n_classes: int
                    ) -> tuple[Any, float, Path | None, bool]:
    """The patch net a card names (checked against its checksums): ``(path of the Keras
    file, weight, path of the OpenVINO file or None, whether it is a two-scale net)``, or
    ``(None, 0.0, None, False)``."""
    if not entry:
        return None, 0.0, None, False
    from ..models.weights import sha256
    from .patch_net import CONTEXT, PATCH

    net_path = beside(npz_path, entry.get("file"), "patch net")
    if not entry.get("sha256") or sha256(net_path) != entry["sha256"]:
        raise ClassifierError(f"{net_path.name} is corrupted or was changed (SHA-256 differs "
                              "from its card)")
    if entry.get("patch") != PATCH:
        raise ClassifierError(f"{net_path.name} expects {entry.get('patch')}-px patches; "
                              f"this version cuts {PATCH}")
    if entry.get("context") not in (None, CONTEXT):
        raise ClassifierError(f"{net_path.name} expects a {entry.get('context')}-px context "
                              f"window; this version cuts {CONTEXT}")
    weight = float(entry.get("weight", 0.5))
    if not 0 <= weight <= 1:
        raise ClassifierError(f"{npz_path.name}: patch net weight {weight} outside [0, 1]")
    ir = None
    if entry.get("openvino"):
        ov_entry = entry["openvino"]
        ir = beside(npz_path, ov_entry.get("file"), "patch net's OpenVINO file")
        if ir.suffix != ".xml":
            raise ClassifierError(f"{ir.name}: an OpenVINO model file ends in .xml")
        weights = beside(npz_path, ir.with_suffix(".bin").name, "patch net's OpenVINO weights")
        if sha256(ir) != ov_entry.get("sha256") or \
                sha256(weights) != ov_entry.get("weights_sha256"):
            raise ClassifierError(f"{ir.name} is corrupted or was changed (SHA-256 differs "
                                  "from its card)")
    # verified paths: Keras reads the net on first use, so loading a classifier (e.g. in the
    # napari process, where TensorFlow must not be imported) imports no Keras
    return net_path, weight, ir, entry.get("context") is not None


def read_patch_gate(card: dict, name: str) -> float | None:
    """The patch-net gate a classifier card names (``patch_net.gate.margin``), or None."""
    gate = ((card.get("patch_net") or {}).get("gate") or {}).get("margin")
    if gate is None:
        return None
    if isinstance(gate, bool) or not isinstance(gate, (int, float)) or not 0 <= gate <= 1:
        raise ClassifierError(f"{name}: patch-net gate {gate!r} is not a margin in [0, 1]")
    return float(gate)


def gate_entry(gate: float, card: dict) -> dict:
    """The card's ``patch_net.gate`` for ``gate``, keeping what ``card`` said of it."""
    return {**(card.get("patch_net") or {}).get("gate", {}), "margin": float(gate),
            "rule": "the patch net runs on the nuclei whose class-weighted forest "
                    "probabilities have a margin (best minus second) below this"}


def read_patch_net(path: Path, n_classes: int) -> Any:
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
