"""Shared building blocks: conv/BN/ReLU, squeeze-and-excitation, ASPP, the output head.

Only ``keras.layers`` and ``keras.ops`` are used, so every backend runs them.
"""

from __future__ import annotations

import keras
from keras import layers, ops

#: Output channels of every model: 0 = nucleus (foreground), 1 = nucleus interior
#: (each nucleus eroded by a few pixels), used as watershed markers to split touching nuclei.
OUTPUT_CHANNELS = ("nucleus", "interior")


def conv_bn_relu(x, filters: int, name: str, kernel_size: int = 3, dilation: int = 1):
    """3x3 (by default) convolution, batch normalisation and ReLU with fixed layer names."""
    x = layers.Conv2D(
        filters,
        kernel_size,
        padding="same",
        dilation_rate=dilation,
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def squeeze_excite(x, ratio: int, name: str):
    """Channel attention (Hu et al. 2018): global pool, bottleneck MLP, sigmoid gate."""
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    s = layers.Dense(max(channels // ratio, 4), activation="relu", name=f"{name}_se_reduce")(s)
    s = layers.Dense(channels, activation="sigmoid", name=f"{name}_se_expand")(s)
    return layers.Multiply(name=f"{name}_se_scale")([x, s])


def aspp(x, filters: int, rates: tuple[int, ...], name: str = "aspp", dropout: float = 0.1):
    """Atrous spatial pyramid pooling (DeepLabV3): 1x1, dilated 3x3 branches and image pooling.

    The image-pooling branch averages over the whole input, so its output depends on the tile;
    tiled inference therefore matches whole-image inference only approximately for DeepLabV3
    (documented in the model card).
    """
    branches = [conv_bn_relu(x, filters, f"{name}_b0", kernel_size=1)]
    for i, rate in enumerate(rates, start=1):
        branches.append(conv_bn_relu(x, filters, f"{name}_b{i}", dilation=rate))
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    pooled = conv_bn_relu(pooled, filters, f"{name}_pool_proj", kernel_size=1)
    pooled = BroadcastLike(name=f"{name}_pool_broadcast")([pooled, x])
    branches.append(pooled)
    y = layers.Concatenate(name=f"{name}_concat")(branches)
    y = conv_bn_relu(y, filters, f"{name}_proj", kernel_size=1)
    if dropout:
        y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
    return y


def output_head(x, name: str = "head"):
    """1x1 convolution to the two sigmoid output channels (see :data:`OUTPUT_CHANNELS`)."""
    return layers.Conv2D(
        len(OUTPUT_CHANNELS), 1, activation="sigmoid", dtype="float32", name=f"{name}_probs"
    )(x)


@keras.saving.register_keras_serializable(package="nucleoseg")
class BroadcastLike(layers.Layer):
    """Broadcast a ``(B, 1, 1, C)`` tensor to the spatial size of a reference tensor."""

    def call(self, inputs):
        small, ref = inputs
        shape = ops.shape(ref)
        return ops.broadcast_to(small, (shape[0], shape[1], shape[2], small.shape[-1]))

    def compute_output_shape(self, input_shape):
        small, ref = input_shape
        return (ref[0], ref[1], ref[2], small[-1])


@keras.saving.register_keras_serializable(package="nucleoseg")
class ResizeLike(layers.Layer):
    """Bilinear resize of a tensor to the spatial size of a reference tensor."""

    def call(self, inputs):
        x, ref = inputs
        shape = ops.shape(ref)
        size = (shape[1], shape[2])
        if all(isinstance(s, int) for s in size):
            return ops.image.resize(x, size, interpolation="bilinear")
        # TensorFlow graphs with unknown sides (e.g. after predict() retraces with relaxed
        # shapes): keras.ops.image.resize checks `size > 0` in Python, which a symbolic size
        # cannot answer; the backend's own resize takes the symbolic size as it is.
        from keras.src import backend as keras_backend

        return keras_backend.image.resize(x, size, interpolation="bilinear")

    def compute_output_shape(self, input_shape):
        x, ref = input_shape
        return (x[0], ref[1], ref[2], x[-1])
