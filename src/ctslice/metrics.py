"""Overlap metrics from per-class counts: pure functions shared by training (per epoch, on the device) and
evaluation (per 3D subject).

    tp, fp, fn = confusion_counts(pred, target, num_classes)      # int64 (C,) each, summed over all voxels
    dice, iou = dice_from_counts(tp, fp, fn), iou_from_counts(tp, fp, fn)
    mean = nanmean(dice[1:])                                       # foreground structures, NaN skipped

Rules (the project's conventions): a class is NaN only when TP+FP+FN = 0, i.e. absent from both reference and
prediction; an empty reference with any false positive scores 0; means skip NaN (and are NaN when all are).
Counts add up, so accumulating them over batches (or ranks) and computing Dice once gives the Dice of the whole
epoch, not a mean of per-batch values.
"""

from __future__ import annotations

import torch


def confusion_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class TP, FP, FN (int64, shape (num_classes,)) of integer label tensors of equal shape.

    `valid`: optional bool tensor, broadcastable to (num_classes, *pred.shape) after a leading class axis, i.e.
    of shape (num_classes, N, 1, 1) for batches (N, H, W); False excludes that class in those samples (a
    structure whose mask is missing for a subject is unknown there, neither TP, FP nor FN)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    pred, target = pred.long(), target.long()
    if valid is None:
        # One bincount of (target, pred) pairs: O(voxels), independent of the number of classes.
        pairs = torch.bincount((target * num_classes + pred).flatten(), minlength=num_classes * num_classes)
        matrix = pairs[: num_classes * num_classes].reshape(num_classes, num_classes)  # [reference, predicted]
        tp = matrix.diagonal()
        return tp, matrix.sum(0) - tp, matrix.sum(1) - tp
    classes = torch.arange(num_classes, device=pred.device).view(-1, *([1] * pred.dim()))
    is_pred, is_ref = pred.unsqueeze(0) == classes, target.unsqueeze(0) == classes
    is_pred, is_ref = is_pred & valid, is_ref & valid
    dims = tuple(range(1, pred.dim() + 1))
    tp = (is_pred & is_ref).sum(dims)
    return tp, (is_pred & ~is_ref).sum(dims), (~is_pred & is_ref).sum(dims)


def dice_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """2TP / (2TP + FP + FN) per class, float64; NaN where TP+FP+FN = 0."""
    tp, fp, fn = (torch.as_tensor(x, dtype=torch.float64) for x in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.full_like(denom, float("nan")))


def iou_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """TP / (TP + FP + FN) per class, float64; NaN where TP+FP+FN = 0."""
    tp, fp, fn = (torch.as_tensor(x, dtype=torch.float64) for x in (tp, fp, fn))
    denom = tp + fp + fn
    return torch.where(denom > 0, tp / denom.clamp(min=1), torch.full_like(denom, float("nan")))


def nanmean(values: torch.Tensor) -> float:
    """Mean over the non-NaN entries; NaN when there are none."""
    values = torch.as_tensor(values, dtype=torch.float64)
    kept = values[~torch.isnan(values)]
    return float(kept.mean()) if kept.numel() else float("nan")
