"""Readers and writers: pure functions over arrays and paths (no Qt, no Keras)."""

from .images import ImageError, open_image, to_rgb_uint8

__all__ = ["ImageError", "open_image", "to_rgb_uint8"]
