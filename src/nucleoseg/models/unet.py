"""UNet (Ronneberger et al. 2015) with optional squeeze-and-excitation blocks."""

from __future__ import annotations

import keras
from keras import layers

from .blocks import conv_bn_relu, output_head, squeeze_excite


def build_unet(
    depth: int = 4,
    base_filters: int = 32,
    convs_per_block: int = 2,
    dropout: float = 0.1,
    squeeze_excitation: bool = False,
    se_ratio: int = 8,
    max_filters: int = 256,
    name: str = "unet",
) -> keras.Model:
    """Build a UNet that maps ``(B, H, W, 3)`` float images in [0, 1] to ``(B, H, W, 2)``.

    Parameters
    ----------
    depth : int
        Number of 2x down-sampling steps; the total stride is ``2**depth``.
    base_filters : int
        Filters of the first block; doubled at every level.
    convs_per_block : int
        Convolutions per block (2 = classic UNet; 1 with ``squeeze_excitation`` is the
        lighter SE-UNet variant).
    dropout : float
        Dropout rate at the bottleneck.
    squeeze_excitation : bool
        Add a squeeze-and-excitation gate after every block.
    se_ratio : int
        Channel reduction of the SE bottleneck.
    max_filters : int
        Cap on filters per block: the deep levels hold most parameters but few FLOPs, so
        capping them keeps the file small at little cost in accuracy.
    name : str
        Model name.

    Returns
    -------
    keras.Model
        Inputs ``(None, None, 3)``; spatial sides must be multiples of ``2**depth``.
    """
    inputs = keras.Input((None, None, 3), name="image")

    def block(x, filters, tag):
        for i in range(convs_per_block):
            x = conv_bn_relu(x, filters, f"{tag}_{i}")
        if squeeze_excitation:
            x = squeeze_excite(x, se_ratio, tag)
        return x

    skips = []
    x = inputs
    for level in range(depth):
        x = block(x, min(base_filters * 2**level, max_filters), f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = block(x, min(base_filters * 2**depth, max_filters), "bottleneck")
    if dropout:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(depth)):
        filters = min(base_filters * 2**level, max_filters)
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skips[level]])
        x = block(x, filters, f"dec{level}")
    return keras.Model(inputs, output_head(x), name=name)
