"""DeepLabV3 / V3+ (Chen et al. 2017, 2018) on a MobileNetV2 or Xception backbone.

Backbones come from ``keras.applications`` with ``weights=None`` (no download); pass
``backbone_weights="imagenet"`` (or a path) to start from ImageNet weights when they are
available offline in ``~/.keras/models``. Encoder features are taken at output stride 16,
the V3+ decoder adds stride-4 low-level features.
"""

from __future__ import annotations

import keras
from keras import layers

from .blocks import ResizeLike, aspp, conv_bn_relu, output_head

# (high-level feature at stride 16, low-level feature at stride 4) per backbone
_BACKBONE_LAYERS = {
    "mobilenetv2": ("block_13_expand_relu", "block_3_expand_relu"),
    "xception": ("block13_sepconv2_bn", "block3_sepconv2_bn"),
}


def _backbone(name: str, weights: str | None, alpha: float) -> keras.Model:
    if name == "mobilenetv2":
        base = keras.applications.MobileNetV2(
            input_shape=(None, None, 3), include_top=False, weights=weights, alpha=alpha
        )
    elif name == "xception":
        base = keras.applications.Xception(
            input_shape=(None, None, 3), include_top=False, weights=weights
        )
    else:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(_BACKBONE_LAYERS)}")
    # keras.applications uses BN momentum 0.999: with random init and a few thousand steps
    # the moving statistics stay near their initial values and inference collapses.
    for layer in base.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = 0.99
    high, low = _BACKBONE_LAYERS[name]
    return keras.Model(
        base.input, [base.get_layer(high).output, base.get_layer(low).output], name=f"{name}"
    )


def build_deeplabv3(
    backbone: str = "mobilenetv2",
    decoder: bool = True,
    aspp_filters: int = 128,
    aspp_rates: tuple[int, ...] = (6, 12, 18),
    decoder_filters: int = 64,
    alpha: float = 1.0,
    backbone_weights: str | None = None,
    name: str = "deeplabv3",
) -> keras.Model:
    """Build DeepLabV3 (``decoder=False``) or DeepLabV3+ (``decoder=True``).

    Parameters
    ----------
    backbone : {"mobilenetv2", "xception"}
        Encoder from ``keras.applications``.
    decoder : bool
        Add the V3+ decoder that fuses stride-4 features (sharper nucleus outlines).
    aspp_filters, aspp_rates : int, tuple of int
        ASPP width and dilation rates (at output stride 16).
    decoder_filters : int
        Width of the V3+ decoder.
    alpha : float
        MobileNetV2 width multiplier.
    backbone_weights : str or None
        ``None`` (random init, offline), ``"imagenet"`` or a weights file path.
    name : str
        Model name.

    Returns
    -------
    keras.Model
        ``(None, None, 3)`` images in [0, 1] to ``(None, None, 2)`` probabilities; sides must
        be multiples of 16 (32 for Xception).
    """
    inputs = keras.Input((None, None, 3), name="image")
    if backbone == "xception":
        # Xception's stem uses two 'valid' 3x3 convolutions; 3 px of zero padding realigns
        # its feature maps to exact strides of the input.
        x = layers.Rescaling(2.0, offset=-1.0, name="preprocess")(inputs)
        x = layers.ZeroPadding2D(3, name="stem_align")(x)
    else:
        x = layers.Rescaling(2.0, offset=-1.0, name="preprocess")(inputs)
    high, low = _backbone(backbone, backbone_weights, alpha)(x)
    y = aspp(high, aspp_filters, aspp_rates)
    if decoder:
        low = conv_bn_relu(low, 48, "decoder_low", kernel_size=1)
        y = ResizeLike(name="decoder_up4")([y, low])
        y = layers.Concatenate(name="decoder_concat")([y, low])
        y = conv_bn_relu(y, decoder_filters, "decoder_0")
        y = conv_bn_relu(y, decoder_filters, "decoder_1")
    y = ResizeLike(name="upsample_to_input")([y, inputs])
    return keras.Model(inputs, output_head(y), name=name)
