"""`cache_status`: what changed in the dataset since its cache was built, without writing anything.

It answers the question a user asks before `ctslice preprocess`: would that run do anything? It classifies
subjects exactly as the preprocess run will (`fingerprint.compare`), so the two can never disagree: a file that
was only touched (same bytes, new time) is unchanged.

The settings check needs the dataset, not only the manifest: the settings hash covers the label map, which is
derived from the mask names found in the dataset, so a new structure changes it even with the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache.label_map import label_map_to_json
from ..cache.manifest import Manifest, read_manifest
from ..cache.settings import settings_diff
from ..errors import CacheError
from .fingerprint import Changes, compare
from .plan import cache_splits
from .sources import discover
from .split import split_moves


@dataclass
class CacheStatus:
    cache: Path
    data: Path
    changes: Changes
    """The subjects classified exactly as the next preprocess will (fingerprint.compare)."""
    changed_settings: dict[str, list[Any]] = field(default_factory=dict)
    """What differs from the cache's settings (manifest.settings_diff): the next preprocess rebuilds everything."""
    retry: list[str] = field(default_factory=list)
    """Added subjects that failed in the cache's last run: the next preprocess tries them again."""
    split_moves: list[str] = field(default_factory=list)
    """'demo0000 train -> val': cached subjects the next preprocess puts into another split (a changed meta.csv)."""

    @property
    def up_to_date(self) -> bool:
        return self.changes.up_to_date and not self.split_moves

    def to_json(self) -> dict[str, Any]:
        c = self.changes
        return {"cache": str(self.cache), "data": str(self.data), "added": c.added, "removed": c.removed,
                "modified": c.modified, "unchanged": c.unchanged, "touched": sorted(c.touched),
                "retry": self.retry, "split_moves": self.split_moves, "settings_changed": c.settings_changed,
                "changed_settings": self.changed_settings, "up_to_date": self.up_to_date}


def dataset_folder(cache: Path, manifest: Manifest, data: Path | None = None) -> Path:
    """`data` if given, else the dataset folder the cache was built from."""
    if data is not None:
        return Path(data)
    if not manifest.dataset.get("root"):
        raise CacheError(f"{cache}: the manifest does not say which dataset it was built from; pass --data")
    return Path(manifest.dataset["root"])


def cache_status(cache: Path, data: Path | None = None) -> CacheStatus:
    """Compare the dataset (default: the folder the cache was built from) with the cache's manifest."""
    manifest = read_manifest(cache)
    data = dataset_folder(cache, manifest, data)
    dataset = discover(data)
    labels = label_map_to_json(dataset.label_map)
    current = manifest.settings.for_labels(labels)  # the cache's settings over this dataset's label map
    changes = compare(dataset, manifest, current.hash)
    staying = set(manifest.subjects) - set(changes.removed) | set(changes.added)
    moves = split_moves(manifest.split_of(), cache_splits(staying, current, dataset, manifest))
    return CacheStatus(cache=Path(cache), data=data, changes=changes,
                       changed_settings=settings_diff(manifest.settings, manifest.label_map, current, labels),
                       retry=[sid for sid in changes.added if sid in manifest.failed], split_moves=moves)
