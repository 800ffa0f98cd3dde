"""The model card, typed: every setting a model carries, with its default, bounds and help.

A card is the JSON file beside each ``.keras`` file. :class:`ModelCard` reads it (migrating
older versions in one place, :func:`migrate`), and its two settings groups,
:class:`InferenceSettings` and :class:`PostprocessParams`, are the single source of the
defaults used by the Segmenter, whole slides, training, fine-tuning, the CLI flags
(:func:`add_setting_flags`) and the napari fields (:func:`setting_widget_options`).
Everything else on a card (training record, validation and test scores, fine-tune history)
is kept verbatim in :attr:`ModelCard.record`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: Written by this version of nucleoseg; older cards are upgraded on read by :func:`migrate`.
CARD_VERSION = 2


class CardError(ValueError):
    """A model card with a missing, mistyped or out-of-range setting."""


def setting(default: Any, help: str, *, low: float | None = None, high: float | None = None,
            step: float | None = None, flag: bool = True, label: str | None = None,
            cli: str | None = None) -> Any:
    """A dataclass field carrying its help text, bounds and whether users may set it.

    ``flag=False`` marks a property of the network (stride, precision opt-out) rather than a
    user choice: it gets no CLI flag and no widget field. ``cli`` names the flag when it is
    not ``--<field-name>``; ``label`` the widget field when not the field's name.
    """
    return field(default=default, metadata={"help": help, "low": low, "high": high,
                                            "step": step, "flag": flag, "label": label,
                                            "cli": cli})


def _check(cls: type, name: str, value: Any) -> Any:
    """``value`` converted to the field's type and checked against its bounds."""
    f = cls.__dataclass_fields__[name]
    kind = type(f.default)
    if value is None and f.default is None:
        return None
    try:
        if kind is bool:
            if not isinstance(value, bool | int):
                raise TypeError
            value = bool(value)
        elif kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise TypeError
            value = int(value)
        elif kind is float:
            value = float(value)
        elif kind is str:
            value = str(value)
    except (TypeError, ValueError):
        raise CardError(f"{name} must be {kind.__name__}, got {value!r}") from None
    low, high = f.metadata.get("low"), f.metadata.get("high")
    if (low is not None and value < low) or (high is not None and value > high):
        raise CardError(f"{name} = {value} is outside [{low}, {high}]")
    return value


class _Settings:
    """Shared behaviour of the settings groups: checked construction, dict round trip."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _check(type(self), f.name, getattr(self, f.name)))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None):
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise CardError(f"unknown {cls.__name__} key(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any):
        """A copy with ``changes`` (``None`` values ignored), checked."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class InferenceSettings(_Settings):
    """How a model is run on an image: tiling, batch, precision opt-outs.

    Defaults are the measured best on a CPU (benchmarks/results/fit_grid_val_cpu.txt): tiles of
    2176 px (cores of 2048 with a 64 px halo) in batches of 1 recompute the least halo, and an
    image up to 2176 px runs as one tile.
    """

    tile: int = setting(2176, "tile side in pixels, halo included",
                        low=64, high=16384, step=64)
    halo: int = setting(64, "context pixels added on each tile side", low=0, high=1024,
                        step=16, label="halo (px)")
    batch_size: int = setting(1, "tiles per forward pass", low=1, high=256)
    stride: int = setting(16, "input sides must be multiples of it (the network's total "
                          "downsampling)", low=1, high=1024, flag=False)
    cpu_bfloat16: bool = setting(True, "allow bfloat16 on CPUs that compute it natively "
                                 "(false when it costs accuracy)", flag=False)
    microns_per_pixel: float = setting(0.25, "resolution the model was trained at (µm/px)",
                                       low=0.01, high=50.0, flag=False)
    note: str = setting("", "why these values", flag=False)


