"""Tiled inference and post-processing (no Qt)."""
