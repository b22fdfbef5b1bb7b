"""Per-subject 3D scores: overlap from counts (shared with training, `ctslice.metrics`), volumes in ml and the
normalised surface Dice. Pure functions of label volumes.

    scores = score_subject(pred, ref, spacing=(3.0, 1.5, 1.5), num_classes=118, tolerance_mm=2.0)
    scores["dice"][5], scores["surface_dice"][5], scores["ref_ml"][5]

Surface Dice: the normalised surface Dice (NSD) of Nikolov et al. 2021 as DeepMind's surface-distance computes it
(`compute_surface_distances` + `compute_surface_dice_at_tolerance`), equal to MONAI's
`compute_surface_dice(..., use_subvoxels=True)` on the same arrays. Each mask's surface is its surfels on the
voxel-corner grid, each weighted by its marching-cubes area in mm^2 (`surfels`; outside the volume counts as
background); a surfel's distance to the other surface is the Euclidean distance transform, with the voxel spacing,
to the other mask's nearest surfel corner. NSD = (area of pred surface within tolerance of ref's + area of ref
surface within tolerance of pred's) / (both areas). NaN when both masks are empty, 0 when exactly one is (the
overlap rules: NaN only when the structure is in neither).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from ..metrics import confusion_counts, dice_from_counts, iou_from_counts
from .surfels import neighbour_codes, surfel_area_table


SURFACE_DICE = ("normalised surface Dice, surfel-based (Nikolov et al. 2021; DeepMind surface-distance "
                "compute_surface_dice_at_tolerance, MONAI compute_surface_dice use_subvoxels=True)")
"""The definition, as evaluation.json names it."""


def surface_dice(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance_mm: float) -> float:
    """Normalised surface Dice of two bool 3D masks; NaN when both are empty, 0 when exactly one is."""
    if not pred.any() and not ref.any():
        return float("nan")
    if not pred.any() or not ref.any():
        return 0.0
    # Only the region around both masks matters: crop to their joint bounding box, so 117 structures of a
    # 512x512x300 volume each cost a small distance transform. `neighbour_codes` adds the one corner layer of
    # background around it (as DeepMind's crop and padding do), so cropping changes no surfel and no distance.
    box = ndimage.find_objects((pred | ref).astype(np.uint8))[0]
    areas = surfel_area_table(spacing)
    code_p, code_r = neighbour_codes(pred[box]), neighbour_codes(ref[box])
    surface_p = (code_p != 0) & (code_p != 255)
    surface_r = (code_r != 0) & (code_r != 255)
    to_r = ndimage.distance_transform_edt(~surface_r, sampling=spacing)
    to_p = ndimage.distance_transform_edt(~surface_p, sampling=spacing)
    area_p, area_r = areas[code_p[surface_p]], areas[code_r[surface_r]]
    close = area_p[to_r[surface_p] <= tolerance_mm].sum() + area_r[to_p[surface_r] <= tolerance_mm].sum()
    return float(close / (area_p.sum() + area_r.sum()))


def score_subject(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], num_classes: int,
                  tolerance_mm: float, skip: Sequence[int] = ()) -> dict[str, np.ndarray]:
    """Per class (index 0 = background included, length num_classes): tp, fp, fn (int64), dice, iou,
    surface_dice (float64, NaN when the class is in neither volume), ref_ml and pred_ml.

    `skip`: class indices not scored for this subject (a structure missing from its reference): all their
    entries are NaN (counts -1), so means over subjects leave them out."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    tp, fp, fn = (c.numpy() for c in confusion_counts(torch.from_numpy(pred), torch.from_numpy(ref), num_classes))
    ml = math.prod(spacing) / 1000.0
    scores = {
        "tp": tp.astype(np.int64), "fp": fp.astype(np.int64), "fn": fn.astype(np.int64),
        "dice": dice_from_counts(tp, fp, fn).numpy(), "iou": iou_from_counts(tp, fp, fn).numpy(),
        "ref_ml": (tp + fn) * ml, "pred_ml": (tp + fp) * ml,
        "surface_dice": np.full(num_classes, np.nan),
    }
    # Bounding boxes of every label in one pass each, so a structure's surface work touches only its region.
    boxes_p = ndimage.find_objects(pred, max_label=num_classes - 1)
    boxes_r = ndimage.find_objects(ref, max_label=num_classes - 1)
    for c in range(1, num_classes):
        if c in skip or (boxes_p[c - 1] is None and boxes_r[c - 1] is None):
            continue
        box = _union(boxes_p[c - 1], boxes_r[c - 1])
        scores["surface_dice"][c] = surface_dice(pred[box] == c, ref[box] == c, spacing, tolerance_mm)
    if len(skip):
        for key, values in scores.items():
            values[list(skip)] = -1 if values.dtype.kind == "i" else np.nan
    return scores


def _union(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...]:
    if a is None or b is None:
        return a if b is None else b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def nan_mean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Mean skipping NaN, NaN (without a warning) where everything is NaN."""
    values = np.asarray(values, dtype=np.float64)
    count = np.sum(~np.isnan(values), axis=axis)
    total = np.nansum(values, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(mean) if np.ndim(mean) == 0 else mean
