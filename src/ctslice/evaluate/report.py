"""From per-subject scores to what a user reads: per-structure and overall figures, evaluation.json,
per_class.csv, per_subject.csv, the figures and the short table printed at the end.

Means follow the project's rules: per structure, the mean over subjects skipping NaN (a structure absent from both
reference and prediction, or missing from a subject's reference, does not count); overall, the mean over
structures (of those means) and the mean over subjects (of each subject's mean over its scored structures).
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..config import EvaluateConfig
from ..files import write_atomic
from .detection import OUTCOMES, detection_counts, detection_rates
from .metrics import SURFACE_DICE, nan_mean

METRICS = ("dice", "iou", "surface_dice")
SUBJECT_COLUMNS = ("subject", "index", "structure", "tp", "fp", "fn", "dice", "iou", "surface_dice", "ref_ml",
                   "pred_ml")
CLASS_COLUMNS = ("index", "structure", "subjects_scored", "dice", "iou", "surface_dice", "dice_std", "ref_ml_mean",
                 *OUTCOMES, "sensitivity", "precision", "f1", "specificity")


def aggregate(subjects: list[str], rows: list[dict[str, np.ndarray]], labels: Mapping[int, str],
              cfg: EvaluateConfig) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(summary, per-structure rows, per-subject-and-structure rows) from `score_subject` results."""
    stack = {key: np.stack([r[key] for r in rows])[:, 1:] for key in rows[0]}  # (subjects, structures), no background
    structures = [(i, labels[i]) for i in sorted(labels) if i > 0]
    detection = detection_counts(stack["ref_ml"], stack["pred_ml"], stack["dice"], cfg.detection_min_ml,
                                 cfg.detection_dice)
    rates = detection_rates(*(detection[k] for k in OUTCOMES))
    means = {m: nan_mean(stack[m], axis=0) for m in METRICS}
    dice_std = sample_std(stack["dice"])
    per_class = []
    for j, (index, name) in enumerate(structures):
        per_class.append({
            "index": index, "structure": name, "subjects_scored": int(np.sum(~np.isnan(stack["dice"][:, j]))),
            **{m: means[m][j] for m in METRICS}, "dice_std": dice_std[j],
            "ref_ml_mean": nan_mean(stack["ref_ml"][:, j]),
            **{k: int(detection[k][j]) for k in OUTCOMES}, **{k: v[j] for k, v in rates.items()},
        })
    subject_means = {m: nan_mean(stack[m], axis=1) for m in METRICS}
    totals = {k: int(detection[k].sum()) for k in OUTCOMES}
    summary = {
        "subjects": len(subjects), "structures": len(structures),
        "structures_scored": sum(1 for row in per_class if row["subjects_scored"] > 0),
        **{f"mean_{m}": nan_mean(means[m]) for m in METRICS},
        **{f"mean_{m}_over_subjects": nan_mean(subject_means[m]) for m in METRICS},
        "detection": {**totals, **detection_rates(*(totals[k] for k in OUTCOMES))},
        "definitions": definitions(cfg),
        "subject_mean_dice": dict(zip(subjects, subject_means["dice"].tolist())),
    }
    per_subject = [
        {"subject": sid, "index": index, "structure": name,
         **{k: _unscored_empty(rows[s][k][index].item()) for k in ("tp", "fp", "fn", *METRICS, "ref_ml",
                                                                    "pred_ml")}}
        for s, sid in enumerate(subjects) for index, name in structures
    ]
    return summary, per_class, per_subject


def definitions(cfg: EvaluateConfig) -> dict[str, str]:
    """What each number in the report is, as evaluation.json states it (the README says the same)."""
    return {
        "dice": "2TP / (2TP + FP + FN) per subject and structure in 3D; NaN only when TP + FP + FN = 0 (in neither); "
                "an empty reference with a false positive scores 0",
        "iou": "TP / (TP + FP + FN), NaN as for Dice",
        "surface_dice": f"{SURFACE_DICE}, tolerance {cfg.surface_tolerance_mm} mm; NaN when the structure is in "
                        "neither, 0 when in exactly one",
        "means": "per structure: mean over subjects skipping NaN; overall: mean over structures of those means, "
                 "and mean over subjects of each subject's mean over its scored structures",
        "dice_std": "sample standard deviation (ddof=1) over the subjects scored; NaN below two",
        "detection": f"present: >= {cfg.detection_min_ml} ml; hit: present in both with Dice >= "
                     f"{cfg.detection_dice}; present in both with lower Dice (misplaced) counts as a miss and a "
                     "false alarm; precision = hits / (hits + false alarms)",
    }


