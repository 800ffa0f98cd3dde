"""A loaded model with the tiling and post-processing settings of its card."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..models.card import InferenceSettings, ModelCard
from .device_memory import MIN_TILE, free_gpu_memory, gpu_tiling, is_out_of_memory
from .postprocess import PostprocessParams, probabilities_to_labels, suppress_fill
from .predict import FLIPS, Progress, predict_tiled


@dataclass
class Segmenter:
    """Model + settings: ``segment(image)`` is the whole job from RGB to instance labels.

    Attributes
    ----------
    model : keras.Model or callable
        Maps ``(B, H, W, 3)`` float32 in [0, 1] to ``(B, H, W, 2)`` probabilities: a Keras
        model, or an :class:`~nucleoseg.inference.openvino_engine.OpenVINOModel`.
    stride : int
        Input sides must be multiples of it.
    tile, halo, batch_size : int
        Tiling (see :func:`nucleoseg.inference.tiling.fit_grid`).
    params : PostprocessParams
        Thresholds and sizes for :func:`probabilities_to_labels`.
    card : ModelCard
        The model card it was loaded with (all defaults for a fresh model).
    precision : str
        What ``model`` computes in: ``float32``, ``bfloat16`` or ``float16`` (see
        :mod:`nucleoseg.models.precision`).
    tta : bool
        Test-time augmentation, the *quality* setting: each tile's probabilities averaged
        over the tile and its horizontal, vertical and double flips (4x the model time; the
        same tiles, so whole slides take it too).
    stain : str
        Stain normalisation before the model (:mod:`nucleoseg.io.stain`): ``"none"`` or
        ``"reinhard"``.
    """

    model: Any
    stride: int = InferenceSettings.stride
    tile: int = InferenceSettings.tile
    halo: int = InferenceSettings.halo
    batch_size: int = InferenceSettings.batch_size
    params: PostprocessParams = field(default_factory=PostprocessParams)
    card: ModelCard = field(default_factory=ModelCard)
    precision: str = "float32"
    tta: bool = False
    stain: str = "none"

    @classmethod
    def load(cls, name_or_path: str, precision: str | None = "auto",
             **overrides: Any) -> Segmenter:
        """Load a shipped/user model by name, or a ``.keras`` path, with its card's settings.

        ``precision`` is ``"auto"`` (bfloat16 on CPUs that compute it natively, float32
        elsewhere), ``"float32"``, ``"bfloat16"`` or ``"float16"``; ``None`` means auto.
        ``overrides`` replace card values: ``tile``, ``halo``, ``batch_size`` and any
        :class:`PostprocessParams` field.
        """
        from ..backend import inference_engine
        from ..models.precision import resolve_precision, with_precision
        from ..models.weights import load_model, verified_card
        from .postprocess import warm_up_kernels

        warm_up_kernels()  # while the model loads
        engine = inference_engine()
        if engine == "openvino":
            from .openvino_engine import OpenVINOModel

            path, card = verified_card(name_or_path)
            precision = resolve_precision(precision or "auto", card, engine)
            model = None  # Keras loads it only when OpenVINO's cache lacks the conversion
            runner = OpenVINOModel(None, precision, checksum=card.sha256,
                                   loader=lambda: load_model(path)[0])
        else:
            model, card = load_model(name_or_path)
            precision = resolve_precision(precision or "auto", card, engine)
            runner = with_precision(model, precision)
        seg = cls.from_card(runner, card, **overrides)
        seg.precision = precision
        free = free_gpu_memory() if seg.engine == "keras" else None
        if free is not None and overrides.get("tile") is None \
                and overrides.get("batch_size") is None:
            seg.tile, seg.batch_size = gpu_tiling(model, seg.tile, seg.stride, free, precision)
        return seg

    @property
    def engine(self) -> str:
        """What runs the model: ``"openvino"`` or ``"keras"``."""
        from .openvino_engine import OpenVINOModel

        return "openvino" if isinstance(self.model, OpenVINOModel) else "keras"

    @classmethod
    def from_card(cls, model: Any, card: ModelCard | dict, **overrides: Any) -> Segmenter:
        """A segmenter with the card's settings, then ``overrides`` (see :meth:`update`)."""
        card = ModelCard.coerce(card)
        inf = card.inference
        seg = cls(model=model, stride=inf.stride, tile=inf.tile, halo=inf.halo,
                  batch_size=inf.batch_size, params=card.postprocess.replace(), card=card)
        seg.update(**overrides)
        return seg

    def update(self, **settings: Any) -> None:
        """Change ``tile``, ``halo``, ``batch_size`` or any :class:`PostprocessParams` field;
        ``None`` values are ignored; values are checked against the settings' bounds
        (:class:`~nucleoseg.models.card.CardError`, a ``ValueError``)."""
        for key, value in settings.items():
            if value is None:
                continue
            if key in PostprocessParams.__dataclass_fields__:
                self.params = self.params.replace(**{key: value})
            elif key in ("tile", "halo", "batch_size"):
                checked = InferenceSettings(**{key: value})
                setattr(self, key, getattr(checked, key))
            elif key == "tta":
                self.tta = bool(value)
            elif key == "stain":
                from ..io.stain import STAIN_METHODS

                if value not in STAIN_METHODS:
                    raise ValueError(f"stain must be one of {', '.join(STAIN_METHODS)}, not "
                                     f"{value!r}")
                self.stain = str(value)
            else:
                raise ValueError(f"unknown setting {key!r}")

    def probabilities(
        self, image: np.ndarray, should_stop: Callable[[], bool] | None = None
    ) -> Generator[Progress, None, np.ndarray]:
        """Tiled probabilities ``(H, W, 2) float32`` (a progress generator); zero on scanner
        fill (see :func:`~nucleoseg.inference.postprocess.suppress_fill`)."""
        model_input = image
        if self.stain != "none":
            from ..io.images import to_rgb_uint8
            from ..io.stain import normalise

            model_input = normalise(to_rgb_uint8(image), self.stain)
        total = yield from self._predict(model_input, should_stop)
        return suppress_fill(total, image)

    def _predict(self, image: np.ndarray, should_stop: Callable[[], bool] | None
                 ) -> Generator[Progress, None, np.ndarray]:
        """Tiled probabilities; on running out of memory, again with half the batch, then
        half the tile (down to :data:`~nucleoseg.inference.device_memory.MIN_TILE`), then on
        the CPU. The smaller settings are kept for the next image."""
        on_cpu = False
        while True:
            try:
                if on_cpu:
                    import keras

                    with keras.device("cpu:0"):
                        return (yield from self._tiled(image, should_stop))
                return (yield from self._tiled(image, should_stop))
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                if self.batch_size > 1:
                    self.batch_size //= 2
                elif self.tile // 2 >= MIN_TILE:
                    self.tile = max(MIN_TILE, self.tile // 2 // self.stride * self.stride)
                elif not on_cpu and self.engine == "keras" and free_gpu_memory() is not None:
                    on_cpu = True
                else:
                    raise MemoryError(f"out of memory even with {self.tile}-px tiles one at "
                                      "a time; close other programs or use a smaller "
                                      "image") from exc
                where = "the CPU" if on_cpu else f"{self.tile}-px tiles, batch " \
                    f"{self.batch_size}"
                _warn(f"out of memory: retrying with {where}")
                yield -1, -1, f"out of memory: retrying with {where}"

    def _tiled(self, image: np.ndarray, should_stop: Callable[[], bool] | None
               ) -> Generator[Progress, None, np.ndarray]:
        return (yield from predict_tiled(
            self.model, image, tile=self.tile, halo=self.halo, stride=self.stride,
            batch_size=self.batch_size, should_stop=should_stop, flips=self.flips))

    @property
    def flips(self) -> int:
        """Flips each tile is predicted in: 4 with :attr:`tta`, else 1."""
        return len(FLIPS) if self.tta else 1

    def segment(
        self, image: np.ndarray, should_stop: Callable[[], bool] | None = None
    ) -> Generator[Progress, None, np.ndarray]:
        """Instance labels ``(H, W) int32`` for an RGB image (a progress generator).

        Post-processing runs once, on the stitched probability map.
        """
        probs = yield from self.probabilities(image, should_stop)
        yield -1, -1, "post-processing"
        return probabilities_to_labels(probs, self.params)


def _warn(message: str) -> None:
    import warnings

    warnings.warn(message, RuntimeWarning, stacklevel=3)
