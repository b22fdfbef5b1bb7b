"""Dataset statistics for the manifest, gathered while preprocessing without another pass over the data.

Each subject contributes a histogram of its foreground HU values (integer bins over the whole int16 range,
stored in its group as `hu_histogram`, so unchanged subjects need not be read again); the run sums them. A
histogram of integers gives the exact mean, standard deviation and percentiles of all foreground voxels, where
nnU-Net's fingerprint samples them. Structure counts and volumes come from the records' voxel counts, kept per
subject in the slice index (cache/slice_index.py) together with the summed histogram.
Statistics describe the cached arrays (what training normalises), foreground meaning any label > 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CacheError
from . import shards, store
from .records import Row

HIST_OFFSET = 32768  # bin i holds HU value i - 32768: every int16 value has its bin
HIST_BINS = 65536


def foreground_histogram(image: np.ndarray, label: np.ndarray) -> np.ndarray:
    """int64 (65536,): how many labelled voxels have each int16 HU value."""
    values = image[label > 0].astype(np.int32) + HIST_OFFSET
    return np.bincount(values, minlength=HIST_BINS).astype(np.int64)


def _percentile(cumulative: np.ndarray, q: float) -> int:
    """The smallest value whose cumulative count reaches q% of all (numpy's 'inverted_cdf' percentile)."""
    rank = q / 100 * cumulative[-1]
    return int(np.searchsorted(cumulative, rank, side="left")) - HIST_OFFSET


def intensity_statistics(histogram: np.ndarray) -> dict[str, Any]:
    """{"voxels", "mean", "std", "p00_5", "p99_5", "min", "max"} in HU of the voxels a histogram counts;
    an empty histogram gives only {"voxels": 0}."""
    counts = np.asarray(histogram, dtype=np.int64)
    n = int(counts.sum())
    if n == 0:
        return {"voxels": 0}
    values = np.arange(HIST_BINS, dtype=np.float64) - HIST_OFFSET
    mean = float(counts @ values) / n
    std = float(np.sqrt(max(float(counts @ (values - mean) ** 2) / n, 0.0)))
    cumulative = np.cumsum(counts)
    nonzero = np.flatnonzero(counts)
    return {"voxels": n, "mean": round(mean, 4), "std": round(std, 4),
            "p00_5": _percentile(cumulative, 0.5), "p99_5": _percentile(cumulative, 99.5),
            "min": int(nonzero[0]) - HIST_OFFSET, "max": int(nonzero[-1]) - HIST_OFFSET}


def _range(values: list[float]) -> list[float]:
    return [round(min(values), 4), round(max(values), 4)] if values else []


def original_spacing(geometry: Mapping[str, Any]) -> tuple[float, list[float]]:
    """(slice thickness, [in-plane spacings]) in mm of a subject's original grid, from its recorded affine."""
    zooms = np.linalg.norm(np.asarray(geometry["original_affine"], dtype=float)[:3, :3], axis=0)
    axcodes = geometry["original_axcodes"]
    axial = next(i for i, code in enumerate(axcodes) if code in "SI")
    return float(zooms[axial]), [float(z) for i, z in enumerate(zooms) if i != axial]


def dataset_statistics(index: store.SliceIndex, slices: Iterable[int], label_map: Mapping[int, str]
                       ) -> dict[str, Any]:
    """The manifest's `statistics` (documented on Manifest.statistics) from the slice index's per-subject arrays
    and summed histogram (cache/slice_index.py) and the subjects' slice counts: no subject is read."""
    voxels, ml = index.label_voxels, index.volume_ml
    structures = {}
    for i, name in sorted(label_map.items()):
        if i == 0:
            continue
        column = voxels[:, i] if i < voxels.shape[1] else np.zeros(len(voxels), np.int64)
        structures[name] = {"subjects": int((column > 0).sum()), "voxels": int(column.sum()),
                            "ml": round(float(column.astype(np.float64) @ ml), 3)}
    spacing = index.original_spacing
    return {"subjects": len(index.subjects), "structures": structures,
            "intensity": intensity_statistics(index.histogram),
            "spacing": {"slice_thickness": _range(spacing[:, 0].tolist()),
                        "in_plane": _range(spacing[:, 1:].ravel().tolist())},
            "slices": _range(list(slices))}


def summed_histogram(cache, records: Iterable[Row], notes: list[str] | None = None) -> np.ndarray:
    """The subjects' stored foreground HU histograms summed: one small array read per subject, no image data.
    Subjects cached before histograms existed have none and are left out. A histogram that is damaged, missing
    its chunk or counting other than the subject's labelled voxels is counted again from the subject's slices,
    with a line in `notes` (`cache verify --repair` rewrites it); CacheError if the slices are damaged too."""
    total = np.zeros(HIST_BINS, dtype=np.int64)
    for record in records:
        labelled = record.labelled
        try:
            hist = store.read_histogram(cache, record.path)
            if hist is not None and (int(hist.sum()) != labelled or hist.min() < 0):
                raise CacheError(f"{store.HISTOGRAM} counts {int(hist.sum())} voxels, the subject has {labelled} "
                                 "labelled ones")
        except CacheError as e:
            hist = _recount(cache, record)
            if notes is not None:
                notes.append(f"{record.id}: its stored intensity histogram is damaged ({e}); counted again from "
                             "its slices for the statistics (`ctslice cache verify --repair` rewrites it)")
        if hist is not None:
            total += hist
    return total


def _recount(cache, record: Row) -> np.ndarray:
    """A subject's foreground histogram from its checked slice chunks."""
    hist = np.zeros(HIST_BINS, dtype=np.int64)
    sharded = shards.is_sharded(Path(cache) / record.path / "image", f"{cache}: subject {record.id}")
    slices = store.SubjectSlices(cache, record.path, record.shape, sharded)
    try:
        for z in range(record.shape[0]):
            where = f"{cache}: subject {record.id} slice {z}"
            hist += foreground_histogram(slices.read("image", z, where, store.DAMAGE_HINT),
                                         slices.read("label", z, where, store.DAMAGE_HINT))
    finally:
        slices.close()
    return hist