def sample_std(values: np.ndarray) -> np.ndarray:
    """Per column (structure), the sample standard deviation (ddof=1) over the non-NaN rows (subjects); NaN for a
    column with fewer than two."""
    values = np.asarray(values, dtype=np.float64)
    count = np.sum(~np.isnan(values), axis=0)
    with warnings.catch_warnings():  # numpy warns where there are fewer than two values: NaN is meant there
        warnings.simplefilter("ignore", RuntimeWarning)
        std = np.nanstd(values, axis=0, ddof=1)
    return np.where(count >= 2, std, np.nan)


def _unscored_empty(value: float | int) -> float | int | None:
    """`score_subject` marks unscored counts -1 (ints have no NaN): None, an empty cell and JSON null."""
    return None if isinstance(value, int) and value < 0 else value


def _clean(value: Any) -> Any:
    """JSON has no NaN: None instead; numpy scalars become Python ones."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_text(path: Path, write) -> Path:
    """write(open text file), durably and atomically (files.write_atomic): evaluation results are work."""
    def to(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            write(f)
    return write_atomic(path, to, durable=True)


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> Path:
    def write(f):
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return _write_text(path, write)


def write_reports(out: Path, settings: dict, summary: dict, per_class: list[dict], per_subject: list[dict],
                  skipped: dict[str, str], overlays: list[dict], labels: Mapping[int, str]) -> list[Path]:
    """evaluation.json, per_class.csv, per_subject.csv and the figures in `out`; returns the paths written."""
    from .figures import write_figures

    out.mkdir(parents=True, exist_ok=True)
    subjects: dict[str, dict] = {}
    for row in per_subject:
        subjects.setdefault(row["subject"], {})[row["structure"]] = {
            k: v for k, v in row.items() if k not in ("subject", "structure")}
    document = {"settings": settings, "summary": summary, "skipped": skipped, "per_class": per_class,
                "per_subject": subjects}
    files = [
        _write_text(out / "evaluation.json", lambda f: json.dump(_clean(document), f, indent=1)),
        _write_csv(out / "per_class.csv", CLASS_COLUMNS, per_class),
        _write_csv(out / "per_subject.csv", SUBJECT_COLUMNS, per_subject),
    ]
    return files + write_figures(out, summary, per_class, per_subject, overlays, labels, settings["evaluate"])


def ranked(per_class: list[dict], n: int = 5) -> tuple[list[dict], list[dict]]:
    """The n best and n worst structures by mean Dice (structures never scored left out); with fewer than 2n
    scored structures, the better half is "best" and the rest "worst", so that no structure is in both."""
    scored = sorted((r for r in per_class if not math.isnan(r["dice"])), key=lambda r: r["dice"], reverse=True)
    best = scored[:min(n, (len(scored) + 1) // 2)]
    return best, scored[len(best):][::-1][:n]


def summary_table(summary: dict, per_class: list[dict]):
    """A rich Table: overall figures, then the 5 best and 5 worst structures."""
    from rich.table import Table

    def f(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    det = summary["detection"]
    scored, total = summary.get("structures_scored", summary["structures"]), summary["structures"]
    what = f"{scored} structures" if scored == total else f"{scored} of {total} structures scored"
    speed = summary.get("inference", {}).get("slices_per_s")
    speed = f", inference {speed:,.1f} slices/s" if speed else ""
    table = Table(title=f"evaluation: {summary['subjects']} subjects, {what}{speed}")
    for column in ("", "Dice", "IoU", "surface Dice", "detection F1"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row("mean over structures", f(summary["mean_dice"]), f(summary["mean_iou"]),
                  f(summary["mean_surface_dice"]), f(det["f1"]))
    table.add_row("mean over subjects", f(summary["mean_dice_over_subjects"]), f(summary["mean_iou_over_subjects"]),
                  f(summary["mean_surface_dice_over_subjects"]), "")
    best, worst = ranked(per_class)
    for title, rows in (("best", best), ("worst", worst)):
        table.add_section()
        for r in rows:
            table.add_row(f"{title}: {r['structure']}", f(r["dice"]), f(r["iou"]), f(r["surface_dice"]), f(r["f1"]))
    return table
