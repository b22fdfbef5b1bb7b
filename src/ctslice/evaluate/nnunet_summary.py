"""`summary.json` in nnU-Net v2's layout and with its conventions (nnunetv2/evaluation/evaluate_predictions.py,
`compute_metrics_on_folder`), so that a ctslice evaluation and an nnU-Net one can be compared by the same script:

    {"foreground_mean": {"Dice": ..., "IoU": ..., "TP": ..., "FP": ..., "FN": ..., "TN": ..., "n_pred": ..., "n_ref": ...},
     "mean": {"1": {...the same keys...}, "2": {...}},
     "metric_per_case": [{"metrics": {"1": {...}, ...}, "prediction_file": ..., "reference_file": ...}, ...]}

nnU-Net's conventions, where they differ from ctslice's (evaluation.json keeps ctslice's):
- a structure whose mask file is missing in a subject (ctslice: unknown there, not scored) is background, as in an
  nnU-Net label file: predicting it is FP (Dice 0), not predicting it gives NaN;
- `mean`: per label, numpy's nanmean over the cases of every entry, counts included (NaN where all are NaN);
- `foreground_mean`: the plain mean over the labels of `mean`, so one label that is NaN in every case (in no
  reference and never predicted) makes it NaN, where ctslice's `mean_dice` skips that structure;
- labels are keyed by the dataset's own values ("5" for spleen in an nnU-Net dataset) as strings, else by the
  label-map index; background is not listed (nnU-Net evaluates foreground labels); TN counts the voxels of the
  scored volume in neither mask;
- written as nnU-Net writes it: keys sorted, indent 4, NaN as the bare token NaN (Python's json).
Dice and IoU are NaN when TP + FP + FN = 0, as in both tools.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..files import write_atomic

SUMMARY = "summary.json"


def case_counts(scores: Mapping[str, np.ndarray], pred: np.ndarray, skip: Sequence[int]) -> np.ndarray:
    """(classes, 4) int64 TP, FP, FN, TN of one subject as nnU-Net counts them, from `score_subject`'s counts:
    for a structure `skip`ped there (mask file missing: no voxel of the reference has its label) TP = FN = 0 and
    FP is every voxel predicted as it."""
    tp, fp, fn = (np.array(scores[k], dtype=np.int64) for k in ("tp", "fp", "fn"))
    for c in skip:
        tp[c], fn[c], fp[c] = 0, 0, int(np.count_nonzero(pred == c))
    return np.stack([tp, fp, fn, pred.size - tp - fp - fn], axis=1)


def label_metrics(tp: int, fp: int, fn: int, tn: int) -> dict[str, float | int]:
    """One label of one case, as nnU-Net's `compute_metrics`."""
    union = tp + fp + fn
    return {"Dice": 2 * tp / (2 * tp + fp + fn) if union else float("nan"),
            "IoU": tp / union if union else float("nan"),
            "FP": fp, "TP": tp, "FN": fn, "TN": tn, "n_pred": fp + tp, "n_ref": fn + tp}


def build_summary(cases: Sequence[tuple[str, str, np.ndarray]], keys: Mapping[int, str]) -> dict[str, Any]:
    """`cases`: (reference file, prediction file, `case_counts`) per subject; `keys`: label-map index -> the key
    it has in the summary (foreground only). Returns nnU-Net's summary dict."""
    per_case = [{"reference_file": ref, "prediction_file": pred,
                 "metrics": {key: label_metrics(*(int(v) for v in counts[index])) for index, key in keys.items()}}
                for ref, pred, counts in cases]
    names = list(label_metrics(0, 0, 0, 0))
    means = {key: {m: _nanmean([c["metrics"][key][m] for c in per_case]) for m in names} for key in keys.values()}
    foreground = {m: float(np.mean([means[key][m] for key in means])) if means else float("nan") for m in names}
    return {"metric_per_case": per_case, "mean": means, "foreground_mean": foreground}


def _nanmean(values: list[float]) -> float:
    """numpy's nanmean without its all-NaN warning."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")


def summary_keys(labels: Mapping[int, str], values: Mapping[int, int] | None) -> dict[int, str]:
    """Foreground label-map index -> its key: the dataset's label value when known, else the index."""
    return {i: str(values[i] if values else i) for i in sorted(labels) if i > 0}


def write_summary(out: Path, summary: dict[str, Any]) -> Path:
    return write_atomic(out / SUMMARY, json.dumps(summary, sort_keys=True, indent=4) + "\n", durable=True)
