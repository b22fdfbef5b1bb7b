"""How many local dask workers help: no more than the cores, the subjects to process, and the memory allows.

More workers than cores only compete for them, and each worker holds one subject in memory: on 2 cores,
`--workers 1000` once started 1000 processes and took 17 GB without finishing.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

# Measured (README, Parallelism): a worker peaks at ~250 MB of loaded libraries plus ~10 bytes per voxel of the
# subject it processes (CT, merged labels, resampled copies).
WORKER_BASE_BYTES = 250 * 2**20
BYTES_PER_VOXEL = 10


def worker_bytes(ct_path: Path) -> int:
    """Estimated peak memory of a worker processing the subject of this CT (from its header only)."""
    try:
        voxels = int(np.prod(nib.load(ct_path).shape[:3]))
    except Exception:  # an unreadable CT fails in its worker with a proper message; estimate nothing here
        voxels = 0
    return WORKER_BASE_BYTES + BYTES_PER_VOXEL * voxels


def cap_workers(requested: int, cores: int, subjects: int, available_bytes: int, per_worker_bytes: int
                ) -> tuple[int, str | None]:
    """(workers to start, why fewer than requested or None). Always at least 1 when requested >= 1."""
    limits = [(cores, f"{cores} core(s) available"), (subjects, f"{subjects} subject(s) to process"),
              (max(1, available_bytes // max(per_worker_bytes, 1)),
               f"{available_bytes / 2**30:.1f} GiB available at ~{per_worker_bytes / 2**30:.2f} GiB per worker")]
    workers, why = requested, None
    for limit, reason in limits:
        if limit < workers:
            workers, why = max(1, limit), reason
    return workers, (f"--workers {requested} capped to {workers}: {why}" if why else None)


def available_resources() -> tuple[int, int]:
    """(cores this process may run on, bytes of memory available)."""
    import psutil

    return len(os.sched_getaffinity(0)), int(psutil.virtual_memory().available)
