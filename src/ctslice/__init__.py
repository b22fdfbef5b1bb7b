"""ctslice: NIfTI CT segmentation datasets -> a self-describing zarr slice cache -> fast 2D training."""

__version__ = "0.1.0"
