"""A child process that runs the Keras work for the napari widgets.

TensorFlow cannot share a process with an OpenGL context from Mesa's llvmpipe/radeonsi
drivers (both carry LLVM; the first GL call after ``import tensorflow`` segfaults), and a
separate process also keeps TensorFlow's threads and the GIL away from the viewer. Each
widget owns one :class:`ComputeProcess`; it starts on first use, keeps the loaded model
between runs, and streams the core generators' ``(done, total, message)`` progress back.
:meth:`ComputeProcess.prepare` starts work ahead of need: the Segment panel has the child
import Keras, load the chosen model and trace it for the chosen image's tiles before the
first press.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
import traceback
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

from .inference.predict import Cancelled, Progress


class ComputeError(Exception):
    """The child process failed in a way that is not the user's input."""


class ComputeProcess:
    """Run ``segment`` / ``fine_tune`` tasks in a spawned child process."""

    def __init__(self, backend: str = "auto") -> None:
        self._backend = backend
        self._restart = False  # the backend changed: the next task starts a new child
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._conn = None
        self._stop = self._ctx.Event()
        self._lock = threading.Lock()  # prepare() comes from the GUI thread, run() from a worker
        self._one_run = threading.Lock()  # runs from two workers take turns on the one pipe
        self._running = False
        self._unanswered = 0  # prepared tasks whose messages run() has not read yet

    def _ensure(self) -> None:
        if self._restart:
            self._restart = False
            self.close()
        if self._proc is not None and self._proc.is_alive():
            return
        self._unanswered = 0
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve, args=(child, self._stop, self._backend),
                                       name="nucleoseg-compute", daemon=True)
        with _main_hidden():
            self._proc.start()
        child.close()
        self._conn = parent

    def run(self, task: str, **kwargs: Any) -> Generator[Progress | tuple, None, Any]:
        """Send a task; yield what the child reports; return its result.

        Raises :class:`~nucleoseg.inference.predict.Cancelled` after :meth:`cancel`, and the
        child's exception (re-raised here) when the task fails. A second run waits for the
        first to finish.
        """
        with self._one_run:
            return (yield from self._run(task, kwargs))

    def _run(self, task: str, kwargs: dict) -> Generator[Progress | tuple, None, Any]:
        with self._lock:
            self._running = True
            self._ensure()
            self._stop.clear()
            self._conn.send((task, kwargs))
        try:
            while True:
                try:
                    if not self._conn.poll(0.5):
                        if not self._proc.is_alive():
                            raise EOFError
                        continue
                    kind, payload = self._conn.recv()
                except (EOFError, OSError):
                    self._proc.join(2)
                    code = self._proc.exitcode
                    self._proc = None
                    why = "killed, or out of memory" if code is not None and code < 0 else \
                        f"exit code {code}"
                    raise ComputeError(f"the compute process ended unexpectedly ({why}); "
                                       "press again to restart it") from None
                if self._unanswered:  # the child answers in order: a prepared task's message
                    if kind != "progress":
                        self._unanswered -= 1
                    elif payload[:2] == (0, 0):
                        yield payload  # e.g. "loading model..." while the user waits
                    continue
                if kind == "progress":
                    yield payload
                elif kind == "result":
                    return payload
                elif kind == "cancelled":
                    raise Cancelled("cancelled")
                elif kind == "error":
                    exc, tb = payload
                    exc.__notes__ = [*getattr(exc, "__notes__", []), tb]
                    raise exc
        finally:
            self._running = False

    def prepare(self, task: str, **kwargs: Any) -> bool:
        """Send a task nobody waits for (start the child, load a model); its messages are
        read and dropped by the next :meth:`run`. Does nothing while a run is in flight.

        Returns
        -------
        bool
            Whether the task was sent.
        """
        with self._lock:
            if self._running:
                return False
            self._ensure()
            self._conn.send((task, kwargs))
            self._unanswered += 1
            return True

    @property
    def backend(self) -> str:
        return self._backend

    def set_backend(self, backend: str) -> None:
        """Use the Keras ``backend`` (a name of :data:`nucleoseg.backend.BACKENDS`) from the
        next task on: that task starts a new child (Keras picks its backend at import); a
        task already running finishes on the old one."""
        with self._lock:
            if backend != self._backend:
                self._backend = backend
                self._restart = True

    def cancel(self) -> None:
        """Ask the running task to stop at its next batch or step."""
        self._stop.set()

    def close(self) -> None:
        """End the child process."""
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(("quit", {}))
                self._proc.join(5)
            except (OSError, EOFError):
                pass
            if self._proc.is_alive():
                self._proc.terminate()
        self._proc = None


