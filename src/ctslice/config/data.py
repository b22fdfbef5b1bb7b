"""Sections of the one typed configuration: how datasets become the cache ([preprocess]) and how training
and evaluation read it ([loader])."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .checks import SEED, Limit, OneOf, Relations, check_section

LAYOUTS = ("slices", "shards")
"""How a subject's image and label arrays lie in the cache (README "Cache format"): "slices", one chunk file per
slice (local and shared disks); "shards", one zarr v3 shard file per array holding every slice as an inner chunk
(object storage: one object per array instead of one per slice, read with range requests)."""


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

    layout: str = "slices"
    """(content) How the arrays lie on disk: "slices" (a file per slice) or "shards" (a file per array, slices as
    its inner chunks); one of LAYOUTS. The same numbers either way, but a change writes every subject again."""

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
        return {"spacing": self.spacing, "size": self.size, "hu_min": self.hu_min, "hu_max": self.hu_max,
                "layout": self.layout}

    def split_settings(self) -> dict[str, Any]:
        return {"val_fraction": self.val_fraction, "seed": self.seed}

    # The rules of the fields above (checks.py). Not annotated, so that they are class attributes, not dataclass
    # fields: code that lists a section's settings (asdict, __dataclass_fields__) never sees them.
    SECTION = "preprocess"
    LIMITS = {
        # 0.01 mm is finer than any CT; at 20 mm a body is a few pixels wide (and inf made an all-background cache)
        "spacing": Limit(0.01, 20, unit="mm"),
        "size": Limit(16, 4096),
        "hu_min": Limit(-32768, 32767),
        "hu_max": Limit(-32768, 32767),
        "val_fraction": Limit(0, 1, high_open=True),
        "seed": SEED,
        "workers": Limit(0, 4096),
        "layout": OneOf(LAYOUTS),
    }
    NONE_WORDS = {"spacing": "'native'", "dask_scheduler": "no cluster"}

    def relations(self) -> Relations:
        if not self.hu_min < self.hu_max:
            yield ("hu_min", "hu_max"), f"hu_min must be below hu_max, got {self.hu_min} and {self.hu_max}"

    def validate(self) -> None:
        """Every field against its rule in LIMITS, then the rules between fields; raises ConfigError."""
        check_section(self)


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

    SECTION = "loader"
    LIMITS = {
        "batch_size": Limit(1, 4096),
        "workers": Limit(0, 1024),
        "prefetch_factor": Limit(1, 64),  # torch refuses 0 with workers (a traceback before)
        "oversample_fraction": Limit(0, 1),
        "context_slices": Limit(1, 63),
        "seed": SEED,
    }

    def relations(self) -> Relations:
        if self.context_slices % 2 == 0:
            yield ("context_slices",), f"context_slices must be odd (a middle slice), got {self.context_slices}"

    def validate(self) -> None:
        """Every field against its rule in LIMITS, then the rules between fields; raises ConfigError."""
        check_section(self)
