"""Predictions back on the subject's original voxel grid, as nnU-Net does it: the class probabilities are
resampled in-plane (bilinear) and the argmax is taken there. Resampling the argmax by nearest neighbour instead
loses small structures: the real reference subject cached at 4.5 mm and mapped back that way scored a mean Dice of
0.84 (minimum 0.58) with no model error at all.

Preprocessing resamples in-plane only, so this works slice by slice and memory stays at one batch of slices:

    to_plane = PlaneMapper(geometry, device)
    planes = to_plane(probabilities)               # (B, C, H, W) cached slices -> (B, rows, cols) uint8 labels
    volume = to_original(stacked_planes, geometry)  # (slices, rows, cols) -> the original (i, j, k) grid

What it scores against comes from the dataset folder the cache was built from, an `OriginalReference`: evaluation
never reads a dataset itself (the CLI opens one with `ctslice.preprocess.reference.open_reference`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..imaging.geometry import Geometry, from_cache_orientation, in_plane_cache_coordinates


class OriginalReference(Protocol):
    """The original masks of the subjects a cache was built from, merged as preprocessing merges them."""

    @property
    def root(self) -> Path:
        """The dataset folder (recorded in evaluation.json)."""

    def skip_reason(self, subject: str) -> str | None:
        """Why `subject` cannot be scored against the dataset (its files changed since the cache was built, or it
        is gone), or None."""

    def labels(self, subject: str) -> tuple[np.ndarray, Any]:
        """(label volume in label-map indices on the original grid, the CT's nibabel image: header and affine)."""


class PlaneMapper:
    """Cached-slice probabilities -> labels on the original in-plane grid (in the cache orientation)."""

    def __init__(self, geometry: Geometry, device: torch.device | str = "cpu"):
        rows, cols = in_plane_cache_coordinates(geometry)
        h, w = geometry.shape[1:]
        self.exact = _integral_inside(rows, h) and _integral_inside(cols, w)
        if self.exact:  # native spacing, nothing cropped: plain indexing, no interpolation, exact
            self.rows = torch.as_tensor(np.rint(rows).astype(np.int64), device=device)
            self.cols = torch.as_tensor(np.rint(cols).astype(np.int64), device=device)
            return
        # grid_sample's normalised coordinates (align_corners=True: -1 and 1 are the first and last pixel centres).
        y = torch.as_tensor(2 * rows / max(h - 1, 1) - 1, dtype=torch.float32, device=device)
        x = torch.as_tensor(2 * cols / max(w - 1, 1) - 1, dtype=torch.float32, device=device)
        self.grid = torch.stack(torch.meshgrid(y, x, indexing="ij")[::-1], dim=-1).unsqueeze(0)  # (1, ny, nx, 2)

    def __call__(self, probabilities: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) probabilities of cached slices -> (B, ny, nx) uint8 labels on the original plane."""
        if self.exact:
            return probabilities.argmax(1)[:, self.rows][:, :, self.cols].to(torch.uint8)
        out = []
        for p in probabilities.split(1):  # one slice at a time: C x ny x nx floats, not B times that
            # Outside the cached slice (what a crop removed) is background: sample p - e0 with zero padding and add
            # e0 back, which equals padding with pure background probabilities (weights inside sum to 1).
            p = p.float().clone()
            p[:, 0] -= 1
            resampled = F.grid_sample(p, self.grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            resampled[:, 0] += 1
            out.append(resampled.argmax(1).to(torch.uint8))
        return torch.cat(out)


def _integral_inside(coords: np.ndarray, n: int) -> bool:
    return bool(np.all(np.abs(coords - np.rint(coords)) < 1e-6) and coords.min() >= 0 and coords.max() <= n - 1)


def to_original(planes: np.ndarray, geometry: Geometry) -> np.ndarray:
    """(slices, ny, nx) labels in the cache orientation -> a C-contiguous volume on the original (i, j, k) grid."""
    return np.ascontiguousarray(from_cache_orientation(planes, geometry))


class OriginalPlanes:
    """A `LabelFn` for `predict_volumes`: each batch's labels in the cache's space and on the original plane.
    Subjects come one after another, so the sampling grid of only the current subject is kept."""

    def __init__(self, geometries: Mapping[int, Geometry]):
        self.geometries = geometries
        self.subject: int | None = None
        self.mapper: PlaneMapper | None = None

    def __call__(self, subject: int, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if subject != self.subject:
            self.subject, self.mapper = subject, PlaneMapper(self.geometries[subject], logits.device)
        return logits.argmax(1).to(torch.uint8), self.mapper(logits.softmax(1))
