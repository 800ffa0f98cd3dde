"""SegNet (Badrinarayanan et al. 2017) with max-pooling-indices unpooling.

The pooling indices are kept as a *switch mask*: ``x == upsample(maxpool(x))`` marks the
position of each window's maximum, and the decoder places values only there. This is the
same operation as index unpooling, written with ``keras.ops`` so every backend runs it
(ties inside a window, rare on real features, mark every tied position).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from .blocks import conv_bn_relu, output_head


@keras.saving.register_keras_serializable(package="nucleoseg")
class SwitchUnpool2D(layers.Layer):
    """Unpool ``y`` to the positions where ``x`` held its 2x2 window maxima.

    Inputs are ``[x, pooled, y]``: the encoder features before pooling ``(B, H, W, C)``,
    the same features after 2x2 max pooling ``(B, H/2, W/2, C)``, and the decoder tensor to
    unpool ``(B, H/2, W/2, C)``. Output: ``(B, H, W, C)``.
    """

    def call(self, inputs):
        x, pooled, y = inputs
        up_pooled = ops.repeat(ops.repeat(pooled, 2, axis=1), 2, axis=2)
        switches = ops.cast(ops.equal(x, up_pooled), y.dtype)
        up_y = ops.repeat(ops.repeat(y, 2, axis=1), 2, axis=2)
        return up_y * switches

    def compute_output_shape(self, input_shape):
        return input_shape[0]


def build_segnet(
    depth: int = 4,
    base_filters: int = 32,
    convs_per_block: int = 2,
    dropout: float = 0.1,
    name: str = "segnet",
) -> keras.Model:
    """Build a SegNet mapping ``(B, H, W, 3)`` images in [0, 1] to ``(B, H, W, 2)`` probabilities.

    Parameters
    ----------
    depth : int
        Number of pooling steps; the total stride is ``2**depth``.
    base_filters : int
        Filters of the first encoder block; doubled per level (capped at 8x).
    convs_per_block : int
        Convolutions per encoder and decoder block.
    dropout : float
        Dropout before the deepest decoder block.
    name : str
        Model name.
    """
    inputs = keras.Input((None, None, 3), name="image")
    x = inputs
    switches = []
    for level in range(depth):
        filters = base_filters * min(2**level, 8)
        for i in range(convs_per_block):
            x = conv_bn_relu(x, filters, f"enc{level}_{i}")
        pooled = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
        switches.append((x, pooled))
        x = pooled
    if dropout:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(depth)):
        pre, pooled = switches[level]
        x = SwitchUnpool2D(name=f"dec{level}_unpool")([pre, pooled, x])
        filters = base_filters * min(2**level, 8)
        out_filters = base_filters * min(2 ** max(level - 1, 0), 8)
        for i in range(convs_per_block):
            last = i == convs_per_block - 1 and level > 0
            x = conv_bn_relu(x, out_filters if last else filters, f"dec{level}_{i}")
    return keras.Model(inputs, output_head(x), name=name)
