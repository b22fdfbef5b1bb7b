"""Organ detection analysis: is a structure found where it is, and only there? Pure functions of per-subject
volumes and Dice (what `segmentation_detection_analysis.py` did for the original project).

A structure is present in a reference or a prediction when it has at least `min_ml` millilitres (and at least one
voxel). Per subject and structure:
    hit            present in both, Dice >= min_dice
    miss           present in the reference, but absent from the prediction or Dice < min_dice
    false alarm    present in the prediction, but absent from the reference or Dice < min_dice
    true negative  present in neither
    misplaced      present in both with Dice < min_dice: predicted elsewhere, so both a miss and a false alarm
                   (counted in both; `misplaced` says how many of the misses, and of the false alarms, are this)
A misplaced prediction is a structure found where it is not, so precision (hits / (hits + false alarms)) falls
below 1 when predictions are misplaced, not only when a structure is predicted in a subject that lacks it.
Specificity is about subjects that lack the structure: true negatives / (true negatives + false alarms that are
not misplaced). Unscored entries (NaN volumes: a structure missing from that subject's reference) count as nothing.
"""

from __future__ import annotations

import numpy as np

OUTCOMES = ("hits", "misses", "false_alarms", "true_negatives", "misplaced")


def detection_counts(ref_ml: np.ndarray, pred_ml: np.ndarray, dice: np.ndarray, min_ml: float,
                     min_dice: float) -> dict[str, np.ndarray]:
    """Arrays (subjects, structures) in; per-structure counts (structures,) of each outcome out."""
    ref_ml, pred_ml, dice = (np.asarray(a, dtype=np.float64) for a in (ref_ml, pred_ml, dice))
    scored = ~np.isnan(ref_ml) & ~np.isnan(pred_ml)
    in_ref = scored & (ref_ml > 0) & (ref_ml >= min_ml)
    in_pred = scored & (pred_ml > 0) & (pred_ml >= min_ml)
    good = np.nan_to_num(dice, nan=0.0) >= min_dice
    outcome = {
        "hits": in_ref & in_pred & good,
        "misses": in_ref & ~(in_pred & good),
        "false_alarms": in_pred & ~(in_ref & good),
        "true_negatives": scored & ~in_ref & ~in_pred,
        "misplaced": in_ref & in_pred & ~good,
    }
    return {name: mask.sum(axis=0).astype(np.int64) for name, mask in outcome.items()}


def detection_rates(hits, misses, false_alarms, true_negatives, misplaced=0) -> dict[str, np.ndarray | float]:
    """Sensitivity, precision, F1 and specificity from counts (arrays or totals); NaN where undefined."""
    h, m, f, t, x = (np.asarray(v, dtype=np.float64) for v in (hits, misses, false_alarms, true_negatives,
                                                               misplaced))
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = np.where(h + m > 0, h / (h + m), np.nan)
        precision = np.where(h + f > 0, h / (h + f), np.nan)
        f1 = np.where(2 * h + m + f > 0, 2 * h / (2 * h + m + f), np.nan)
        specificity = np.where(t + f - x > 0, t / (t + f - x), np.nan)
    rates = {"sensitivity": sensitivity, "precision": precision, "f1": f1, "specificity": specificity}
    return {k: float(v) if np.ndim(v) == 0 else v for k, v in rates.items()}
