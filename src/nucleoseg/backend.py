"""One place that chooses the Keras backend and the device, before Keras is imported.

Our models use only ``keras.layers``/``keras.ops``, so the same ``.keras`` files run on
TensorFlow, JAX or PyTorch. ``openvino`` loads them with Keras on TensorFlow and runs
inference through OpenVINO's CPU runtime (:mod:`nucleoseg.inference.openvino_engine`;
training and fine-tuning stay on TensorFlow). ``auto`` takes a GPU-capable backend that is
installed *and* sees a GPU (JAX, then PyTorch, then TensorFlow); without one, OpenVINO on the
CPU when it is installed (it is a dependency: 1.2x faster than TensorFlow in float32 and
2-5x in bfloat16 on this project's CPU, ``benchmarks/results/cpu_engines_cpu.txt``), else
TensorFlow on the CPU. bfloat16 is used where the CPU computes it natively (see
:mod:`nucleoseg.models.precision`).

The choice comes from (first that is set): the ``backend`` argument (CLI ``--backend``, the
panels), ``$NUCLEOSEG_BACKEND``, ``$KERAS_BACKEND``, else ``auto``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

BACKENDS = ("auto", "tensorflow", "jax", "torch", "openvino")
DEVICES = ("auto", "cpu", "gpu")

#: What to install for a GPU, per platform (also printed by ``nucleoseg info``).
GPU_INSTALL = {
    "linux": 'pip install "napari-nucleoseg[cuda]"   # JAX with CUDA 12 wheels (NVIDIA)',
    "win32": 'pip install "napari-nucleoseg[torch]" --extra-index-url '
             "https://download.pytorch.org/whl/cu124   # PyTorch with CUDA (NVIDIA)",
    "darwin": 'pip install "napari-nucleoseg[torch]"   # PyTorch on Apple-silicon MPS',
}


class BackendError(RuntimeError):
    """A backend or device that cannot be used here (one clear sentence)."""


@dataclass
class Choice:
    """The backend and device chosen, and why."""

    backend: str
    device: str
    reason: str
    gpus: list[str] = field(default_factory=list)

    @property
    def keras_backend(self) -> str:
        """The Keras backend to import (OpenVINO inference loads models with TensorFlow)."""
        return "tensorflow" if self.backend == "openvino" else self.backend

    @property
    def engine(self) -> str:
        """What runs inference: ``"openvino"`` or ``"keras"``."""
        return "openvino" if self.backend == "openvino" else "keras"


def installed(backend: str) -> bool:
    """Whether ``backend``'s package is importable (without importing it)."""
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch",
              "openvino": "openvino"}[backend]
    return importlib.util.find_spec(module) is not None


def gpu_names(backend: str) -> list[str]:
    """Names of the GPUs ``backend`` sees (imports the backend's package; [] when absent)."""
    if backend == "openvino" or not installed(backend):
        return []  # OpenVINO is used on the CPU only
    try:
        if backend == "jax":
            import jax

            return [f"GPU {d.id}: {d.device_kind}" for d in jax.devices()
                    if d.platform in ("gpu", "cuda", "rocm", "METAL", "metal")]
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return [f"GPU {i}: {torch.cuda.get_device_name(i)}"
                        for i in range(torch.cuda.device_count())]
            mps = getattr(torch.backends, "mps", None)
            return ["GPU 0: Apple MPS"] if mps is not None and mps.is_available() else []
        import tensorflow as tf

        return [f"GPU {i}: {d.name}" for i, d in
                enumerate(tf.config.list_physical_devices("GPU"))]
    except Exception:  # a broken GPU install must not stop CPU use
        return []


def _may_have_gpu() -> bool:
    """False when this machine surely has no GPU a backend could use (Linux without NVIDIA
    or ROCm device files), so ``auto`` need not import JAX, PyTorch and TensorFlow to ask.
    ``NUCLEOSEG_PROBE_GPU=1`` asks anyway."""
    if os.environ.get("NUCLEOSEG_PROBE_GPU") == "1" or not sys.platform.startswith("linux"):
        return True
    import glob

    return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd") or
                os.path.exists("/dev/dxg"))  # NVIDIA, ROCm, WSL2


def _keras_backend_env() -> str | None:
    """``$KERAS_BACKEND`` when it names a backend other than Keras's default (TensorFlow,
    which says nothing about the engine: it leaves ``auto``)."""
    value = os.environ.get("KERAS_BACKEND", "").lower()
    return value if value and value != "tensorflow" else None


