"""How much memory one subject needs, estimated from its CT's header before anything is decoded, so that a subject
that cannot fit fails at once, named with its file, instead of driving a worker out of memory.

Measured: one 512x512x97 demo subject peaked at ~10 bytes a voxel above the loaded libraries (README "Parallelism":
the CT as read, clipped int16, the label volume, one mask at a time and the resampled copies). The estimate takes
12, plus 8 when the CT is scaled (slope/intercept: nibabel returns float64).
"""

from __future__ import annotations

import sys

import numpy as np
import psutil

from ..errors import InputError

BYTES_PER_VOXEL = 12
SCALED_EXTRA = 8


def estimate_bytes(img) -> int:
    """Peak bytes to process a subject whose CT has this header."""
    voxels = int(np.prod(img.shape, dtype=np.int64))
    slope, inter = img.dataobj.slope, img.dataobj.inter
    scaled = not (slope in (None, 1) and inter in (None, 0))
    return voxels * (BYTES_PER_VOXEL + img.get_data_dtype().itemsize + (SCALED_EXTRA if scaled else 0))


def available_bytes() -> int:
    """What this process may still use: the dask worker's memory limit if it runs in one (less what it holds),
    else the machine's available memory."""
    available = psutil.virtual_memory().available
    distributed = sys.modules.get("distributed")
    if distributed is None:  # not in a dask worker, which has it loaded (importing it here would cost seconds)
        return available
    try:
        limit = distributed.get_worker().memory_manager.memory_limit
    except (ValueError, AttributeError):  # not in a dask worker
        return available
    if not limit:
        return available
    return min(available, int(limit - psutil.Process().memory_info().rss))


def check_fits(img, subject: str, name: str) -> None:
    need, have = estimate_bytes(img), available_bytes()
    if need > have:
        raise InputError(subject, name, f"needs about {need / 1e9:.1f} GB to process ({'x'.join(map(str, img.shape))} "
                                        f"voxels), more than the {have / 1e9:.1f} GB available to this worker")


THREADS_IN_ESTIMATE = 2  # the 10 bytes a voxel were measured with a subject on 2 threads


def affordable_threads(img, wanted: int) -> int:
    """At most `wanted` threads for a subject, fewer when memory is short: each thread beyond the estimate's two
    holds one more decoded mask (1 byte a voxel) while it waits for its turn to be merged."""
    if wanted <= THREADS_IN_ESTIMATE:
        return wanted
    spare = available_bytes() - estimate_bytes(img)
    voxels = max(1, int(np.prod(img.shape, dtype=np.int64)))
    return int(max(THREADS_IN_ESTIMATE, min(wanted, THREADS_IN_ESTIMATE + spare // voxels)))


RESAMPLED_BYTES_PER_PIXEL = 4 + 1 + 4  # float32 image, uint8 labels, and the float32 probabilities mapped back


def check_resampling_fits(geometry, spacing_mm, subject: str, name: str | None) -> None:
    """The in-plane resampling makes (slices, rows, columns) before the crop to the cache's slice size: a header
    whose voxel size is far too large (metres written as mm, 10^6 times too large) asks for petabytes. Refused
    here, naming the file and its voxel size, instead of failing in numpy (or swapping) later."""
    rows, cols = geometry.resampled_shape
    need = int(geometry.shape[0]) * int(rows) * int(cols) * RESAMPLED_BYTES_PER_PIXEL
    have = available_bytes()
    if need > have:
        voxel = " x ".join(f"{v:g}" for v in spacing_mm)
        raise InputError(subject, name, f"resampling to the cache's spacing gives {rows} x {cols} px slices "
                                        f"({need / 1e9:.3g} GB, {have / 1e9:.1f} GB available): the voxel size in "
                                        f"its header ({voxel} mm) is implausible for a CT; check its units")
