"""Weights format: ``<name>.keras`` + ``<name>.json`` model card, checksum checked at load.

Shipped models live in the package's ``weights/`` folder and are never written to;
fine-tuned models go to the user model directory (:func:`user_dir`). Saves are atomic.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .card import CARD_VERSION, CardError, ModelCard


class WeightsError(RuntimeError):
    """A model file that cannot be used (missing, corrupted, checksum mismatch)."""


def shipped_dir() -> Path:
    """Folder of the shipped weights (inside the installed package, or the checkout's)."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "weights"
    if packaged.is_dir():
        return packaged
    return here.parents[1] / "weights"


def user_dir() -> Path:
    """Folder of the user's own (fine-tuned) models: ``$NUCLEOSEG_USER_MODELS`` or the
    platform's user data directory ``.../nucleoseg/models``."""
    env = os.environ.get("NUCLEOSEG_USER_MODELS")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("nucleoseg", appauthor=False)) / "models"


def check_not_shipped(directory: str | Path, what: str = "model") -> None:
    """The one never-into-weights rule: refuse to write into the shipped folder (or a folder
    inside it), unless ``NUCLEOSEG_WRITE_SHIPPED`` is set by the maintainers' release steps.

    Raises
    ------
    WeightsError
        When ``directory`` is (inside) the shipped weights folder.
    """
    target, shipped = Path(directory).resolve(), shipped_dir().resolve()
    if os.environ.get("NUCLEOSEG_WRITE_SHIPPED"):
        return
    if target == shipped or shipped in target.parents:
        raise WeightsError(f"refusing to write a {what} into the shipped weights folder; "
                           "save to the user folder")


def sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def available_models() -> list[dict[str, Any]]:
    """Every loadable model: ``{"name", "path", "source" ("shipped"|"user"), "card"}``
    (``card`` a :class:`~nucleoseg.models.card.ModelCard`; unreadable cards are left out).

    Shipped models come first, in the registry's order; user models follow by name.
    """
    from .registry import MODELS

    order = {n: i for i, n in enumerate(MODELS)}
    found = []
    for source, folder in (("shipped", shipped_dir()), ("user", user_dir())):
        if not folder.is_dir():
            continue
        entries = []
        for card_path in folder.glob("*.json"):
            model_path = card_path.with_suffix(".keras")
            if not model_path.is_file():
                continue
            try:
                card = ModelCard.from_dict(json.loads(card_path.read_text()))
            except (OSError, ValueError):  # CardError is a ValueError
                continue
            entries.append({"name": card_path.stem, "path": model_path, "source": source,
                            "card": card})
        entries.sort(key=lambda e: (order.get(e["name"], len(order)), e["name"]))
        found.extend(entries)
    return found


def shipped_models() -> list[str]:
    """Names of the shipped models, in the registry's order."""
    return [m["name"] for m in available_models() if m["source"] == "shipped"]


def resolve_model_path(name_or_path: str | Path) -> Path:
    """A model name (shipped or user) or a ``.keras`` path to an existing ``.keras`` path."""
    p = Path(name_or_path)
    if p.suffix == ".keras":
        if not p.is_file():
            raise WeightsError(f"model file not found: {p}")
        return p
    for entry in available_models():
        if entry["name"] == str(name_or_path):
            return entry["path"]
    names = ", ".join(e["name"] for e in available_models()) or "none installed"
    raise WeightsError(f"no trained model named {name_or_path!r} (available: {names})")