@dataclass
class PostprocessParams(_Settings):
    """Parameters of :func:`nucleoseg.inference.postprocess.probabilities_to_labels`."""

    threshold: float = setting(0.5, "nucleus probability threshold", low=0.0, high=1.0,
                               step=0.05)
    interior_threshold: float = setting(0.5, "interior probability threshold: markers are the "
                                        "interior above it (with marker_dynamic, the region "
                                        "its maxima are looked for in)",
                                        low=0.0, high=1.0, step=0.05)
    min_size: int = setting(16, "smallest nucleus kept (pixels)", low=0, high=100_000,
                            label="min size (px)")
    min_marker_size: int = setting(4, "smallest marker kept (pixels)", low=0, high=10_000,
                                   flag=False)
    marker_dynamic: float = setting(0.0, "split touching nuclei at dips of the interior: a "
                                    "maximum of the interior logit seeds its own nucleus when "
                                    "it rises this much above the pass to a higher one (0: "
                                    "markers are the interior above its threshold)",
                                    low=0.0, high=20.0, step=0.25)
    marker_sigma: float = setting(1.0, "smoothing of the interior logit before its maxima are "
                                  "found (px)", low=0.0, high=10.0, flag=False)


#: Card keys with a typed home; every other key goes to :attr:`ModelCard.record`.
_TYPED = ("architecture", "name", "description", "config", "inference", "postprocess",
          "sha256", "card_version")


@dataclass
class ModelCard:
    """A model card: what the network is, how to run it, and its record.

    Attributes
    ----------
    architecture : str
        A family of :data:`nucleoseg.models.registry.MODELS`.
    name, description : str
        Saved name (the file stem) and one line for menus.
    config : dict
        Builder options beyond the family's defaults.
    inference : InferenceSettings
    postprocess : PostprocessParams
    sha256 : str
        Checksum of the ``.keras`` file (set by :func:`nucleoseg.models.weights.save_model`).
    record : dict
        Everything else, verbatim: ``training``, ``validation``, ``test``,
        ``test_by_dataset``, ``fine_tune``, ``parameters``, ``license``, ...
    """

    architecture: str = ""
    name: str = ""
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    postprocess: PostprocessParams = field(default_factory=PostprocessParams)
    sha256: str = ""
    card_version: int = CARD_VERSION
    record: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Read a card of any version (see :func:`migrate`); raises :class:`CardError`."""
        if not isinstance(data, dict):
            raise CardError("a model card is a JSON object")
        data = migrate(data)
        return cls(
            architecture=str(data.get("architecture", "")), name=str(data.get("name", "")),
            description=str(data.get("description", "")), config=dict(data.get("config", {})),
            inference=InferenceSettings.from_dict(data.get("inference")),
            postprocess=PostprocessParams.from_dict(data.get("postprocess")),
            sha256=str(data.get("sha256", "")), card_version=CARD_VERSION,
            record={k: v for k, v in data.items() if k not in _TYPED},
        )

    @classmethod
    def coerce(cls, card: ModelCard | dict[str, Any] | None) -> ModelCard:
        """A :class:`ModelCard` from a card or a card dict (``None``: all defaults)."""
        if isinstance(card, ModelCard):
            return card
        return cls.from_dict(card or {})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (typed keys first, then the record)."""
        out: dict[str, Any] = {
            "architecture": self.architecture, "description": self.description,
            "config": self.config, "inference": self.inference.to_dict(),
            "postprocess": self.postprocess.to_dict(),
        }
        out.update(self.record)
        out.update({"name": self.name, "card_version": self.card_version})
        if self.sha256:
            out["sha256"] = self.sha256
        return out

    def replace(self, **changes: Any) -> ModelCard:
        return dataclasses.replace(self, **changes)

    @property
    def scores(self) -> dict[str, Any] | None:
        """The card's headline scores: the test table's, else validation's, else None."""
        return self.record.get("test") or self.record.get("validation") or None


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Upgrade a card dict of any earlier version to :data:`CARD_VERSION` (a new dict).

    Version 1 (and unversioned) cards kept ``microns_per_pixel`` at the top level and could
    leave out any inference setting; both are now in :class:`InferenceSettings`.
    """
    data = dict(data)
    version = int(data.get("card_version", 1) or 1)
    if version > CARD_VERSION:
        raise CardError(f"model card version {version} is newer than this nucleoseg "
                        f"understands ({CARD_VERSION}); update nucleoseg")
    if version < 2:
        inference = dict(data.get("inference") or {})
        if "microns_per_pixel" in data:
            inference.setdefault("microns_per_pixel", data.pop("microns_per_pixel"))
        if inference.get("stride") is None:
            inference.pop("stride", None)
        data["inference"] = inference
    data["card_version"] = CARD_VERSION
    return data


@dataclass
class TrainSettings(_Settings):
    """How ``nucleoseg train`` and :func:`nucleoseg.training.recipe.train_recipe` train a model
    (defaults: the recipe of the shipped weights' first training on a GPU, with early
    stopping; the CPU fine-tunes in the cards give their own, shorter settings)."""

    epochs: int = setting(400, "most epochs (early stopping may end sooner)", low=1,
                          high=100_000)
    steps_per_epoch: int = setting(200, "batches per epoch", low=1, high=100_000,
                                   cli="--steps")
    batch_size: int = setting(16, "patches per batch", low=1, high=1024)
    learning_rate: float = setting(1e-3, "Adam learning rate", low=1e-7, high=1.0, cli="--lr")
    seed: int = setting(0, "random seed", low=0, high=2**31 - 1)


@dataclass
class FineTuneSettings(_Settings):
    """How ``nucleoseg finetune`` and the Fine-tune panel retrain a model on corrected
    labels. Defaults chosen by ``benchmarks/finetune.py`` on the CoNSeP validation tiles:
    best mean AJI gain over the five shipped models (docs/performance.md)."""

    epochs: int = setting(5, "passes; the best one on the held-out part is kept", low=1,
                          high=500)
    steps_per_epoch: int = setting(20, "batches per epoch", low=1, high=1000, cli="--steps",
                                   label="steps / epoch")
    batch_size: int = setting(4, "patches per batch", low=1, high=64)
    learning_rate: float = setting(1e-4, "Adam learning rate", low=1e-6, high=1e-2, step=1e-5,
                                   cli="--lr")
    freeze_encoder: bool = setting(False, "train the decoder and head only")


def user_settings(cls: type) -> list[dataclasses.Field]:
    """The fields of a settings group that users may set (CLI flags, widget fields)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("flag", True)]


