"""Label maps and the merging of per-structure masks into one label volume. Pure functions.

Index 0 is background. Where masks overlap, the structure with the later index wins (TotalSegmentator's rule),
which `merge_mask` gets for free by being applied in index order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from importlib import resources

import numpy as np

MAX_LABELS = 255  # labels are stored as uint8


@cache
def official_total_classes() -> tuple[str, ...]:
    """The 117 TotalSegmentator v2 'total' class names in official index order (index 1 first)."""
    text = resources.files(__package__).joinpath("total_v2_classes.json").read_text()
    by_index = json.loads(text)
    return tuple(by_index[str(i)] for i in range(1, len(by_index) + 1))


def build_label_map(names: Iterable[str], official: tuple[str, ...] | None = None) -> dict[int, str]:
    """Index -> name, 0 = background, for a dataset whose masks carry these structure names.

    - exactly the official 117 names: the official indices;
    - a subset of them: the official relative order, renumbered 1..K (so a demo dataset with 12 structures
      gets 12 channels, and overlaps resolve as they would with official indices);
    - any other names: the known ones in official order first, then the others sorted alphabetically.
    """
    official = official_total_classes() if official is None else official
    wanted = set(names) - {"background"}
    rank = {name: i for i, name in enumerate(official)}
    ordered = sorted(wanted & rank.keys(), key=rank.__getitem__) + sorted(wanted - rank.keys())
    if len(ordered) > MAX_LABELS:
        raise ValueError(f"{len(ordered)} structures do not fit in uint8 labels (at most {MAX_LABELS})")
    return {0: "background", **{i: name for i, name in enumerate(ordered, start=1)}}


def merge_mask(label: np.ndarray, mask: np.ndarray, index: int, overlapped: np.ndarray | None = None) -> int:
    """Write `index` into `label` (in place) where `mask` is set; return how many voxels it took over from
    an earlier structure. Called once per structure in increasing index order, so the later index wins.
    With `overlapped` (bool, label's shape, updated in place): count only voxels no earlier mask overlapped, so
    that the sum over all masks is the number of voxels in more than one mask, each counted once."""
    # Whole-array passes (compare, logical_and, copyto) rather than boolean fancy indexing: ~15x faster on
    # 512x512x300 masks, measured (0.17 s -> 0.01 s per mask), which matters with 117 masks per subject.
    # A 0/1 uint8 mask (checked by is_binary) is a valid bool array already: no extra pass to convert it.
    where = mask.view(bool) if mask.dtype in (np.uint8, np.int8) else mask.astype(bool, copy=False)
    both = np.logical_and(label, where)
    overlap = int(np.count_nonzero(both))
    if overlap and overlapped is not None:  # extra passes only for the few masks that overlap anything
        overlap -= int(np.count_nonzero(np.logical_and(both, overlapped)))
        np.logical_or(overlapped, both, out=overlapped)
    np.copyto(label, np.uint8(index), where=where)
    return overlap


def mask_extent(mask: np.ndarray) -> tuple[bool, tuple[slice, slice, slice] | None]:
    """(whether every voxel is 0 or 1, the box holding the mask's nonzero voxels or None when it has none), so
    that `merge_mask` runs on that box alone: merging there is the same as merging the whole volume, since the mask
    is 0 outside it. The box spans all of the first (fastest-varying) axis and the occupied range of the others.

    One pass over a Fortran-ordered 1-byte mask, as NIfTI masks come: each contiguous row of the first axis is
    OR-ed into one value, 8 voxels per uint64 word (a bit above bit 0 set in any byte means a value > 1); other
    arrays get `is_binary` and the whole volume as their box."""
    if not (mask.ndim == 3 and mask.dtype.kind in "ui" and mask.dtype.itemsize == 1 and mask.flags.f_contiguous):
        return is_binary(mask), (slice(None),) * 3
    nx, ny, nz = mask.shape
    word = next(w for w in (np.uint64, np.uint32, np.uint16, np.uint8) if nx % np.dtype(w).itemsize == 0)
    rows = mask.T.reshape(nz * ny, nx).view(word)  # (z, y) rows of x voxels: a view, since mask.T is C-ordered
    ored = np.bitwise_or.reduce(rows, axis=1).reshape(nz, ny)
    above_bit_0 = word(int.from_bytes(b"\xfe" * np.dtype(word).itemsize, "little"))
    if np.any(ored & above_bit_0):
        return False, None
    occupied = ored != 0
    zs, ys = np.flatnonzero(occupied.any(axis=1)), np.flatnonzero(occupied.any(axis=0))
    if zs.size == 0:
        return True, None
    return True, (slice(None), slice(int(ys[0]), int(ys[-1]) + 1), slice(int(zs[0]), int(zs[-1]) + 1))


def is_binary(mask: np.ndarray) -> bool:
    """True when every voxel is 0 or 1 (checked without building a full unique() of a large volume)."""
    if mask.dtype == bool:
        return True
    if np.issubdtype(mask.dtype, np.unsignedinteger):  # one pass: the common case, uint8 masks
        return bool(mask.max(initial=0) <= 1)
    if np.issubdtype(mask.dtype, np.integer):
        return bool(mask.min(initial=0) >= 0 and mask.max(initial=0) <= 1)
    return bool(np.all((mask == 0) | (mask == 1)))


def slice_statistics(label: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per slice of a (slices, H, W) label volume: foreground voxel count (int32) and which labels are present
    (bool, slices x n_labels, column 0 = background); and voxels per label over the volume (int64).
    One bincount per slice: no per-class passes."""
    n = label.shape[0]
    counts = np.zeros((n, n_labels), dtype=np.int64)
    for z in range(n):
        counts[z] = np.bincount(label[z].ravel(), minlength=n_labels)[:n_labels]
    foreground = (counts[:, 1:].sum(axis=1)).astype(np.int32)
    return foreground, counts > 0, counts.sum(axis=0)
