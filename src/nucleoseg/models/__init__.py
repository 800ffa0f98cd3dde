"""Model architectures (Keras 3, backend-agnostic) and the weights format.

Import :mod:`nucleoseg.models.registry` for :func:`build` and :data:`MODELS`; this package
itself imports nothing heavy.
"""
