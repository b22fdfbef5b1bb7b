"""Sections of the one typed configuration: how datasets become the cache ([preprocess]) and how training
and evaluation read it ([loader])."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import CtsliceError

MIN_SPACING = 0.01
"""mm: below it (a typo, a hand-edited checkpoint) resampling a CT would need tens of GB per slice."""


@dataclass(frozen=True)
class PreprocessConfig:
    """How NIfTI subjects become cached slices. Fields marked (content) change the cache's arrays:
    changing one rebuilds the whole cache; the others do not."""

    spacing: float | None = 1.5
    """(content) In-plane target spacing in mm; None ('native') keeps each subject's own spacing.
    1.5 mm is TotalSegmentator's native resolution."""

    size: int = 512
    """(content) Slice size in pixels (size x size) after resampling, centre-padded or cropped.
    512 px at 1.5 mm covers 768 mm, wider than any CT field of view, so nothing is cropped by default."""

    hu_min: int = -1024
    """(content) Lower clip of CT values in Hounsfield units (air)."""

    hu_max: int = 3071
    """(content) Upper clip in HU: the 12-bit CT range; dense bone and metal above it saturate."""

    val_fraction: float = 0.2
    """Fraction of subjects assigned to 'val' when the dataset has no official split."""

    seed: int = 0
    """Seed of the subject-level split rule."""

    workers: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    """Local dask worker processes (one subject each at a time). 0 runs in this process without dask. A run
    starts no more than the cores available, the subjects to process and the memory allow (preprocess/workers.py)."""

    dask_scheduler: str | None = None
    """Address (tcp://host:8786) or scheduler-file path of an existing dask.distributed cluster.
    The cache folder must then be on a filesystem all workers share."""

    def content_settings(self) -> dict[str, Any]:
        """The settings that determine the cached arrays (hashed into the manifest)."""
        return {"spacing": self.spacing, "size": self.size, "hu_min": self.hu_min, "hu_max": self.hu_max}

    def split_settings(self) -> dict[str, Any]:
        return {"val_fraction": self.val_fraction, "seed": self.seed}

    def validate(self) -> None:
        if self.spacing is not None and not self.spacing > 0:
            raise CtsliceError(f"spacing must be positive mm or 'native', got {self.spacing}")
        if self.spacing is not None and self.spacing < MIN_SPACING:  # (a resampled slice would not fit in memory)
            raise CtsliceError(f"spacing must be at least {MIN_SPACING} mm, got {self.spacing}")
        if not 16 <= self.size <= 4096:
            raise CtsliceError(f"size must be between 16 and 4096 pixels, got {self.size}")
        if not -32768 <= self.hu_min < self.hu_max <= 32767:
            raise CtsliceError(f"need -32768 <= hu_min < hu_max <= 32767, got {self.hu_min}, {self.hu_max}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise CtsliceError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.workers < 0:
            raise CtsliceError(f"workers must be >= 0, got {self.workers}")


@dataclass(frozen=True)
class LoaderConfig:
    """How training and evaluation read the cache."""

    batch_size: int = 16
    """Slices per batch."""

    workers: int = 4
    """DataLoader worker processes (0 reads in the training process)."""

    pin_memory: bool = True
    """Page-locked batches, so host-to-GPU copies are asynchronous (ignored without CUDA)."""

    prefetch_factor: int = 4
    """Batches each worker prepares ahead."""

    persistent_workers: bool = True
    """Keep workers (and their open cache files) alive between epochs."""

    oversample_fraction: float = 0.5
    """Share of each batch drawn from slices containing a structure chosen uniformly among those present,
    so small structures are seen; the rest is drawn uniformly from all slices."""

    context_slices: int = 1
    """2.5D input: k neighbouring slices as channels (odd; 1 = plain 2D), clamped at the volume edges."""

    seed: int = 0
    """Seed of the sampler (and of worker RNGs)."""

    def validate(self) -> None:
        if self.batch_size < 1:
            raise CtsliceError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise CtsliceError(f"loader workers must be >= 0, got {self.workers}")
        if not 0.0 <= self.oversample_fraction <= 1.0:
            raise CtsliceError(f"oversample_fraction must be in [0, 1], got {self.oversample_fraction}")
        if self.context_slices < 1 or self.context_slices % 2 == 0:
            raise CtsliceError(f"context_slices must be odd and >= 1, got {self.context_slices}")