@contextmanager
def _main_hidden():
    """Start a spawned child without re-running the caller's ``__main__``.

    ``spawn`` re-imports the main script in the child; a napari script without an
    ``if __name__ == "__main__":`` guard would then open a second viewer there. The child
    needs nothing from ``__main__`` (it serves :mod:`nucleoseg` tasks), so the main module's
    file and spec are hidden from multiprocessing while the child starts.
    """
    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__file__", "__spec__") if hasattr(main, k)}
    try:
        for k in saved:
            if k == "__file__":
                delattr(main, k)
            else:
                setattr(main, k, None)
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


#: tasks that load a segmenter themselves: a prepare waiting behind one is pointless
_LOADING = ("segment", "prepare_segment", "quit")


def _serve(conn, stop, backend: str = "auto") -> None:  # runs in the child
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .backend import BackendError, apply, choose

    startup_error = None
    try:
        apply(choose(backend))  # before anything imports Keras
    except BackendError as exc:
        startup_error = exc
    cache: dict[str, Any] = {}
    backlog: list[tuple[str, dict]] = []  # requests read ahead, in order
    while True:
        try:
            task, kwargs = backlog.pop(0) if backlog else conn.recv()
            if task == "prepare_segment":  # skip it when a later request decides the model
                while conn.poll():
                    backlog.append(conn.recv())
                if any(t in _LOADING for t, _ in backlog):
                    conn.send(("result", None))
                    continue
        except (EOFError, OSError):
            return
        if task == "quit":
            return
        if startup_error is not None:  # every task reports why the backend is unusable
            conn.send(("error", (startup_error, "")))
            continue
        try:
            result = _TASKS[task](conn, stop, cache, **kwargs)
            conn.send(("result", result))
        except Cancelled:
            conn.send(("cancelled", None))
        except Exception as exc:  # send the user's error back, keep serving
            try:
                conn.send(("error", (exc, traceback.format_exc())))
            except Exception:
                conn.send(("error", (RuntimeError(f"{type(exc).__name__}: {exc}"),
                                     traceback.format_exc())))


def _segmenter(conn, cache, model: str, precision: str):
    """The cached segmenter of ``model`` in ``precision``, loaded when it is not the cached
    one (one model is kept)."""
    from .inference.segment import Segmenter

    key = (model, os.path.getmtime(model) if os.path.exists(model) else 0, precision)
    seg = cache.get(key)
    if seg is None:
        conn.send(("progress", (0, 0, "loading model...")))
        cache.clear()
        seg = cache[key] = Segmenter.load(model, precision=precision)
    return seg


def _prepare_segment(conn, stop, cache, model: str, precision: str = "auto",
                     shape: tuple[int, int] | None = None, settings: dict | None = None
                     ) -> None:
    """Import Keras and load ``model`` ahead of the first Segment (skipped by :func:`_serve`
    when a later request that loads a model already waits); with the ``shape`` of the chosen
    image, also trace the model for the batch of tiles that image will need."""
    seg = _segmenter(conn, cache, model, precision)
    if shape is None:
        return
    import numpy as np

    from .inference.predict import predict_batch
    from .inference.tiling import fit_grid

    seg.update(**(settings or {}))
    grid = fit_grid(shape, seg.tile, seg.halo, seg.stride)
    batch = max(1, min(seg.batch_size, len(grid)))
    predict_batch(seg.model, np.zeros((batch, *grid.tile, 3), np.float32))


