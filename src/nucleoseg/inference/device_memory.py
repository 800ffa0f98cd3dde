"""GPU memory: size tiles and batches from the device's free memory; recognise running out.

The model cards' tiling (2176 px, batch 1) is what is fastest on a CPU. On a GPU a batch of
several tiles keeps the device busy, as long as the activations fit: :func:`gpu_tiling`
picks the largest batch (then, if even one tile does not fit, the largest tile) whose
activations fit in a share of the free memory. The activation size is an upper bound, the
sum of every layer's output (:func:`activation_bytes_per_pixel`), so the sizing errs on the
safe side. Should the device still run out, :class:`~nucleoseg.inference.segment.Segmenter`
retries with smaller batches and tiles, then on the CPU (:func:`is_out_of_memory` tells
such errors from others).
"""

from __future__ import annotations

from typing import Any

#: Share of the free device memory the activations' upper bound may take (the rest:
#: weights, convolution workspace, fragmentation). The bound is 2-4x the real inference peak
#: (XLA frees activations as it goes: an H100 ran the UNet at 2048^2 x 4 tiles, bound 62 GB).
SHARE = 0.9
#: No batch larger than this (the gain flattens out; measured on an H100 earlier).
MAX_BATCH = 8
#: Smallest tile the retries go down to.
MIN_TILE = 256

_OOM_TYPES = {"ResourceExhaustedError", "OutOfMemoryError", "MemoryError"}
_OOM_WORDS = ("RESOURCE_EXHAUSTED", "out of memory", "OOM when allocating",
              "Out of memory", "failed to allocate")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says a device (or the host) ran out of memory: TensorFlow's
    ``ResourceExhaustedError``, JAX/XLA's ``RESOURCE_EXHAUSTED``, PyTorch's
    ``OutOfMemoryError``, numpy's ``MemoryError``."""
    for kind in type(exc).__mro__:
        if kind.__name__ in _OOM_TYPES:
            return True
    text = str(exc)
    return any(word in text for word in _OOM_WORDS)


def free_gpu_memory() -> int | None:
    """Free memory of the first GPU Keras uses, in bytes; None on a CPU or when the backend
    cannot tell (TensorFlow reports only what it has allocated itself)."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform == "cpu":
                return None
            stats = device.memory_stats() or {}
            if "bytes_limit" in stats:
                return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return int(torch.cuda.mem_get_info()[0])
    except Exception:  # a driver that cannot answer leaves the card's tiling
        return None
    return None


def activation_bytes_per_pixel(model: Any, precision: str = "float32", side: int = 256
                               ) -> float:
    """Upper bound of the activation memory per input pixel: every layer's output summed
    (no reuse), from shapes traced symbolically on a ``side``-pixel square input (nothing is
    computed), at 2 bytes per value in bfloat16/float16 and 4 in float32."""
    import keras
    import numpy as np

    outputs, nested = [], 0.0
    for layer in model.layers[1:]:
        if isinstance(layer, keras.Model):  # an encoder inside: its own layers, counted
            nested += activation_bytes_per_pixel(layer, precision, side)  # at full size
            continue
        outputs += layer.output if isinstance(layer.output, list | tuple) else [layer.output]
    probe = keras.Model(model.inputs, outputs)
    specs = probe.compute_output_spec(keras.KerasTensor((1, side, side, 3)))
    values = sum(int(np.prod(spec.shape[1:])) for spec in specs)
    return nested + values / side**2 * (4 if precision == "float32" else 2)


def gpu_tiling(model: Any, tile: int, stride: int, free_bytes: int, precision: str = "float32"
               ) -> tuple[int, int]:
    """``(tile, batch)`` for a GPU with ``free_bytes`` free: the card's ``tile`` with the
    largest batch (up to :data:`MAX_BATCH`) whose activations fit in :data:`SHARE` of it;
    when not even one tile fits, the largest multiple of ``stride`` that does (at least
    :data:`MIN_TILE`)."""
    per_px = activation_bytes_per_pixel(model, precision)
    budget = SHARE * free_bytes
    batch = int(budget // (per_px * tile * tile))
    if batch >= 1:
        return tile, min(batch, MAX_BATCH)
    side = int((budget / per_px) ** 0.5) // stride * stride
    return max(side, MIN_TILE), 1
