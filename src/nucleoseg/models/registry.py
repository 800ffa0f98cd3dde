"""The one registry of model families: adding a model is one entry in :data:`MODELS`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _depth_stride(config: dict[str, Any]) -> int:
    """Encoder-decoder with ``depth`` poolings of 2."""
    return 2 ** int(config["depth"])


def _backbone_stride(config: dict[str, Any]) -> int:
    """DeepLabV3+ (output stride 16; the Xception entry flow needs multiples of 32)."""
    return 32 if config.get("backbone") == "xception" else 16


@dataclass(frozen=True)
class ModelSpec:
    """A registered model family: everything the rest of the package needs to know.

    Attributes
    ----------
    builder : str
        ``"module:function"`` inside :mod:`nucleoseg.models`, imported on first use.
    description : str
        One line for menus and ``--help``.
    defaults : dict
        Default keyword arguments of the builder.
    stride : callable
        ``stride(config) -> int``: input sides must be multiples of it.
    encoder : tuple of str
        Layer-name prefixes of the encoder (frozen by "freeze encoder" when fine-tuning).
    test_config : dict
        Builder overrides for a tiny instance, used by the shared model test harness
        (``tests/models/test_models.py``) that every registered family runs.

    The module named in ``builder`` holds the family's custom layers (registered with Keras
    when it is imported); :func:`register_custom_layers` imports every family's module.
    """

    builder: str
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)
    stride: Callable[[dict[str, Any]], int] = _depth_stride
    encoder: tuple[str, ...] = ("enc",)
    test_config: dict[str, Any] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return f"nucleoseg.models.{self.builder.split(':')[0]}"

    def load_builder(self) -> Callable[..., Any]:
        import importlib

        return getattr(importlib.import_module(self.module), self.builder.split(":")[1])


MODELS: dict[str, ModelSpec] = {
    "unet": ModelSpec("unet:build_unet", "UNet, 4 levels", {"depth": 4, "base_filters": 32},
                      test_config={"depth": 2, "base_filters": 4}),
    "unet_lite": ModelSpec(
        "unet:build_unet", "UNet, 4 levels, 8 base filters: fast (14x fewer FLOPs), less accurate",
        {"depth": 4, "base_filters": 8}, test_config={"depth": 2},
    ),
    "se_unet": ModelSpec(
        "unet:build_unet",
        "UNet with squeeze-excitation, one conv per block",
        {"depth": 4, "base_filters": 32, "convs_per_block": 1, "squeeze_excitation": True},
        test_config={"depth": 2, "base_filters": 4},
    ),
    "segnet": ModelSpec(
        "segnet:build_segnet", "SegNet with max-pooling-indices unpooling", {"depth": 4},
        test_config={"depth": 2, "base_filters": 8},  # fewer filters: more pooling near-ties
    ),
    "deeplabv3": ModelSpec(
        "deeplab:build_deeplabv3",
        "DeepLabV3+ on MobileNetV2",
        {"backbone": "mobilenetv2", "decoder": True},
        stride=_backbone_stride, encoder=("mobilenetv2", "preprocess"),
        test_config={"alpha": 0.35, "aspp_filters": 16, "decoder_filters": 16},
    ),
    "deeplabv3_xception": ModelSpec(
        "deeplab:build_deeplabv3",
        "DeepLabV3+ on Xception",
        {"backbone": "xception", "decoder": True, "aspp_filters": 256},
        stride=_backbone_stride, encoder=("xception", "preprocess", "stem_align"),
        test_config={"aspp_filters": 16, "decoder_filters": 16},
    ),
}


def register_custom_layers() -> None:
    """Import every family's module so Keras can deserialise its custom layers."""
    import importlib

    for module in sorted({spec.module for spec in MODELS.values()} |
                         {"nucleoseg.models.blocks"}):
        importlib.import_module(module)


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
    spec = resolve(name)
    return int(spec.stride({**spec.defaults, **config}))


def encoder_layers(model: Any, name: str) -> list[Any]:
    """The layers of ``model`` (family ``name``) that form its encoder (for an unknown
    family, those named like any registered family's encoder)."""
    prefixes = MODELS[name].encoder if name in MODELS else tuple(
        {p for spec in MODELS.values() for p in spec.encoder})
    return [layer for layer in model.layers if layer.name.startswith(prefixes)]
