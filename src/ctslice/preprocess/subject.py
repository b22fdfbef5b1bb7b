"""The unit of parallel work: one subject from its NIfTI files to its folder in the cache.

`process_subject` depends only on its job (no globals, no shared state) and never raises: a failure comes back as
a message naming the subject and the file. Memory stays bounded by one subject: masks are read on the job's threads
and merged one at a time in label order, at most one per thread waiting, so 117 masks of 512 x 512 x 300 never sit
in memory together.
"""

from __future__ import annotations

import traceback
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import store
from ..cache.manifest import SubjectRecord
from ..cache.mirror import Remote
from ..errors import InputError
from ..imaging import memory, volume
from .fingerprint import file_fingerprint, subject_key
from ..imaging.geometry import image_to_cache, labels_to_cache, plan_geometry
from .labels import mask_extent, merge_mask, slice_statistics
from .sources import SubjectSource
from .threads import alongside, map_in_order
from ..cache.statistics import foreground_histogram
from ..text import first_few


@dataclass(frozen=True)
class SubjectJob:
    source: SubjectSource
    data_root: str
    cache: str
    settings: dict[str, Any]
    """PreprocessConfig.content_settings()."""
    settings_hash: str
    label_map: dict[int, str]
    label_values: dict[int, int] | None = None
    """nnU-Net layout: value in the label file -> label-map index."""
    threads: int = 1
    """Threads that read this subject's masks and resample its slices (threads.subject_threads)."""
    remote: Remote | None = None
    """For a cache on object storage: the store the worker uploads the subject's folder to (cache/mirror.py)."""


@dataclass(frozen=True)
class SubjectOutcome:
    subject: str
    record: SubjectRecord | None = None
    error: str | None = None
    reused: bool = False
    """The subject's folder was already complete from an interrupted run (same key): nothing was recomputed."""


def process_subject(job: SubjectJob) -> SubjectOutcome:
    sid = job.source.id
    try:
        return _process(job)
    except InputError as e:
        return SubjectOutcome(sid, error=str(e))
    except MemoryError:
        return SubjectOutcome(sid, error=f"{sid}: {job.source.image}: out of memory while processing")
    except Exception as e:  # a bug or an unforeseen file problem: report it with the subject, go on
        where = traceback.extract_tb(e.__traceback__)[-1]
        return SubjectOutcome(sid, error=f"{sid}: unexpected {type(e).__name__}: {e} (at {where.name}:{where.lineno})")


def _process(job: SubjectJob) -> SubjectOutcome:
    src, root = job.source, Path(job.data_root)
    files = {}
    for name in src.files:
        try:
            files[name] = file_fingerprint(root / name)
        except OSError as e:
            raise InputError(src.id, name, f"cannot read file ({e.strerror or e})") from None
    key = subject_key(job.settings_hash, files)
    folder = store.subject_folder(src.id, key)
    done = _complete_record(job, folder)
    if done is not None:
        record = SubjectRecord.from_json(done)
        record.files = files  # same bytes; keep the current times
        return SubjectOutcome(src.id, record=record, reused=True)

    s = job.settings
    ct_img = volume.load_header(root / src.image, src.id, src.image)
    memory.check_fits(ct_img, src.id, src.image)
    job = replace(job, threads=memory.affordable_threads(ct_img, job.threads))
    geometry = plan_geometry(ct_img.shape, ct_img.affine, s["spacing"], s["size"])
    memory.check_resampling_fits(geometry, ct_img.header.get_zooms()[:3], src.id, src.image)
    missing: list[str] = []
    # The CT is decompressed on a thread of its own while the masks are read and merged (a gzip stream is one
    # thread's work): with 2+ threads the two overlap. Its error still comes first, as when it was read first.
    with alongside(lambda: volume.read_ct(ct_img, src.id, src.image, s["hu_min"], s["hu_max"]),
                   background=job.threads > 1) as read_ct:
        try:
            if job.label_values is None:
                label, overlap, missing = _merge_masks(job, ct_img, root)
            else:
                label, overlap = _read_label_file(job, ct_img, root), 0
        except BaseException:
            read_ct()
            raise
        ct = read_ct()
    labelled = int(np.count_nonzero(label))  # on the grid where overlaps are counted: their share's denominator
    image_cached = image_to_cache(ct, geometry, fill=s["hu_min"], threads=job.threads)
    del ct
    label_cached, cropped = labels_to_cache(label, geometry, threads=job.threads)
    del label
    foreground, present, voxels = slice_statistics(label_cached, len(job.label_map))
    warnings = []
    if missing:
        warnings.append(f"{len(missing)} mask file(s) missing, unknown in this subject: {first_few(missing)}")
    if cropped:
        share = cropped / (cropped + int(voxels[1:].sum()))
        warnings.append(f"{cropped} labelled voxels ({share:.1%} of its labels) lie outside the "
                        f"{s['size']}x{s['size']} slice and were cropped")
    record = SubjectRecord(
        id=src.id, path=folder, key=key, files=files, slices=int(label_cached.shape[0]),
        shape=list(label_cached.shape), spacing=list(geometry.spacing), geometry=geometry.to_json(),
        label_voxels=[int(v) for v in voxels], overlap_voxels=int(overlap), original_label_voxels=labelled,
        cropped_label_voxels=int(cropped),
        missing_structures=missing, warnings=warnings, header=volume.header_fields(ct_img.header),
    )
    store.write_subject(job.cache, folder, image_cached, label_cached, foreground, present, record.to_json(),
                        foreground_histogram(image_cached, label_cached),
                        sharded=s.get("layout") == "shards")  # encoding threads measured no faster (README)
    if job.remote is not None:
        job.remote.upload_folder(folder)
    return SubjectOutcome(src.id, record=record)


