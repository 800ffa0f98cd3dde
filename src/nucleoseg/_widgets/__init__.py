"""napari widgets (Qt glue only; the work happens in the core)."""
