"""Training core: targets, patch sampling, augmentation, losses and the fit loop (no Qt)."""
