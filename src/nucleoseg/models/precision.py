"""Inference precision: float32, or bfloat16/float16 compute with float32 weights and outputs.

``"auto"`` picks bfloat16 on a CPU that computes it natively (x86 ``avx512_bf16`` or
``amx_bf16``) *and* runs it faster there, and float32 everywhere else. The flag alone is
not enough: on a 2-core AMD EPYC OpenVINO's bfloat16 ran the UNet 4.5x faster than its
float32, on a 2-core Intel Xeon VM with the same flag (no AMX) 1.8x *slower*
(``benchmarks/results/cpu_precision_probe.txt``). So the first ``auto`` on a machine times a
small convolution stack in both precisions on the engine that will run the models
(:func:`bfloat16_pays`, well under a second) and the answer is kept in the user cache
folder, keyed by the CPU, the engine and its version. The accuracy change of the shipped
models is in ``benchmarks/results/precision_val_cpu.txt``, the model cards
(``test.bfloat16``) and the README.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
#: Keras dtype policy of each explicit precision.
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def cpu_has_native_bfloat16() -> bool:
    """True when this x86 CPU advertises bfloat16 arithmetic (``avx512_bf16``/``amx_bf16``).

    Reads ``/proc/cpuinfo`` (Linux); elsewhere answers False (float32 is then used).
    ``NUCLEOSEG_NATIVE_BF16=0/1`` overrides the answer (and, for ``"auto"``, the
    measurement of :func:`bfloat16_pays`).
    """
    forced = os.environ.get("NUCLEOSEG_NATIVE_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return bool(_cpu_flags()[1] & {"avx512_bf16", "amx_bf16"})


#: bfloat16 is chosen when it takes at most this share of float32's time on the probe.
BF16_MAX_TIME_RATIO = 0.9
_PAYS: dict[str, dict] = {}  # per engine key, the measurement this process used


@functools.cache
def _cpu_flags() -> tuple[str, frozenset[str]]:
    """This CPU's model name and flags from ``/proc/cpuinfo`` (empty elsewhere), read once."""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not name:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return name, frozenset(flags)


def _probe_key(engine: str) -> str:
    """What the measurement depends on: the CPU, its core count, the engine and its version."""
    import platform

    name, flags = _cpu_flags()
    if engine == "openvino":
        from ..inference.openvino_engine import import_openvino

        version = f"openvino {import_openvino().__version__.split('-')[0]}"
    else:
        import keras

        backend = keras.backend.backend()
        module = __import__(backend) if backend in ("tensorflow", "jax", "torch") else keras
        version = f"keras {keras.__version__} {backend} {getattr(module, '__version__', '')}"
    cpu = f"{name or platform.processor() or platform.machine()} x{os.cpu_count()}"
    digest = hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:12]
    return f"{cpu} flags:{digest} {version}"


def cache_root() -> Path:
    """The project's cache folder: ``$NUCLEOSEG_CACHE`` or the user cache folder (measured
    precisions here, converted OpenVINO models in its ``openvino/``)."""
    root = os.environ.get("NUCLEOSEG_CACHE")
    if root:
        return Path(root)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("nucleoseg"))


def _probe_file() -> Path:
    """Where measured answers are kept."""
    return cache_root() / "cpu_precision.json"


def _time_openvino(side: int = 160, channels: int = 64, layers: int = 3,
                   rounds: int = 3) -> dict[str, float]:
    """Best seconds of a 3x3 convolution stack in OpenVINO, float32 and bfloat16 hints."""
    import numpy as np

    from ..inference.openvino_engine import import_openvino

    ov = import_openvino()
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([1, channels, side, side], np.float32)
    y = x
    for _ in range(layers):
        w = (rng.standard_normal((channels, channels, 3, 3)) * 0.05).astype(np.float32)
        y = ops.relu(ops.convolution(y, ops.constant(w), [1, 1], [1, 1], [1, 1], [1, 1]))
    model, core = ov.Model([y], [x]), ov.Core()
    data = rng.random((1, channels, side, side), dtype=np.float32)
    out = {}
    for precision, hint in (("float32", "f32"), ("bfloat16", "bf16")):
        request = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        ).create_infer_request()
        request.infer({0: data})  # warm-up
        out[precision] = _best(lambda r=request: r.infer({0: data}), rounds)
    return out


