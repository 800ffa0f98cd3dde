"""The one way the project compiles its kernels (numba), shared by post-processing
(:mod:`nucleoseg.inference.flood_kernels`) and classifying (:mod:`nucleoseg.classify.kernels`)."""

from __future__ import annotations

from numba import njit


def kernel(signature: str | None = None, **options):
    """``numba.njit(signature, nogil=True, cache=True)``; without caching where numba finds
    no writable cache folder (it then compiles in every process instead of failing)."""

    def decorate(func):
        try:
            return njit(signature, nogil=True, cache=True, **options)(func)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return njit(signature, nogil=True, **options)(func)

    return decorate