def _loaded(conn, stop, cache) -> list[tuple]:
    """``(model, precision, traced input shapes)`` of the segmenter the child holds."""
    from .inference.predict import traced_shapes

    return [(key[0], key[2], traced_shapes(seg.model)) for key, seg in cache.items()]


def _segment(conn, stop, cache, model: str, image, settings: dict, device: str = "auto"):
    settings = dict(settings)
    seg = _segmenter(conn, cache, model, settings.pop("precision", "auto"))
    seg.update(**settings)
    gen = seg.segment(image, should_stop=stop.is_set)

    def drive():
        while True:
            try:
                conn.send(("progress", next(gen)))
            except StopIteration as done:
                return done.value

    import keras

    used = {"precision": seg.precision,
            "backend": "openvino" if seg.engine == "openvino" else keras.backend.backend()}
    seen = _devices(conn, stop, cache)
    if device == "auto":
        return {"labels": drive(), **used, "device": seen[2] if len(seen) > 2 else "CPU"}
    if device not in seen:
        raise ValueError(f"{device} is not visible to Keras ({keras.backend.backend()} "
                         f"backend; it sees: {', '.join(seen[1:])}); choose another device")
    index = device.split(":")[0].split()[-1] if device.startswith("GPU") else "0"
    with keras.device(f"gpu:{index}" if device.startswith("GPU") else "cpu:0"):
        return {"labels": drive(), **used, "device": device}


def _segment_slide(conn, stop, cache, slide: str, model: str, settings: dict,
                   out_dir: str | None = None):
    """Whole slide, block-wise, into ``<slide>_nuclei.zarr`` beside it (or ``out_dir``); an
    existing store with the same settings is resumed, one with other settings kept."""
    import dataclasses
    from pathlib import Path

    from .inference.wsi import plan_slide, segment_slide, store_settings_match
    from .io.outputs import default_output

    conn.send(("progress", (0, 0, "planning blocks...")))
    src = Path(slide)
    folder = Path(out_dir) if out_dir else src.parent
    if not os.access(folder, os.W_OK):
        from platformdirs import user_data_dir

        folder = Path(user_data_dir("nucleoseg")) / "slides"
        folder.mkdir(parents=True, exist_ok=True)
    job = plan_slide(src, default_output(src, slide=True, out_dir=folder), model, **settings)
    for k in range(1, 1000):
        out = default_output(src, slide=True, out_dir=folder, variant=k)
        if store_settings_match(dataclasses.replace(job, out=str(out))) is not False:
            job = dataclasses.replace(job, out=str(out))
            break
    gen = segment_slide(job, workers=2, should_stop=stop.is_set)
    while True:
        try:
            conn.send(("progress", next(gen)))
        except StopIteration as done:
            return done.value


def _fine_tune(conn, stop, cache, **kwargs):
    from .training.finetune import fine_tune

    return fine_tune(
        **kwargs,
        progress=lambda s, t, logs: conn.send(("progress", ("step", s, t, logs))),
        on_epoch=lambda e, logs: conn.send(("progress", ("epoch", e, logs))),
        should_stop=stop.is_set,
    )


def _devices(conn, stop, cache) -> list[str]:
    """``auto``, ``CPU`` and each GPU the child's backend sees, by name (``GPU 0: ...``)."""
    import keras

    from .backend import gpu_names

    return ["auto", "CPU", *gpu_names(keras.backend.backend())]


def _ping(conn, stop, cache) -> int:
    """The child's process id (a cheap task for health checks and tests)."""
    return os.getpid()


_TASKS = {"ping": _ping, "segment": _segment, "segment_slide": _segment_slide,
          "fine_tune": _fine_tune, "devices": _devices, "prepare_segment": _prepare_segment,
          "loaded": _loaded}
