"""One place that chooses the Keras backend and the device, before Keras is imported.

Our models use only ``keras.layers``/``keras.ops``, so the same ``.keras`` files run on
TensorFlow, JAX or PyTorch. ``auto`` takes a GPU-capable backend that is installed *and*
sees a GPU (JAX, then PyTorch, then TensorFlow), else TensorFlow on the CPU (bfloat16 where
the CPU computes it natively, see :mod:`nucleoseg.models.precision`).

The choice comes from (first that is set): the ``backend`` argument (CLI ``--backend``, the
panels), ``$NUCLEOSEG_BACKEND``, ``$KERAS_BACKEND``, else ``auto``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field

BACKENDS = ("auto", "tensorflow", "jax", "torch")
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


def installed(backend: str) -> bool:
    """Whether ``backend``'s package is importable (without importing it)."""
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    return importlib.util.find_spec(module) is not None


def gpu_names(backend: str) -> list[str]:
    """Names of the GPUs ``backend`` sees (imports the backend's package; [] when absent)."""
    if not installed(backend):
        return []
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


def choose(backend: str | None = None, device: str = "auto") -> Choice:
    """Decide backend and device (see the module docstring); imports nothing of Keras.

    Raises
    ------
    BackendError
        For an unknown name, a backend that is not installed, or ``device="gpu"`` when the
        backend sees no GPU.
    """
    backend = (backend or os.environ.get("NUCLEOSEG_BACKEND") or
               os.environ.get("KERAS_BACKEND") or "auto").lower()
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if backend == "auto":
        if device != "cpu":
            for candidate in ("jax", "torch", "tensorflow"):
                gpus = gpu_names(candidate) if installed(candidate) else []
                if gpus:
                    return Choice(candidate, "gpu", f"{candidate} is installed and sees "
                                  f"{len(gpus)} GPU(s)", gpus)
        if device == "gpu":
            hint = GPU_INSTALL.get(sys.platform, GPU_INSTALL["linux"])
            raise BackendError(f"no installed backend sees a GPU; install one: {hint}")
        return Choice("tensorflow", "cpu", "no GPU visible: TensorFlow on the CPU")
    if not installed(backend):
        extra = {"tensorflow": "", "jax": "[jax]", "torch": "[torch]"}[backend]
        raise BackendError(f"the {backend} backend is not installed: "
                           f'pip install "napari-nucleoseg{extra}"')
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

        if keras.backend.backend() != choice.backend:
            raise BackendError(f"Keras was already imported with the "
                               f"{keras.backend.backend()} backend; choose the backend first")
    os.environ["KERAS_BACKEND"] = choice.backend
    if choice.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        if choice.backend == "tensorflow":
            os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def describe() -> list[str]:
    """Lines for ``nucleoseg info``: what ``auto`` picks and why, devices, what to install."""
    lines = []
    choice = choose("auto")
    lines.append(f"auto picks: {choice.backend} on the {choice.device} ({choice.reason})")
    for name in BACKENDS[1:]:
        if installed(name):
            gpus = gpu_names(name)
            lines.append(f"  {name}: installed; GPUs: {', '.join(gpus) if gpus else 'none'}")
        else:
            lines.append(f"  {name}: not installed")
    from .models.precision import cpu_has_native_bfloat16

    lines.append(f"CPU computes bfloat16 natively: {'yes' if cpu_has_native_bfloat16() else 'no'}"
                 " (auto precision on the CPU: "
                 f"{'bfloat16' if cpu_has_native_bfloat16() else 'float32'})")
    if choice.device != "gpu":
        lines.append("for a GPU: " + GPU_INSTALL.get(sys.platform, GPU_INSTALL["linux"]))
    return lines
