"""Metrics (pure numpy) and the MoNuSeg benchmark."""
