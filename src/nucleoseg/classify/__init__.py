"""Nucleus types: per-nucleus features and classifiers (pure numpy + scikit-learn)."""
