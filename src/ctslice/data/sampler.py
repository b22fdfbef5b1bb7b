"""Class-aware oversampling: part of every batch comes from slices that show a structure chosen uniformly among
those present, so a small structure (an adrenal gland in a few slices) is seen as often as the liver.

`epoch_order` is the whole rule, pure numpy; `ClassAwareSampler` only adds the torch Sampler protocol and
`set_epoch`. The order is a function of (seed, epoch, sizes) alone, so every rank of a distributed run computes
the same global order and takes its own disjoint share, like DistributedSampler.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from torch.utils.data import Sampler


def oversampled_positions(length: int, batch_size: int, fraction: float) -> np.ndarray:
    """bool (length,): which positions of a rank's epoch are class-aware draws. Batch b covers positions
    [b*B, (b+1)*B) and gets floor(f*end) - floor(f*start) of them: floor or ceil of f*B in every batch, and
    exactly floor(f*length) over the epoch."""
    starts = np.arange(0, length, batch_size)
    ends = np.minimum(starts + batch_size, length)
    # (the epsilon keeps products like 0.29 * 100 = 28.999... from rounding down)
    counts = np.floor(fraction * ends + 1e-9).astype(np.int64) - np.floor(fraction * starts + 1e-9).astype(np.int64)
    offset = np.arange(length) % batch_size
    return offset < counts[np.arange(length) // batch_size]


class ClassPools(NamedTuple):
    """The rows showing each structure present in a split (label columns 1..): structure i's rows are
    flat[starts[i]:starts[i] + counts[i]]."""

    flat: np.ndarray
    starts: np.ndarray
    counts: np.ndarray


def class_pools(present: np.ndarray) -> ClassPools:
    """Pools from a split's (slices, labels) `present` array. One nonzero() over the whole array rather than one
    scan per column (a strided column of a row-major array is ~6x slower to scan); computed once per sampler."""
    rows, cols = np.nonzero(present[:, 1:])
    flat = rows[np.argsort(cols, kind="stable")].astype(np.int64)
    per_column = np.bincount(cols, minlength=present.shape[1] - 1)
    column_starts = np.concatenate([[0], np.cumsum(per_column)[:-1]]).astype(np.int64)
    structures = np.flatnonzero(per_column)
    return ClassPools(flat, column_starts[structures], per_column[structures].astype(np.int64))


def epoch_order(num_items: int, pools: ClassPools, *, batch_size: int, fraction: float, seed: int, epoch: int,
                num_samples: int | None = None, num_replicas: int = 1, rank: int = 0) -> np.ndarray:
    """Item indices (0..num_items-1, the split's slices) that `rank` reads in `epoch`.

    Each rank reads ceil(num_samples / num_replicas) items (num_samples defaults to num_items).
    In every batch of batch_size consecutive items, a share `fraction` (rounded per batch, exact over the
    epoch) are class-aware draws: a structure uniformly among those present in the split, then a slice showing
    it uniformly (with replacement). The others walk through a fresh permutation of all slices, so they
    repeat no slice before every slice was read once. Ranks get disjoint positions of one global order; its
    uniform part is one permutation, so no slice goes to two ranks (beyond the few repeats that pad an epoch
    not divisible by num_replicas, as DistributedSampler pads).
    """
    n = num_items
    if n == 0:
        raise ValueError("cannot sample from an empty split")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")
    per_rank = math.ceil((n if num_samples is None else num_samples) / num_replicas)
    rng = np.random.default_rng([seed, epoch])
    flat, starts, counts = pools
    mask = oversampled_positions(per_rank, batch_size, fraction if len(counts) else 0.0)
    n_over = int(mask.sum())
    n_uniform = per_rank - n_over

    # Global draws, rank-major: rank r's uniform items are uniform[r], its class-aware ones over[r].
    uniform = np.concatenate([rng.permutation(n) for _ in range(math.ceil(n_uniform * num_replicas / n) or 1)])
    uniform = uniform[:n_uniform * num_replicas].reshape(num_replicas, n_uniform)
    classes = rng.integers(len(counts), size=(num_replicas, n_over)) if n_over else np.zeros((num_replicas, 0), int)
    picks = rng.random((num_replicas, n_over))
    over = flat[starts[classes] + (picks * counts[classes]).astype(np.int64)] if n_over else classes
    order = np.empty((num_replicas, per_rank), dtype=np.int64)
    order[:, mask] = over
    order[:, ~mask] = uniform
    # Shuffle within each batch, so class-aware draws are not always first: sorting by batch number plus a random
    # key in [0, 1) keeps the batches in place and permutes inside each.
    keys = np.arange(per_rank) // batch_size + rng.random((num_replicas, per_rank))
    return np.take_along_axis(order, np.argsort(keys, axis=1), axis=1)[rank]


class ClassAwareSampler(Sampler[int]):
    """Torch sampler over `epoch_order`. Call `set_epoch(e)` before each epoch (as with DistributedSampler).

    Example: ClassAwareSampler(dataset.present, batch_size=16, fraction=0.5, seed=0, num_replicas=8, rank=3)
    """

    def __init__(self, present: np.ndarray, batch_size: int, fraction: float = 0.5, seed: int = 0,
                 num_samples: int | None = None, num_replicas: int = 1, rank: int = 0):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")
        present = np.asarray(present, dtype=bool)
        self.num_items = len(present)
        self.pools = class_pools(present)
        self.batch_size, self.fraction, self.seed = batch_size, fraction, seed
        self.num_samples = self.num_items if num_samples is None else num_samples
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Sample `epoch`'s order from its item `start` on: a run resumed mid-epoch skips what it already read."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.num_replicas)

    def __iter__(self):
        order = epoch_order(self.num_items, self.pools, batch_size=self.batch_size, fraction=self.fraction,
                            seed=self.seed, epoch=self.epoch, num_samples=self.num_samples,
                            num_replicas=self.num_replicas, rank=self.rank)
        return iter(order[self.start:].tolist())
