"""Inference through OpenVINO's CPU runtime: the same Keras model, 1.2-5x faster on a CPU.

The Keras model (TensorFlow backend) is converted once to an OpenVINO model and compiled per
input shape for the CPU, in float32 or with bfloat16 inference precision (what OpenVINO runs
on CPUs with ``avx512_bf16``/``amx_bf16``). Converted models are cached under the user cache
folder by the ``.keras`` file's checksum, so only the first load of a model pays the
conversion (~2 s). Measured against TensorFlow in ``benchmarks/cpu_engines.py``
(``benchmarks/results/cpu_engines_cpu.txt``); the accuracy of its bfloat16 on the validation
tiles is in ``benchmarks/results/engines_val_cpu.txt``.

Inference only: training and fine-tuning stay on Keras.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: OpenVINO inference precision hint per project precision.
_HINTS = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
_KEEP_SHAPES = 4


def available() -> bool:
    """Whether the ``openvino`` package is importable (without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def import_openvino() -> Any:
    """``import openvino`` without OpenVINO's usage telemetry; every import goes through here.

    OpenVINO sends anonymous usage events to Google Analytics by default, on import and on
    each model conversion, and keeps a client id in ``~/intel`` ("OpenVINO Telemetry" on
    docs.openvino.ai; ``opt_in_out --opt_out`` stops it machine-wide). A tool that
    segments patients' slides should contact no one, so before OpenVINO is first imported
    its telemetry package is hidden from this process, and OpenVINO takes the stand-in it
    ships for installs without it. ``NUCLEOSEG_OPENVINO_TELEMETRY=1`` leaves OpenVINO's own
    behaviour, as does another package that imported OpenVINO first in the same process.
    """
    if "openvino" not in sys.modules and os.environ.get("NUCLEOSEG_OPENVINO_TELEMETRY") != "1":
        sys.modules.setdefault("openvino_telemetry", None)  # import fails: the stand-in
    import openvino

    return openvino


def cache_folder() -> Path:
    """Where converted models are kept (``openvino/`` in the project's cache folder)."""
    from ..models.precision import cache_root

    return cache_root() / "openvino"


class OpenVINOModel:
    """A Keras model run by OpenVINO on the CPU; call it on ``(B, H, W, 3) float32``.

    Parameters
    ----------
    model : keras.Model, optional
        The float32 network (TensorFlow backend); or give ``loader``.
    precision : str
        ``float32``, ``bfloat16`` or ``float16``: OpenVINO's inference precision.
    checksum : str, optional
        The ``.keras`` file's sha256 (the card's): the converted model is cached under it.
        Without one (a model in memory), it is converted every time.
    loader : callable, optional
        Returns the Keras model; called only when the cache lacks the conversion, so a
        cached model runs without importing Keras or TensorFlow.
    ir : path, optional
        An OpenVINO model file (``.xml`` beside its ``.bin``, e.g. written by
        :func:`export_ir`) to run instead: no Keras, no conversion.
    """

    def __init__(self, model: Any = None, precision: str = "float32",
                 checksum: str | None = None, loader: Callable[[], Any] | None = None,
                 ir: str | Path | None = None) -> None:
        ov = import_openvino()

        if precision not in _HINTS:
            raise ValueError(f"precision must be one of {', '.join(_HINTS)}, not {precision!r}")
        if model is None and loader is None and ir is None:
            raise ValueError("give the Keras model, a loader for it or an OpenVINO file")
        self.precision = precision
        self._core = ov.Core()
        if ir is not None:
            try:
                self._source = self._core.read_model(str(ir))
            except Exception as exc:  # OpenVINO raises RuntimeError subclasses
                raise ValueError(f"cannot read the OpenVINO model {Path(ir).name}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else exc}") from None
        else:
            self._source = _converted((lambda: model) if model is not None else loader,
                                      checksum, self._core)
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._lock = threading.RLock()

    @property
    def compiled_shapes(self) -> list[tuple[int, ...]]:
        """Input shapes compiled so far (oldest first)."""
        return list(self._compiled)

    def _request(self, shape: tuple[int, ...]) -> Any:
        with self._lock:
            if shape not in self._compiled:
                model = self._source.clone()
                model.reshape({model.inputs[0]: list(shape)})
                compiled = self._core.compile_model(model, "CPU", {
                    "INFERENCE_PRECISION_HINT": _HINTS[self.precision],
                    "PERFORMANCE_HINT": "LATENCY"})
                self._compiled[shape] = compiled.create_infer_request()
                while len(self._compiled) > _KEEP_SHAPES:
                    self._compiled.popitem(last=False)
            self._compiled.move_to_end(shape)
            return self._compiled[shape]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        request = self._request(tuple(x.shape))
        with self._lock:  # one infer request per shape: calls from threads take turns
            request.infer({0: x})
            return np.array(request.get_output_tensor(0).data, dtype=np.float32)


def _converted(load: Callable[[], Any], checksum: str | None, core: Any) -> Any:
    """The OpenVINO model of the Keras model ``load()`` returns: from the cache when its
    checksum is there (``load`` is then not called)."""
    ov = import_openvino()

    # keyed by the weights and the converter: a new OpenVINO converts again
    cached = cache_folder() / f"{checksum}-{ov.__version__.split('-')[0]}.xml" if checksum \
        else None
    if cached is not None and cached.exists() and cached.with_suffix(".bin").exists():
        try:
            return core.read_model(str(cached))
        except Exception:  # a damaged cache entry is converted again
            pass
    converted = _convert(load())
    if cached is not None:
        # a read-only or full cache only costs the conversion next time
        with contextlib.suppress(OSError):
            _save(converted, cached)
    return converted


def _save(converted: Any, xml: Path) -> None:
    """Write an OpenVINO model to ``xml`` and its ``.bin`` atomically (float32 weights)."""
    ov = import_openvino()

    xml.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=xml.parent, prefix=".convert-"))
    try:
        ov.save_model(converted, str(staging / "model.xml"), compress_to_fp16=False)
        # the weights first: a reader that finds the .xml finds its .bin
        os.replace(staging / "model.bin", xml.with_suffix(".bin"))
        os.replace(staging / "model.xml", xml)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_ir(model: Any, xml: str | Path) -> Path:
    """Convert a Keras model (TensorFlow backend) and write it as an OpenVINO model file
    (``xml`` and the ``.bin`` beside it, atomically), which :class:`OpenVINOModel` runs
    with ``ir=xml`` without Keras. Returns the ``.xml`` path."""
    xml = Path(xml)
    _save(_convert(model), xml)
    return xml


def _convert(model: Any) -> Any:
    """Convert a Keras (TensorFlow backend) model to an OpenVINO model (any batch size)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("OpenVINO conversion needs Keras on the TensorFlow backend, not "
                           f"{keras.backend.backend()}")
    with tempfile.TemporaryDirectory(prefix="nucleoseg-ov-") as tmp:
        ov = import_openvino()

        path = Path(tmp) / "model.xml"
        # any batch; the sizes the model was built for (None = any size)
        shape = (None, *tuple(model.inputs[0].shape)[1:])
        model.export(str(path), format="openvino", verbose=False, input_signature=[
            keras.InputSpec(shape=shape, dtype="float32")])
        return ov.Core().read_model(str(path))
