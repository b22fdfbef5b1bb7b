"""The inverse of the cache geometry by its recorded matrix alone (`Geometry.cache_to_original`), as a reference
for the tests: a cached label volume mapped back to the original grid must give the original labels where the
spacing was kept and nothing was cropped. Evaluation maps back its own way (evaluate/original_space.py)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ctslice.imaging.geometry import Geometry


def labels_to_original(cached: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Inverse mapping: cached label volume -> the original voxel grid (nearest neighbour; exact when the
    spacing was kept and nothing was cropped). Voxels outside the cached field of view get 0."""
    original_to_cache = np.linalg.inv(np.asarray(geometry.cache_to_original))
    # Exact integer coordinates would round to the right voxel anyway; rounding the matrix removes float dust.
    original_to_cache = np.where(np.abs(original_to_cache - np.rint(original_to_cache)) < 1e-9,
                                 np.rint(original_to_cache), original_to_cache)
    return ndimage.affine_transform(
        cached, original_to_cache, output_shape=geometry.original_shape, order=0, mode="constant", cval=0
    )
