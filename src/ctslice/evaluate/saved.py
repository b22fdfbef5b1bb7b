"""What `evaluate --save-predictions` writes for one subject, and on which grid (issue 14: in cache space the
files were the original-grid predictions, not the arrays that were scored):

    OUT/predictions/<id>.nii.gz (+ sidecars)      the prediction on the subject's original grid, with its CT's
                                                  header: what a viewer opens over the CT (always)
    OUT/predictions/<id>/segmentations/...        --split-masks: one mask per structure, original grid
    OUT/scored_cache_space/<id>_prediction.nii.gz cache-space scoring only: the prediction and the reference
    OUT/scored_cache_space/<id>_reference.nii.gz  exactly as scored, label-map indices, (slice, row, column)
    OUT/scored_cache_space/labels.json            arrays with the cache's geometry as affine (voxel size =
                                                  the spacing the scores used), so every score can be recomputed
In original-space scoring the files in predictions/ are the scored ones (against the original masks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..cache.manifest import SubjectRecord
from ..files import write_atomic
from ..imaging.geometry import Geometry
from .export import label_image, save_atomic, write_prediction, write_split_masks

PREDICTIONS = "predictions"
SCORED = "scored_cache_space"


def describe(original: bool) -> dict[str, Any]:
    """Where the saved files are and which grid they are on, for evaluation.json and the printed note."""
    if original:
        return {"predictions": PREDICTIONS, "grid": "original", "scored": PREDICTIONS,
                "note": f"predictions in {PREDICTIONS}/ are on each CT's original grid: the arrays scored"}
    return {"predictions": PREDICTIONS, "grid": "original", "scored": SCORED,
            "note": f"predictions in {PREDICTIONS}/ are on each CT's original grid (for viewing); the scores are "
                    f"of the cache-space arrays in {SCORED}/ (<id>_prediction and <id>_reference, label indices)"}


def save_subject(out: Path, sid: str, record: SubjectRecord, geometry: Geometry, labels: dict[int, str],
                 values: dict[int, int] | None, pred_original: np.ndarray, scored: tuple[np.ndarray, np.ndarray] | None,
                 split_masks: bool) -> list[Path]:
    """Write one subject's files (see the module docstring); `scored`: (prediction, reference) in cache space,
    when that is what was scored. Returns the paths written."""
    affine = np.asarray(geometry.original_affine)
    files = write_prediction(pred_original, out / PREDICTIONS / f"{sid}.nii.gz", affine, record.header, labels,
                             values)
    if split_masks:
        files.append(write_split_masks(pred_original, out / PREDICTIONS / sid, affine, record.header, labels))
    if scored is not None:
        folder = out / SCORED
        for kind, array in zip(("prediction", "reference"), scored):
            path = folder / f"{sid}_{kind}.nii.gz"
            save_atomic(label_image(np.asarray(array, np.uint8), geometry.cache_affine, None), path)
            files.append(path)
        legend = folder / "labels.json"
        text = json.dumps({str(k): v for k, v in sorted(labels.items())}, indent=1) + "\n"
        write_atomic(legend, text, durable=True)
        files.append(legend)
    return files
