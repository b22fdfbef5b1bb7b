"""Subject-level train/val/test split. Pure functions.

Precedence for each subject: the dataset's official split (meta.csv), then the split it already has in the cache,
then the rule: a subject goes to 'val' when the hash of (seed, its id) falls below val_fraction. The rule looks at
no other subject, so adding subjects never moves an existing one, and the same seed always gives the same split.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..cache.folds import unit_hash as _unit_hash
from .sources import SPLITS


def rule_split(subject_id: str, seed: int, val_fraction: float) -> str:
    return "val" if _unit_hash(seed, subject_id) < val_fraction else "train"


def assign_splits(subject_ids: Iterable[str], seed: int, val_fraction: float,
                  official: Mapping[str, str] | None = None, previous: Mapping[str, str] | None = None
                  ) -> dict[str, str]:
    """Subject id -> 'train' | 'val' | 'test'.

    Tiny datasets: if the rule leaves 'val' empty although val_fraction > 0 and there are at least two subjects
    assigned by the rule, the one with the lowest hash goes to 'val' (and, once in the cache, stays there)."""
    official, previous = official or {}, previous or {}
    result: dict[str, str] = {}
    by_rule = []
    for sid in sorted(set(subject_ids)):
        if sid in official:
            result[sid] = official[sid]
        elif sid in previous:
            result[sid] = previous[sid]
        else:
            result[sid] = rule_split(sid, seed, val_fraction)
            by_rule.append(sid)
    if val_fraction > 0 and len(by_rule) >= 2 and "val" not in result.values():
        result[min(by_rule, key=lambda sid: _unit_hash(seed, sid))] = "val"
    return result


def splits_to_lists(assignment: Mapping[str, str]) -> dict[str, list[str]]:
    return {name: sorted(sid for sid, s in assignment.items() if s == name) for name in SPLITS}


def split_moves(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """'demo0000 train -> val' for each subject in both assignments whose split differs."""
    return [f"{sid} {old[sid]} -> {new[sid]}" for sid in sorted(set(old) & set(new)) if old[sid] != new[sid]]
