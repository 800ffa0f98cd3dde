"""NucleoSeg: nucleus segmentation for H&E histology (napari plugin, CLI and library).

Importing this package is cheap: it imports neither TensorFlow/Keras nor Qt/napari.
"""

__version__ = "0.1.0"