def _cpu_choice() -> Choice:
    """``auto`` without a GPU: OpenVINO (it converts through Keras on TensorFlow), else the
    first installed of TensorFlow, JAX and PyTorch."""
    if installed("tensorflow"):
        if installed("openvino"):
            return Choice("openvino", "cpu", "no GPU visible: OpenVINO on the CPU (faster "
                          "than TensorFlow there)")
        return Choice("tensorflow", "cpu", "no GPU visible and OpenVINO not installed: "
                      "TensorFlow on the CPU")
    for candidate in ("jax", "torch"):
        if installed(candidate):
            return Choice(candidate, "cpu", f"no GPU visible and TensorFlow not installed: "
                          f"{candidate} on the CPU")
    raise BackendError("no Keras backend is installed: pip install napari-nucleoseg "
                       "(TensorFlow), or its [jax] or [torch] extra")


def choose(backend: str | None = None, device: str = "auto") -> Choice:
    """Decide backend and device (see the module docstring); imports nothing of Keras.

    Raises
    ------
    BackendError
        For an unknown name, a backend that is not installed, or ``device="gpu"`` when the
        backend sees no GPU.
    """
    backend = (backend or os.environ.get("NUCLEOSEG_BACKEND") or
               _keras_backend_env() or "auto").lower()
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if backend == "auto":
        if device != "cpu" and _may_have_gpu():
            for candidate in ("jax", "torch", "tensorflow"):
                gpus = gpu_names(candidate) if installed(candidate) else []
                if gpus:
                    return Choice(candidate, "gpu", f"{candidate} is installed and sees "
                                  f"{len(gpus)} GPU(s)", gpus)
        if device == "gpu":
            hint = GPU_INSTALL.get(sys.platform, GPU_INSTALL["linux"])
            raise BackendError(f"no installed backend sees a GPU; install one: {hint}")
        return _cpu_choice()
    if not installed(backend):
        extra = {"tensorflow": "", "jax": "[jax]", "torch": "[torch]", "openvino": ""}[backend]
        raise BackendError(f"the {backend} backend is not installed: "
                           f'pip install "napari-nucleoseg{extra}"' +
                           (" openvino" if backend == "openvino" else ""))
    if backend == "openvino":
        if device == "gpu":
            raise BackendError("OpenVINO is used on the CPU only; for a GPU choose "
                               "--backend auto, jax or torch")
        return Choice("openvino", "cpu", "openvino asked for: inference on the CPU")
    if device == "cpu":
        return Choice(backend, "cpu", f"{backend} asked for, on the CPU")
    gpus = gpu_names(backend)
    if device == "gpu" and not gpus:
        raise BackendError(f"{backend} sees no GPU; use --device cpu, or install: "
                           f"{GPU_INSTALL.get(sys.platform, GPU_INSTALL['linux'])}")
    return Choice(backend, "gpu" if gpus else "cpu",
                  f"{backend} asked for" + (f", {len(gpus)} GPU(s) seen" if gpus else
                                            ", no GPU seen: CPU"), gpus)


def apply(choice: Choice) -> None:
    """Make Keras use ``choice``: sets ``KERAS_BACKEND`` (and hides GPUs for the CPU).

    Must run before Keras is imported; a Keras already imported with another backend is a
    :class:`BackendError`.
    """
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != choice.keras_backend:
            raise BackendError(f"Keras was already imported with the "
                               f"{keras.backend.backend()} backend; choose the backend first")
    os.environ["KERAS_BACKEND"] = choice.keras_backend
    os.environ["NUCLEOSEG_ENGINE"] = choice.engine
    if choice.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        if choice.keras_backend == "tensorflow":
            os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    if choice.keras_backend == "jax":
        _use_jax_compilation_cache()


