"""The one registry of model families: adding a model is one entry in :data:`MODELS`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    """A registered model family.

    Attributes
    ----------
    builder : str
        ``"module:function"`` inside :mod:`nucleoseg.models`, imported on first use.
    defaults : dict
        Default keyword arguments of the builder.
    description : str
        One line for menus and ``--help``.
    """

    builder: str
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)

    def load_builder(self) -> Callable[..., Any]:
        import importlib

        module, func = self.builder.split(":")
        return getattr(importlib.import_module(f"nucleoseg.models.{module}"), func)


MODELS: dict[str, ModelSpec] = {
    "unet": ModelSpec("unet:build_unet", "UNet, 4 levels", {"depth": 4, "base_filters": 32}),
    "unet_lite": ModelSpec(
        "unet:build_unet", "UNet, 4 levels, 8 base filters: fast (14x fewer FLOPs), less accurate",
        {"depth": 4, "base_filters": 8},
    ),
    "se_unet": ModelSpec(
        "unet:build_unet",
        "UNet with squeeze-excitation, one conv per block",
        {"depth": 4, "base_filters": 32, "convs_per_block": 1, "squeeze_excitation": True},
    ),
    "segnet": ModelSpec(
        "segnet:build_segnet", "SegNet with max-pooling-indices unpooling", {"depth": 4}
    ),
    "deeplabv3": ModelSpec(
        "deeplab:build_deeplabv3",
        "DeepLabV3+ on MobileNetV2",
        {"backbone": "mobilenetv2", "decoder": True},
    ),
    "deeplabv3_xception": ModelSpec(
        "deeplab:build_deeplabv3",
        "DeepLabV3+ on Xception",
        {"backbone": "xception", "decoder": True, "aspp_filters": 256},
    ),
}


def model_names() -> list[str]:
    """Names accepted by :func:`build`."""
    return list(MODELS)


def resolve(name: str) -> ModelSpec:
    """Return the spec of ``name`` or raise a ``ValueError`` that lists the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of: {', '.join(MODELS)}"
        ) from None


def build(name: str, **config: Any):
    """Build a fresh, untrained ``keras.Model`` of family ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS`.
    **config
        Overrides of the family's defaults (e.g. ``base_filters=8`` for tests).
    """
    spec = resolve(name)
    kwargs = {**spec.defaults, **config}
    kwargs.setdefault("name", name)
    return spec.load_builder()(**kwargs)


def total_stride(name: str, **config: Any) -> int:
    """The factor that input sides must be multiples of for family ``name``."""
    kwargs = {**resolve(name).defaults, **config}
    if "depth" in kwargs:
        return 2 ** int(kwargs["depth"])
    return 32 if kwargs.get("backbone") == "xception" else 16