def _time_keras(side: int = 160, channels: int = 64, layers: int = 3,
                rounds: int = 3) -> dict[str, float]:
    """Best seconds of a 3x3 convolution stack in Keras on this backend, float32 and
    mixed bfloat16 (what :func:`with_precision` builds)."""
    import keras
    import numpy as np

    data = np.random.default_rng(0).random((1, side, side, channels), dtype=np.float32)
    out = {}
    for precision in ("float32", "bfloat16"):
        inputs = keras.Input((side, side, channels))
        y = inputs
        for _ in range(layers):
            y = keras.layers.Conv2D(channels, 3, padding="same", activation="relu",
                                    dtype=POLICIES[precision])(y)
        model = keras.Model(inputs, y)
        model(data)  # warm-up (traces the graph)
        out[precision] = _best(lambda m=model: keras.ops.convert_to_numpy(m(data)), rounds)
    return out


def _best(call: Any, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best


def bfloat16_pays(engine: str = "openvino", measure: Any = None) -> dict:
    """Whether bfloat16 runs convolutions faster than float32 on this CPU and ``engine``
    (``"openvino"`` or ``"keras"``, the backend Keras runs on), measured once per machine.

    The answer comes from this process's memory, then from the cache file, else from
    timing a small 3x3 convolution stack in both precisions (``measure``, a callable
    returning ``{"float32": s, "bfloat16": s}``, replaces the timing in tests), kept in the
    cache file atomically; a read-only cache only costs the measurement next time.

    Returns
    -------
    dict
        ``{"bfloat16": bool, "float32_s": ..., "bfloat16_s": ..., "key": ..., "source":
        "measured" | "cache" | "probe failed: ..."}`` (no times when it failed);
        ``bfloat16`` is True when bfloat16 took at most :data:`BF16_MAX_TIME_RATIO` of
        float32's time. A probe that raises
        answers float32 for this process and is not cached (tried again next time).
    """
    key = f"{engine}: {_probe_key(engine)}"
    if key in _PAYS:
        return _PAYS[key]
    path = _probe_file()
    try:
        known = json.loads(path.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    entry = known.get(key)
    if isinstance(entry, dict) and {"float32_s", "bfloat16_s"} <= set(entry):
        result = {**entry, "source": "cache"}
    else:
        try:
            times = (measure or (_time_openvino if engine == "openvino" else _time_keras))()
        except Exception as exc:  # a probe that cannot run must never stop inference
            result = {"bfloat16": False, "key": key,
                      "source": f"probe failed: {type(exc).__name__}: {exc}"[:200]}
            _PAYS[key] = result
            return result
        result = {"float32_s": round(float(times["float32"]), 5),
                  "bfloat16_s": round(float(times["bfloat16"]), 5),
                  "measured": time.strftime("%Y-%m-%d %H:%M")}
        known[key] = result
        from ..io.atomic import atomic_write_bytes

        with contextlib.suppress(OSError):  # a read-only cache: measured again next time
            atomic_write_bytes(path, json.dumps(known, indent=1).encode())
        result = {**result, "source": "measured"}
    result["bfloat16"] = result["bfloat16_s"] <= BF16_MAX_TIME_RATIO * result["float32_s"]
    result["key"] = key
    _PAYS[key] = result
    return result


def cpu_auto_precision(engine: str = "openvino", card: Any = None) -> tuple[str, str]:
    """What ``"auto"`` runs on this CPU with ``engine``, and why (one line)."""
    from .card import ModelCard

    if not (ModelCard.coerce(card).inference.cpu_bfloat16 or engine == "openvino"):
        return "float32", "the model card opts out of bfloat16 on the CPU"
    forced = os.environ.get("NUCLEOSEG_NATIVE_BF16")
    if forced in ("0", "1"):
        return ("bfloat16" if forced == "1" else "float32",
                f"NUCLEOSEG_NATIVE_BF16={forced} (no measurement)")
    if not cpu_has_native_bfloat16():
        return "float32", "the CPU has no native bfloat16"
    pays = bfloat16_pays(engine)
    if pays["source"].startswith("probe failed"):
        return "float32", f"native bfloat16, but its {pays['source']}"
    ratio = pays["bfloat16_s"] / max(pays["float32_s"], 1e-9)
    verdict = "faster" if pays["bfloat16"] else "not faster"
    return ("bfloat16" if pays["bfloat16"] else "float32",
            f"native bfloat16, {verdict} here: {ratio:.2f}x float32's time on a "
            f"convolution probe ({pays['source']})")


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
    if engine != "openvino" and _accelerator_present():
        return "float32"
    return cpu_auto_precision(engine, card)[0]


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