def jax_cache_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """JAX's persistent compilation cache settings NucleoSeg's processes use.

    On JAX, loading a ``.keras`` file compiles Keras's random initialisers once per weight
    shape (their values are then overwritten by the file's), and each tile shape compiles
    the model. Kept in ``<cache>/jax`` (under 1 MB per model), the programs are read back by
    later processes: a fresh ``nucleoseg segment --backend jax`` on a 1000^2 tile took
    7.6-12.1 s instead of 19-26 s on a 2-core CPU, with identical labels
    (``benchmarks/results/jax_cache_cpu.txt``). A setting already in ``environ`` wins;
    ``NUCLEOSEG_JAX_CACHE=0`` leaves the cache off.

    Returns
    -------
    dict
        Environment variables to set where they are unset (JAX reads them at import).
    """
    if environ.get("NUCLEOSEG_JAX_CACHE") == "0":
        return {}
    from .models.precision import cache_root

    settings = {"JAX_COMPILATION_CACHE_DIR": str(cache_root() / "jax"),
                # each initialiser compiles in under JAX's default minimum of 1 s
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    return {k: v for k, v in settings.items() if not environ.get(k)}


def _use_jax_compilation_cache() -> None:
    """Turn on :func:`jax_cache_settings`, also in a JAX imported already (by the device
    listing of ``choose``)."""
    for name, value in jax_cache_settings(os.environ).items():
        os.environ[name] = value
        if "jax" in sys.modules:
            import jax

            jax.config.update(name.lower(), float(value) if "SECS" in name else value)


def _openvino_note() -> str:
    """What ``nucleoseg info`` says of OpenVINO, its telemetry included."""
    telemetry = ("left as OpenVINO sets it (NUCLEOSEG_OPENVINO_TELEMETRY=1)"
                 if os.environ.get("NUCLEOSEG_OPENVINO_TELEMETRY") == "1" else
                 "off in NucleoSeg's processes")
    return f"CPU inference; its usage telemetry: {telemetry}"


def describe() -> list[str]:
    """Lines for ``nucleoseg info``: what ``auto`` picks and why, devices, what to install."""
    lines = []
    choice = choose("auto")
    lines.append(f"auto picks: {choice.backend} on the {choice.device} ({choice.reason})")
    for name in BACKENDS[1:]:
        if installed(name):
            gpus = gpu_names(name)
            lines.append(f"  {name}: installed; " + (_openvino_note() if name == "openvino"
                         else f"GPUs: {', '.join(gpus) if gpus else 'none'}"))
            if name == "jax":
                where = os.environ.get("JAX_COMPILATION_CACHE_DIR") or \
                    jax_cache_settings(os.environ).get("JAX_COMPILATION_CACHE_DIR")
                lines.append("    compiled programs kept in: "
                             f"{where or 'nowhere (NUCLEOSEG_JAX_CACHE=0)'}")
        else:
            lines.append(f"  {name}: not installed")
    from .models.precision import cpu_auto_precision, cpu_has_native_bfloat16

    engine = "openvino" if choice.backend == "openvino" else "keras"
    precision, why = cpu_auto_precision(engine)
    lines.append(f"CPU computes bfloat16 natively: {'yes' if cpu_has_native_bfloat16() else 'no'}"
                 f"; auto precision on the CPU: {precision} ({why})")
    if choice.device != "gpu":
        lines.append("for a GPU: " + GPU_INSTALL.get(sys.platform, GPU_INSTALL["linux"]))
    return lines


def inference_engine() -> str:
    """What runs inference in this process: ``"openvino"`` or ``"keras"``.

    ``$NUCLEOSEG_ENGINE`` (set by :func:`apply`) decides. Unset (a script that never chose):
    the choice :func:`choose` makes from ``$NUCLEOSEG_BACKEND``/``$KERAS_BACKEND``, i.e.
    OpenVINO when it is installed, nothing else was asked for, Keras runs on TensorFlow and
    TensorFlow sees no GPU.
    """
    wanted = os.environ.get("NUCLEOSEG_ENGINE")
    strict = wanted == "openvino" or \
        os.environ.get("NUCLEOSEG_BACKEND", "").lower() == "openvino"
    if wanted is None:
        try:
            wanted = choose(device="cpu").engine
        except BackendError:
            return "keras"
    if wanted != "openvino":
        return "keras"
    problem = None
    keras_backend = _keras_backend()
    if not installed("openvino"):
        problem = "OpenVINO is not installed: pip install openvino"
    elif keras_backend != "tensorflow":
        problem = ("OpenVINO inference loads models with Keras on TensorFlow, but Keras runs "
                   f"on {keras_backend}")
    if problem and strict:
        raise BackendError(problem)
    if problem or (not strict and _may_have_gpu() and gpu_names("tensorflow")):
        return "keras"
    return "openvino"


def _keras_backend() -> str:
    """The backend Keras runs on, or will when imported (without importing it)."""
    if "keras" in sys.modules:
        import keras

        return keras.backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"].lower()
    import json

    config = os.path.join(os.environ.get("KERAS_HOME") or os.path.expanduser("~/.keras"),
                          "keras.json")
    try:
        with open(config) as f:
            return str(json.load(f).get("backend", "tensorflow")).lower()
    except (OSError, ValueError, AttributeError):
        return "tensorflow"
