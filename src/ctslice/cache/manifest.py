"""CACHE/manifest.json: the one contract between the preprocessing writer and every reader.

Readers take the label map, the split, each subject's geometry and the slice index location from here and never
declare them again. The file is replaced atomically, so it is always either the previous or the next version.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import CacheError, CacheFormatError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
# Written beside the manifest with each manifest write, for people who open the cache by hand; the manifest
# stays the contract.
LABEL_MAP_NAME = "label_map.json"
SPLITS_NAME = "splits.csv"
ZARR_JSON = "zarr.json"
SUBJECTS_DIR = "subjects"


@dataclass
class SubjectRecord:
    """One cached subject, as written by preprocessing (also stored in the subject group's attributes)."""

    id: str
    path: str
    """The subject's zarr group, relative to the cache root."""
    key: str
    """Hash of the settings and the source files' contents: equal keys mean identical cached arrays."""
    files: dict[str, dict[str, Any]]
    """Source file (relative to the dataset root) -> {"size", "mtime_ns", "sha256"}."""
    slices: int
    shape: list[int]
    """Cached (slices, rows, columns)."""
    spacing: list[float]
    """Cached voxel size in mm: (slice thickness, row spacing, column spacing)."""
    geometry: dict[str, Any]
    """preprocess.geometry.Geometry as JSON: maps cached slices back to the original grid."""
    label_voxels: list[int]
    """Voxels per label index in the cached volume (index 0 = background)."""
    overlap_voxels: int = 0
    """Voxels claimed by more than one structure mask (the later index won)."""
    cropped_label_voxels: int = 0
    """Labelled voxels that fell outside the cached slice size (lost to the crop)."""
    missing_structures: list[str] = field(default_factory=list)
    """Label-map names whose mask file this subject lacks: unknown there (not background), so training and
    evaluation leave them out of this subject's loss and metrics."""
    warnings: list[str] = field(default_factory=list)
    header: dict[str, Any] = field(default_factory=dict)
    """The CT's NIfTI header fields a prediction must carry to open over it (preprocess.volume.header_fields:
    qform/sform and their codes, units, pixdim); empty in caches built before it was kept."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SubjectRecord:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Manifest:
    settings: dict[str, Any]
    """Everything that determines the cached arrays, plus its `hash`; split settings under `split`."""
    label_map: dict[str, str]
    """{"0": "background", "1": "spleen", ...}: index -> structure name; model channels follow it."""
    dataset: dict[str, Any] = field(default_factory=dict)
    """Where the data came from: {"root", "layout"}."""
    splits: dict[str, list[str]] = field(default_factory=lambda: {"train": [], "val": [], "test": []})
    subjects: dict[str, SubjectRecord] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    """Subject -> reason, from the latest run."""
    slice_index: str | None = None
    """Folder (relative to the cache) of the consolidated slice index, written with this manifest."""
    totals: dict[str, int] = field(default_factory=dict)
    statistics: dict[str, Any] = field(default_factory=dict)
    """Dataset statistics computed while preprocessing: {"structures": {name: {"subjects", "voxels", "ml"}},
    "intensity": {"mean", "std", "p00_5", "p99_5", "min", "max"} of foreground voxels in HU (nnU-Net's CT
    fingerprint), "spacing": {"slice_thickness": [min, max], "in_plane": [min, max]} of the originals}."""
    format_version: int = FORMAT_VERSION
    ctslice_version: str = __version__
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    @property
    def labels(self) -> dict[int, str]:
        return {int(k): v for k, v in sorted(self.label_map.items(), key=lambda kv: int(kv[0]))}

    @property
    def num_labels(self) -> int:
        """Label-map entries including background: the number of model output channels."""
        return len(self.label_map)

    def split_of(self) -> dict[str, str]:
        return {sid: name for name, ids in self.splits.items() for sid in ids}

    def stored_settings(self) -> dict[str, Any]:
        """The content and split settings the cache was built with, flat ({"spacing", "size", ..., "seed"}):
        the defaults of the cache's next update."""
        flat = {k: v for k, v in self.settings.items() if k not in ("hash", "split")}
        return {**flat, **self.settings.get("split", {})}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["subjects"] = {k: v.to_json() for k, v in sorted(self.subjects.items())}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["subjects"] = {k: SubjectRecord.from_json(v) for k, v in data.get("subjects", {}).items()}
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def settings_hash(content_settings: dict[str, Any], label_map: dict[str, str]) -> str:
    """Hash of what determines the cached arrays: the content settings, the label map and the format."""
    blob = json.dumps({"format": FORMAT_VERSION, "settings": content_settings, "labels": label_map}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def settings_diff(old: Manifest, content_settings: dict[str, Any], label_map: dict[str, str]
                  ) -> dict[str, list[Any]]:
    """What differs between a cache's content settings and label map and new ones: name -> [old, new]
    (for the label map: [structures before, after] plus the names added and removed), so that a full rebuild
    can say why."""
    diff = {name: [old.settings.get(name), value] for name, value in content_settings.items()
            if old.settings.get(name) != value}
    if old.label_map != label_map:
        before, after = set(old.label_map.values()), set(label_map.values())
        diff["label_map"] = [len(before) - 1, len(after) - 1,
                             {"added": sorted(after - before), "removed": sorted(before - after)}]
    return diff


def manifest_path(cache: Path) -> Path:
    return Path(cache) / MANIFEST_NAME


def read_manifest(cache: Path) -> Manifest:
    """The cache's manifest, or a CacheError naming the cache and what is wrong with it."""
    path = manifest_path(cache)
    if not Path(cache).is_dir():
        raise CacheError(f"{cache}: no such cache folder (run `ctslice preprocess` first)")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CacheError(f"{cache}: no {MANIFEST_NAME}, so not a ctslice cache (run `ctslice preprocess`)") from None
    except (OSError, ValueError) as e:
        raise CacheError(f"{path}: unreadable manifest ({e})") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != FORMAT_VERSION:
        raise CacheFormatError(
            f"{cache}: cache format version {version!r}, this ctslice (version {__version__}) reads version "
            f"{FORMAT_VERSION}: run `ctslice preprocess` again to rebuild it"
        )
    try:
        return Manifest.from_json(data)
    except (TypeError, ValueError, AttributeError) as e:
        raise CacheError(f"{path}: malformed manifest ({e})") from None


def write_manifest(cache: Path, manifest: Manifest) -> None:
    """Write the manifest, then label_map.json and splits.csv from it, each atomically: to a temporary file,
    fsync, then renamed over the old one, so readers see old or new, never half."""
    manifest.updated = time.time()
    _write_atomic(manifest_path(cache), json.dumps(manifest.to_json(), indent=1))
    _write_atomic(Path(cache) / LABEL_MAP_NAME, json.dumps(manifest.label_map, indent=1) + "\n")
    _write_atomic(Path(cache) / SPLITS_NAME, splits_csv(manifest))
    # The cache root and subjects/ as zarr v3 groups, so plain zarr opens the cache: zarr.open_group(CACHE) and
    # group["subjects/<folder>"]["image"]. A group's metadata is this fixed document (zarr v3 spec); written by
    # hand so that it too is replaced atomically.
    group = json.dumps({"zarr_format": 3, "node_type": "group",
                        "attributes": {"ctslice": f"a ctslice slice cache; its contract is {MANIFEST_NAME}"}})
    for folder in (Path(cache), Path(cache) / SUBJECTS_DIR):
        folder.mkdir(exist_ok=True)
        _write_atomic(folder / ZARR_JSON, group, temp_dir=Path(cache))  # subjects/ holds subject folders only


def splits_csv(manifest: Manifest) -> str:
    """`subject,split` rows in subject order."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["subject", "split"])
    writer.writerows(sorted(manifest.split_of().items()))
    return text.getvalue()


def _write_atomic(path: Path, text: str, temp_dir: Path | None = None) -> None:
    tmp = (temp_dir or path.parent) / f".{path.name}.{os.getpid()}.tmp"
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
