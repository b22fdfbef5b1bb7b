"""`CacheSettings`: what a cache was built with, as the manifest keeps it under `settings`.

The content settings (they determine the cached arrays and are hashed, with the label map and the format, into
`hash`) and the split settings (they only assign subjects to train/val/test). On disk:
{"spacing", "size", "hu_min", "hu_max", "hash", "split": {"val_fraction", "seed"}}.

The one conversion to and from the configuration is here: `from_config` (a run's PreprocessConfig and the label
map -> the settings it builds) and `config` (the settings -> a PreprocessConfig, through the configuration's own
checks, since settings read from a file are untrusted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..config import Config, PreprocessConfig, validate_settings
from ..errors import CacheError

ARRAY_FORMAT = 2
"""The format of the cached arrays (the manifest's own is manifest.FORMAT_VERSION); part of the settings hash, so
a new array format rebuilds, while a new bookkeeping format is upgraded without computing anything again."""

CONTENT = ("spacing", "size", "hu_min", "hu_max", "layout")
_DEFAULTS = {"layout": "slices"}
"""Content settings added after caches were written without them: their value in such a cache. A setting at its
default here is also left out of the hash, so that those caches keep their hash and are not rebuilt."""
SPLIT = ("val_fraction", "seed")


@dataclass(frozen=True)
class CacheSettings:
    spacing: float | None
    """In-plane spacing in mm; None: each subject's own."""
    size: int
    """Slice size in pixels."""
    hu_min: int
    hu_max: int
    """The HU clip."""
    layout: str
    """"slices" or "shards" (config.LAYOUTS): how the image and label arrays lie on disk (store.py)."""
    val_fraction: float
    seed: int
    """The split rule's settings: changing them moves subjects between splits, rebuilds nothing."""
    hash: str
    """settings_hash of the content settings and the label map: equal hashes mean the same cached arrays."""

    @classmethod
    def from_config(cls, cfg: PreprocessConfig, label_map: dict[str, str]) -> CacheSettings:
        """What a run with `cfg` builds from a dataset with `label_map` (its JSON form)."""
        return cls(**cfg.content_settings(), **cfg.split_settings(), hash="").for_labels(label_map)

    def for_labels(self, label_map: dict[str, str]) -> CacheSettings:
        """These settings over a dataset with `label_map`: the hash computed for it."""
        return dataclasses.replace(self, hash=settings_hash(self.content(), label_map))

    def config(self, base: PreprocessConfig | None = None, where: str = "the cache's settings") -> PreprocessConfig:
        """The PreprocessConfig these settings describe, over `base`'s other fields (workers, dask scheduler);
        checked by the configuration's rules (a ConfigError naming `where`), since they were read from a file."""
        return validate_settings({"preprocess": self.values()}, where, Config(preprocess=base or PreprocessConfig())
                                 ).preprocess

    def content(self) -> dict[str, Any]:
        """The settings that determine the cached arrays (what `hash` covers with the label map)."""
        return {name: getattr(self, name) for name in CONTENT}

    def split(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SPLIT}

    def values(self) -> dict[str, Any]:
        """Content and split settings, flat as the [preprocess] section names them."""
        return {**self.content(), **self.split()}

    def to_json(self) -> dict[str, Any]:
        return {**self.content(), "hash": self.hash, "split": self.split()}

    @classmethod
    def from_json(cls, data: Any) -> CacheSettings:
        """The settings of a manifest (or a checkpoint's copy of them); CacheError when a key is missing or the
        shape is wrong. The values are checked when they become a configuration (`config`): a cache built with a
        value that a later ctslice no longer accepts still reads."""
        if not isinstance(data, dict) or not isinstance(data.get("split"), dict):
            raise CacheError("settings are not an object with a `split` object")
        found = {**_DEFAULTS, **{k: data[k] for k in CONTENT if k in data}, **{k: data["split"][k] for k in SPLIT
                                                                   if k in data["split"]}}
        missing = [name for name in (*CONTENT, *SPLIT) if name not in found]
        if missing or not isinstance(data.get("hash"), str):
            raise CacheError(f"settings lack {', '.join(missing) or 'a hash'}")
        return cls(**found, hash=data["hash"])


def settings_hash(content: dict[str, Any], label_map: dict[str, str]) -> str:
    """Hash of what determines the cached arrays: the content settings, the label map and the format."""
    hashed = {name: value for name, value in content.items() if _DEFAULTS.get(name, ...) != value}
    blob = json.dumps({"format": ARRAY_FORMAT, "settings": hashed, "labels": label_map}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def settings_diff(old: CacheSettings, old_labels: dict[str, str], new: CacheSettings, new_labels: dict[str, str]
                  ) -> dict[str, list[Any]]:
    """What differs between a cache's content settings and label map and new ones: name -> [old, new]
    (for the label map: [structures before, after] plus the names added and removed), so that a full rebuild
    can say why."""
    before_content = old.content()
    diff = {name: [before_content[name], value] for name, value in new.content().items()
            if before_content[name] != value}
    if old_labels != new_labels:
        before, after = set(old_labels.values()), set(new_labels.values())
        diff["label_map"] = [len(before) - 1, len(after) - 1,
                             {"added": sorted(after - before), "removed": sorted(before - after)}]
    return diff