def add_setting_flags(parser: Any, *groups: type, from_card: bool = True) -> None:
    """Add flags for the user settings of ``groups`` to an ``argparse`` parser, from the
    fields' metadata (name, type, help, bounds).

    With ``from_card`` a flag defaults to ``None`` (= the model card's value); otherwise to
    the field's default. Booleans become switches.
    """
    for cls in groups:
        for f in user_settings(cls):
            kind = type(f.default)
            meta = f.metadata
            flag = meta.get("cli") or f"--{f.name.replace('_', '-')}"
            if kind is bool:
                parser.add_argument(flag, dest=f.name, action="store_true", help=meta["help"])
                continue
            num = "d" if kind is int else "g"
            bounds = (f"; {meta['low']:{num}} to {meta['high']:{num}}"
                      if meta.get("low") is not None and meta.get("high") is not None else "")
            default = "model card" if from_card else f"{f.default:{num}}"
            parser.add_argument(flag, dest=f.name, type=kind,
                                default=None if from_card else f.default,
                                help=f"{meta['help']} (default: {default}{bounds})")


def setting_values(namespace: Any, *groups: type) -> dict[str, Any]:
    """The user settings an ``argparse`` namespace holds (``None`` = not given)."""
    return {f.name: getattr(namespace, f.name, None) for cls in groups
            for f in user_settings(cls)}


def setting_widget_options(cls: type, name: str) -> dict[str, Any]:
    """magicgui options (label, min, max, step, tooltip, value) of one setting."""
    f = cls.__dataclass_fields__[name]
    meta = f.metadata
    options: dict[str, Any] = {"label": meta.get("label") or name.replace("_", " "),
                               "tooltip": meta["help"], "value": f.default}
    for key, opt in (("low", "min"), ("high", "max"), ("step", "step")):
        if meta.get(key) is not None:
            options[opt] = type(f.default)(meta[key])
    return options
