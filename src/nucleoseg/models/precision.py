"""Inference precision: float32, or bfloat16/float16 compute with float32 weights and outputs.

``"auto"`` picks bfloat16 on a CPU that computes it natively (x86 ``avx512_bf16`` or
``amx_bf16``: oneDNN then runs the convolutions 1.4-1.7x faster than in float32, see
``benchmarks/results/throughput_cpu_bf16.txt``) and float32 everywhere else, so a machine
without native bfloat16 never runs an emulated, slower path. The accuracy change of the
shipped models is in ``benchmarks/results/precision_val_cpu.txt``, the model cards
(``test.bfloat16``) and the README.
"""

from __future__ import annotations

import os
from typing import Any

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
#: Keras dtype policy of each explicit precision.
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def cpu_has_native_bfloat16() -> bool:
    """True when this x86 CPU advertises bfloat16 arithmetic (``avx512_bf16``/``amx_bf16``).

    Reads ``/proc/cpuinfo`` (Linux); elsewhere answers False (float32 is then used).
    ``NUCLEOSEG_NATIVE_BF16=0/1`` overrides the answer.
    """
    forced = os.environ.get("NUCLEOSEG_NATIVE_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def _accelerator_present() -> bool:
    """Whether the Keras backend sees a GPU/TPU (imports the backend)."""
    import keras

    from ..backend import gpu_names

    backend = keras.backend.backend()
    if backend in ("torch", "openvino"):  # no keras.distribution on these backends
        return bool(gpu_names(backend))
    devices = keras.distribution.list_devices()
    return any(not d.lower().startswith("cpu") for d in devices)


def resolve_precision(precision: str = "auto", card: Any = None, engine: str = "keras") -> str:
    """``"auto"`` to the precision this machine runs best; other values checked and returned.

    A model card can opt out of bfloat16 on the CPU with ``inference.cpu_bfloat16: false``
    (DeepLabV3+: TensorFlow's depthwise convolutions run slower in bfloat16); the opt-out is
    about Keras' kernels, so ``engine="openvino"`` (4x faster in bfloat16 for DeepLabV3+ too,
    ``benchmarks/results/cpu_engines_cpu.txt``) ignores it.

    Raises
    ------
    ValueError
        For a name not in :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    from .card import ModelCard

    wanted = ModelCard.coerce(card).inference.cpu_bfloat16 or engine == "openvino"
    if wanted and cpu_has_native_bfloat16() and (engine == "openvino" or
                                                  not _accelerator_present()):
        return "bfloat16"
    return "float32"


def with_precision(model: Any, precision: str) -> Any:
    """The same network computing in ``precision`` (a new model sharing no state).

    Every layer but the input and the output layers gets the mixed policy (float32
    variables, lower-precision compute); the outputs stay float32 probabilities. float32
    returns ``model`` itself.
    """
    if precision == "auto":
        raise ValueError("resolve 'auto' first (resolve_precision)")
    precision = resolve_precision(precision)
    if precision == "float32":
        return model
    import keras

    from .registry import register_custom_layers

    register_custom_layers()
    policy = {"module": "keras", "class_name": "DTypePolicy",
              "config": {"name": POLICIES[precision]}, "registered_name": None}
    outputs = {t._keras_history[0].name for t in model.outputs}
    config = model.get_config()
    _set_policy(config, policy, keep=outputs)
    mixed = keras.Model.from_config(config)
    mixed.set_weights(model.get_weights())
    return mixed


def _set_policy(config: dict, policy: dict, keep: set[str]) -> None:
    """Give every layer of a functional ``config`` (nested models too) ``policy``, except
    input layers and the layers named in ``keep``."""
    for layer in config["layers"]:
        inner = layer.get("config", {})
        if layer["class_name"] == "InputLayer" or layer["name"] in keep:
            continue
        if "dtype" in inner:
            inner["dtype"] = policy
        if "layers" in inner:  # a nested functional model (e.g. a backbone)
            _set_policy(inner, policy, keep=set())
