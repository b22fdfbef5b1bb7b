"""Subject-level cross-validation folds of a cache's train+val subjects. Pure functions.

A subject's fold is a function of its id alone (a hash, salted apart from the train/val split rule so that the
two are independent): adding subjects never moves an existing one, and the same ids always give the same folds.
The cache's test subjects are never in a fold.

    fold_splits(manifest.splits, fold=0, folds=5)   # {"train": [...], "val": [fold 0's subjects], "test": [...]}
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from ..errors import CtsliceError

FOLD_SALT = "fold"
"""Hashed with each id: fold assignment does not depend on the training seed (folds trained with several seeds
share their subjects) nor on the split rule's seed."""


def unit_hash(salt: object, subject_id: str) -> float:
    """A number in [0, 1) fixed by (salt, id) alone (the split rule's and the folds' shared hash)."""
    digest = hashlib.sha256(f"{salt}:{subject_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def fold_of(subject_id: str, folds: int) -> int:
    return int(unit_hash(FOLD_SALT, subject_id) * folds)


def assign_folds(subject_ids: Iterable[str], folds: int) -> dict[str, int]:
    """Subject id -> its fold in 0 .. folds-1."""
    return {sid: fold_of(sid, folds) for sid in sorted(set(subject_ids))}


def fold_splits(splits: Mapping[str, list[str]], fold: int, folds: int) -> dict[str, list[str]]:
    """The cache's splits regrouped for fold `fold` of `folds`: its train+val subjects in that fold are 'val', the
    others 'train'; 'test' as it was. CtsliceError when the fold or its training part is empty (too few subjects
    for that many folds: a hash does not balance tiny datasets)."""
    if not 0 <= fold < folds:
        raise CtsliceError(f"fold {fold} does not exist with {folds} folds (folds are 0 .. {folds - 1})")
    pool = [*splits.get("train", []), *splits.get("val", [])]
    assigned = assign_folds(pool, folds)
    val = sorted(sid for sid, f in assigned.items() if f == fold)
    train = sorted(sid for sid, f in assigned.items() if f != fold)
    if not val or not train:
        sizes = [sum(1 for f in assigned.values() if f == k) for k in range(folds)]
        raise CtsliceError(f"fold {fold} of {folds} leaves {'no validation' if not val else 'no training'} subjects "
                           f"({len(assigned)} train+val subjects in the cache, per fold: "
                           f"{', '.join(map(str, sizes))}); use fewer folds")
    return {"train": train, "val": val, "test": sorted(splits.get("test", []))}
