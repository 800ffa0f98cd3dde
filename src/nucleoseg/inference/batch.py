"""Many images through one model, with reading, the model and post-processing overlapped.

Each image goes through three stages: *read* (decode the file), *predict* (tiled
probabilities, in the calling thread) and *finish* (post-processing to labels, then the
caller's ``save``). With ``overlap=True`` one thread reads the next image and another
finishes the previous one while the model works on the current one, so post-processing and
file I/O mostly hide behind the forward pass (``benchmarks/many_images.py`` measures it).
At most three images are in flight whatever the number of files (one being read, one in
the model, one being finished), results come back in input order, and they are identical
to ``overlap=False``: the same functions run on the same inputs, only at other times.

A failure of one image (unreadable file, bad layout, full disk) is reported in its
:class:`ImageOutcome` and the others go on; :class:`~nucleoseg.inference.predict.Cancelled`
stops the run after the image being finished is saved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .postprocess import probabilities_to_labels
from .predict import Cancelled, run
from .segment import Segmenter


@dataclass
class ImageOutcome:
    """What became of one input of :func:`segment_many`.

    Attributes
    ----------
    index : int
        Position in ``sources``.
    labels : numpy.ndarray or None
        ``(H, W) int32`` instance labels; None when the image failed.
    saved : Any
        What ``save`` returned (None without ``save``).
    error : Exception or None
        Why the image failed (reading, the model, post-processing or ``save``).
    """

    index: int
    labels: np.ndarray | None = None
    saved: Any = None
    error: Exception | None = None


def segment_many(
    seg: Segmenter | Callable[[], Segmenter],
    sources: Sequence[Any],
    read: Callable[[Any], np.ndarray],
    save: Callable[[int, np.ndarray, np.ndarray], Any] | None = None,
    overlap: bool = True,
    progress: Callable[[int, int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[ImageOutcome]:
    """Segment ``sources`` one after another with one :class:`~nucleoseg.inference.segment.
    Segmenter`, overlapping reading and finishing with the model.

    Parameters
    ----------
    seg : Segmenter or callable
        The model and its settings, or a function that loads them: it is called once the
        first image is being read, so loading the model and reading overlap.
    sources : sequence
        Anything ``read`` understands (file paths, arrays, ...).
    read : callable
        ``read(source) -> (H, W, 3) uint8`` image; runs in a reader thread.
    save : callable, optional
        ``save(index, image, labels) -> Any``, e.g. write the labels file; runs in the
        finishing thread right after post-processing.
    overlap : bool
        False runs every stage in the calling thread, one image at a time (the reference).
    progress : callable, optional
        ``progress(index, done, total, message)`` for the tiles of the image in the model.
    should_stop : callable, optional
        Polled between tile batches; True raises
        :class:`~nucleoseg.inference.predict.Cancelled` once the image being finished is
        saved (outcomes already yielded stay valid).

    Yields
    ------
    ImageOutcome
        One per source, in input order.
    """
    n = len(sources)
    load = None if isinstance(seg, Segmenter) else seg

    def predict(i: int, image: np.ndarray) -> np.ndarray:
        report = None if progress is None else (lambda d, t, m: progress(i, d, t, m))
        return run(seg.probabilities(image, should_stop), report)

    def finish(i: int, image: np.ndarray, probs: np.ndarray) -> ImageOutcome:
        labels = probabilities_to_labels(probs, seg.params)
        return ImageOutcome(i, labels, save(i, image, labels) if save is not None else None)

    def attempt(func: Callable[..., Any], *args: Any) -> tuple[Any, Exception | None]:
        try:
            return func(*args), None
        except Cancelled:
            raise
        except Exception as exc:  # one bad image must not end a batch
            return None, exc

    if not overlap:
        seg = seg if load is None else load()
        for i, source in enumerate(sources):
            image, err = attempt(read, source)
            probs, err = (None, err) if err else attempt(predict, i, image)
            done, err = (None, err) if err else attempt(finish, i, image, probs)
            yield done if done is not None else ImageOutcome(i, error=err)
        return

    def finish_safely(i: int, image: np.ndarray, probs: np.ndarray) -> ImageOutcome:
        outcome, err = attempt(finish, i, image, probs)
        return outcome if outcome is not None else ImageOutcome(i, error=err)

    with ThreadPoolExecutor(1, thread_name_prefix="nucleoseg-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="nucleoseg-finish") as finisher:
        reading: Future | None = reader.submit(read, sources[0]) if n else None
        finishing: Future | None = None
        try:
            seg = seg if load is None else load()
            for i in range(n):
                assert reading is not None
                image, err = attempt(reading.result)
                # start reading the next image before the model takes this one
                reading = reader.submit(read, sources[i + 1]) if i + 1 < n else None
                probs, err = (None, err) if err else attempt(predict, i, image)
                if finishing is not None:  # at most one image being finished
                    yield finishing.result()
                    finishing = None
                if err is not None:
                    yield ImageOutcome(i, error=err)
                    continue
                finishing = finisher.submit(finish_safely, i, image, probs)
                del image, probs
            if finishing is not None:
                yield finishing.result()
                finishing = None
        except Cancelled:
            if finishing is not None:  # the previous image is finished and saved first
                outcome, finishing = finishing.result(), None
                yield outcome
            raise
        finally:
            if reading is not None:
                reading.cancel()
            if finishing is not None:  # abandoned by the caller: let the save complete
                finishing.result()