def _complete_record(job: SubjectJob, folder: str) -> dict[str, Any] | None:
    """The record of a complete folder of this key from an interrupted run or another worker, or None. For a cache
    on object storage the store's copy counts (uploaded again from the mirror when only the mirror has it)."""
    if store.subject_exists(job.cache, folder):
        if job.remote is not None and not job.remote.has_subject(folder):
            job.remote.upload_folder(folder)
        return store.read_subject_record(job.cache, folder)
    return job.remote.subject_record(folder) if job.remote is not None else None


def _merge_masks(job: SubjectJob, ct_img, root: Path) -> tuple[np.ndarray, int, list[str]]:
    """TotalSegmentator layout: merge the binary masks in label-map order (later index wins).
    Returns the label volume, the overlapping voxels and the label-map names without a mask file."""
    src = job.source
    masks = dict(src.masks)
    label = np.zeros(ct_img.shape, dtype=np.uint8, order="F")  # NIfTI data comes in Fortran order
    overlap, missing = 0, []
    overlapped = np.zeros(ct_img.shape, dtype=bool, order="F")  # each overlapping voxel counted once
    to_read = []
    for index, name in sorted(job.label_map.items()):
        if index == 0:
            continue
        if name not in masks:
            missing.append(name)
        else:
            to_read.append((index, masks[name]))

    def read(item: tuple[int, str]) -> tuple[int, np.ndarray, tuple[slice, ...] | None]:
        index, file = item
        mask = volume.read_mask(root / file, ct_img, src.id, file)
        binary, box = mask_extent(mask)
        if not binary:
            values = np.unique(mask)[:6]
            raise InputError(src.id, file, f"mask has values other than 0/1 (found {values.tolist()})")
        return index, mask, box

    with closing(map_in_order(read, to_read, job.threads)) as reads:
        for index, mask, box in reads:
            if box is not None:  # an empty mask changes nothing
                overlap += merge_mask(label[box], mask[box], index, overlapped[box])
            del mask
    return label, overlap, missing


def _read_label_file(job: SubjectJob, ct_img, root: Path) -> np.ndarray:
    """nnU-Net layout: one multi-label file; its values are mapped to label-map indices."""
    src, file = job.source, job.source.label
    img = volume.load_header(root / file, src.id, file)
    volume.check_same_grid(ct_img, img, src.id, file)
    data = volume.read_data(img, np.int64, src.id, file)
    values = np.unique(data)
    unknown = [int(v) for v in values if int(v) not in job.label_values]
    if unknown:
        raise InputError(src.id, file, f"label values {unknown[:6]} are not in dataset.json's labels")
    lut = np.zeros(int(values.max()) + 1 if values.size else 1, dtype=np.uint8)
    for value, index in job.label_values.items():
        if 0 <= value < len(lut):
            lut[value] = index
    return lut[data.astype(np.int64, copy=False)]
