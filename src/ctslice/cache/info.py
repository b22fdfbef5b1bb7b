"""`cache_info`: what a cache holds, from its manifest's table (subject folders' sizes were taken when they were
written) plus a walk over the record files, slice index and leftovers for theirs.

Nothing here decodes a chunk, so it is cheap enough to run before every training job. The compression ratio is
taken against the raw arrays the cache stands for: every slice as int16 image plus uint8 label (3 bytes a pixel).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cleanup import leftovers
from .layout import LABEL_MAP_NAME, MANIFEST_NAME, RECORDS_DIR, SPLITS_NAME, SUBJECTS_DIR, ZARR_JSON
from .manifest import read_manifest
from .sizes import FolderSize, files_size, folder_size, total_size
from .store import IMAGE_DTYPE, LABEL_DTYPE
from .warnings import warning_summary

RAW_BYTES_PER_PIXEL = IMAGE_DTYPE.itemsize + LABEL_DTYPE.itemsize


@dataclass
class CacheInfo:
    cache: str
    format_version: int
    ctslice_version: str
    """The ctslice version that last wrote the cache."""
    created: float
    updated: float
    dataset: dict[str, Any]
    settings: dict[str, Any]
    subjects: int
    slices: int
    failed: int
    splits: dict[str, dict[str, int]]
    """Split name -> {"subjects", "slices"}."""
    structures: int
    """Label-map entries without background (the model has structures + 1 output channels)."""
    slice_size: list[list[int]]
    """Distinct (rows, columns) of the cached slices: one entry in a healthy cache."""
    spacing_mm: dict[str, list[float]]
    """{"slice": [min, max], "row": [min, max], "column": [min, max]} over the cached subjects."""
    size: FolderSize
    """Files the manifest references (subjects, record files, slice index, manifest)."""
    leftovers: FolderSize
    """Files of interrupted runs or replaced subjects (`ctslice cache clean --leftovers`)."""
    raw_bytes: int
    compression_ratio: float
    """raw_bytes / size.bytes."""
    labels: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, Any] = field(default_factory=dict)
    """cache.warnings.warning_summary: crops, missing masks, overlaps, the dataset's own warnings."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _range(values: list[float]) -> list[float]:
    return [round(min(values), 4), round(max(values), 4)] if values else []


def cache_info(cache: Path) -> CacheInfo:
    """Summarise a cache; raises CacheError when it is missing or unreadable."""
    cache = Path(cache)
    manifest = read_manifest(cache)
    records = manifest.subjects.table  # the rows: no record file is read
    slices = sum(r.slices for r in records.values())
    splits = {name: {"subjects": sum(sid in records for sid in ids),
                     "slices": sum(records[sid].slices for sid in ids if sid in records)}
              for name, ids in manifest.splits.items()}
    shapes = sorted({tuple(r.shape[1:]) for r in records.values()})
    raw = sum(r.slices * r.shape[1] * r.shape[2] for r in records.values()) * RAW_BYTES_PER_PIXEL
    referenced = [cache / name for name in (MANIFEST_NAME, LABEL_MAP_NAME, SPLITS_NAME, ZARR_JSON)]
    referenced.append(cache / SUBJECTS_DIR / ZARR_JSON)
    if manifest.slice_index:
        referenced.append(cache / manifest.slice_index)
    # each subject folder's size was taken when it was written (records.SubjectEntry.size)
    size = sum((folder_size(p) for p in referenced), total_size(r.size for r in records.values()))
    size += files_size(cache / RECORDS_DIR, {r.record.partition("/")[2] for r in records.values()})
    left = sum((folder_size(p) for p in leftovers(cache, manifest)), FolderSize())
    spacing = {axis: _range([r.spacing[i] for r in records.values()])
               for i, axis in enumerate(("slice", "row", "column"))}
    return CacheInfo(
        cache=str(cache), format_version=manifest.format_version, ctslice_version=manifest.ctslice_version,
        created=manifest.created, updated=manifest.updated, dataset=dict(manifest.dataset),
        settings=manifest.settings.to_json(), subjects=len(records), slices=slices, failed=len(manifest.failed),
        splits=splits, structures=manifest.num_labels - 1, slice_size=[list(s) for s in shapes],
        spacing_mm=spacing, size=size, leftovers=left, raw_bytes=raw,
        compression_ratio=round(raw / size.bytes, 3) if size.bytes else 0.0, labels=dict(manifest.label_map),
        warnings=warning_summary(manifest),
    )
