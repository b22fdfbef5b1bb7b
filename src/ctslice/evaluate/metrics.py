"""Per-subject 3D scores: overlap from counts (shared with training, `ctslice.metrics`), volumes in ml and the
normalised surface Dice. Pure functions of label volumes.

    scores = score_subject(pred, ref, spacing=(3.0, 1.5, 1.5), num_classes=118, tolerance_mm=2.0)
    scores["dice"][5], scores["surface_dice"][5], scores["ref_ml"][5]

Surface Dice (Nikolov et al. 2021, as DeepMind's surface-distance computes it, with voxels instead of surfels):
the surface of a mask is its voxels that binary erosion removes (outside the volume counts as background); each
surface voxel's distance to the other mask's surface comes from a Euclidean distance transform with the voxel
spacing; the score is (pred surface within tolerance + ref surface within tolerance) / (both surface sizes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from ..metrics import confusion_counts, dice_from_counts, iou_from_counts


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Voxels of a bool mask that touch the background (6-connectivity), the volume's outside included."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_dice(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance_mm: float) -> float:
    """Normalised surface Dice of two bool masks; NaN when both are empty, 0 when exactly one is."""
    if not pred.any() and not ref.any():
        return float("nan")
    if not pred.any() or not ref.any():
        return 0.0
    # Only the region around both masks matters: crop to their joint bounding box plus a one-voxel margin of
    # background, so 117 structures of a 512x512x300 volume each cost a small distance transform.
    box = ndimage.find_objects((pred | ref).astype(np.uint8))[0]
    pred = np.pad(pred[box], 1)
    ref = np.pad(ref[box], 1)
    surface_p, surface_r = surface_voxels(pred), surface_voxels(ref)
    to_r = ndimage.distance_transform_edt(~surface_r, sampling=spacing)
    to_p = ndimage.distance_transform_edt(~surface_p, sampling=spacing)
    close = np.count_nonzero(to_r[surface_p] <= tolerance_mm) + np.count_nonzero(to_p[surface_r] <= tolerance_mm)
    return close / (np.count_nonzero(surface_p) + np.count_nonzero(surface_r))


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