def read_card(model_path: str | Path) -> ModelCard:
    """The model card beside a ``.keras`` file (any card version, migrated)."""
    card_path = Path(model_path).with_suffix(".json")
    if not card_path.is_file():
        raise WeightsError(f"model card missing: {card_path}")
    try:
        data = json.loads(card_path.read_text())
    except ValueError as exc:
        raise WeightsError(f"model card {card_path.name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WeightsError(f"model card {card_path.name} is not a JSON object")
    try:
        return ModelCard.from_dict(data)
    except CardError as exc:
        raise WeightsError(f"model card {card_path.name}: {exc}") from None


def load_model(name_or_path: str | Path, verify: bool = True):
    """Load a model and its card.

    Parameters
    ----------
    name_or_path : str or pathlib.Path
        A shipped/user model name or a path to a ``.keras`` file with its ``.json`` beside it.
    verify : bool
        Check the file's SHA-256 against the card (a mismatch raises).

    Returns
    -------
    (keras.Model, ModelCard)
        The model (loaded with ``safe_mode=True``, not compiled) and its card.

    Raises
    ------
    WeightsError
        Missing file or card, checksum mismatch, or a file Keras cannot read.
    """
    path, card = verified_card(name_or_path, verify)
    import keras

    from .registry import register_custom_layers

    register_custom_layers()
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        raise WeightsError(f"cannot load {path.name}: {type(exc).__name__}: {exc}") from exc
    return model, card


def verified_card(name_or_path: str | Path, verify: bool = True) -> tuple[Path, ModelCard]:
    """The ``.keras`` path of a model and its card, the file's SHA-256 checked against the
    card (without importing Keras: what OpenVINO inference from a cached conversion needs).

    Raises
    ------
    WeightsError
        Missing file or card, or a checksum that is absent or does not match.
    """
    path = resolve_model_path(name_or_path)
    card = read_card(path)
    if verify:
        expected = card.sha256
        if not expected:
            raise WeightsError(
                f"{path.with_suffix('.json').name} has no sha256: refusing to load an "
                "unverified network (models written by nucleoseg always carry one)")
        actual = sha256(path)
        if expected != actual:
            raise WeightsError(
                f"{path.name} is corrupted or was changed: its SHA-256 {actual[:12]}... does "
                f"not match the model card's {expected[:12]}... (reinstall the package or "
                "re-save the model)"
            )
    return path, card


#: Longest user model name (file systems allow 255 bytes for ``<name>.keras``).
MAX_NAME_LENGTH = 100


def check_model_name(name: str) -> str:
    """Check a user-supplied model name before any work is done with it.

    A name is a plain file stem: no path separators or characters Windows refuses, no leading
    dot, no ``..``, at most :data:`MAX_NAME_LENGTH` characters.

    Raises
    ------
    WeightsError
        With the reason, for an unusable name.
    """
    bad = '/\\:*?"<>|'
    if not isinstance(name, str) or not name.strip():
        raise WeightsError("a model name cannot be empty")
    if any(c in name for c in bad) or any(ord(c) < 32 for c in name):
        raise WeightsError(f"invalid model name {name!r}: it may not contain / \\ : * ? \" < > | "
                           "or control characters")
    if name.startswith(".") or ".." in name:
        raise WeightsError(f"invalid model name {name!r}: it may not start with a dot or hold '..'")
    if len(name) > MAX_NAME_LENGTH:
        raise WeightsError(f"model name too long ({len(name)} characters; at most "
                           f"{MAX_NAME_LENGTH})")
    return name


def save_model(model, directory: str | Path, name: str, card: ModelCard | dict[str, Any]
               ) -> Path:
    """Save ``model`` as ``directory/name.keras`` with its card, both atomically.

    The card (a :class:`ModelCard` or a card dict, checked) gets ``name``, the current
    ``card_version`` and the file's ``sha256``. Refuses to write into the shipped weights
    folder.

    Returns
    -------
    pathlib.Path
        The ``.keras`` path.
    """
    from ..io.atomic import atomic_write

    directory = Path(directory)
    check_not_shipped(directory)
    check_model_name(name)
    try:
        card = ModelCard.coerce(card)
    except CardError as exc:
        raise WeightsError(f"model card: {exc}") from None
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / f"{name}.keras"
    bare = _without_optimizer(model)
    atomic_write(model_path, lambda p: bare.save(p))
    write_card(model_path, card.replace(name=name, card_version=CARD_VERSION,
                                        sha256=sha256(model_path)))
    return model_path


def write_card(model_path: str | Path, card: ModelCard) -> Path:
    """Write ``card`` beside ``model_path`` (``.json``), atomically; refuses the shipped
    folder like every other write."""
    from ..io.atomic import atomic_write_bytes

    path = Path(model_path).with_suffix(".json")
    check_not_shipped(path.parent, "model card")
    return atomic_write_bytes(path, (json.dumps(card.to_dict(), indent=2) + "\n").encode())


def _without_optimizer(model):
    """A copy of a compiled model without optimizer state (a third of the file size).

    Keras' ``.keras`` format stores a compiled model's optimizer variables; shipped and
    user models only need the weights.
    """
    if getattr(model, "optimizer", None) is None:
        return model
    import keras

    from .registry import register_custom_layers

    register_custom_layers()
    bare = keras.Model.from_config(model.get_config())
    bare.set_weights(model.get_weights())
    return bare
