"""`cv_summary`: the validation results of a cross-validation's fold runs in one table and one figure.

    result = cv_summary([Path("runs/fold0"), Path("runs/fold1")], Path("runs/cv"), which="last")
    result.rows      # per structure: mean, std, min and max of its val Dice over the folds, and each fold's value

Each run's numbers come from its checkpoint (`checkpoint_last.pth` or `checkpoint_best.pth`): the val Dice per
structure of that epoch on the run's own val subjects (the fold's, for `ctslice train --fold`), as the trainer
measured it (2D counts over the val slices of the epoch, summed; see train/epoch_metrics.py). "last" is the
default: the best epoch was chosen on the same val subjects, so its scores lean optimistic.

Writes cv_summary.json, cv_summary.csv and cv_summary.png into `out`, a folder that is none of the runs (nor
inside one): the runs are only read.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CtsliceError
from ..model.checkpoint import BEST, LAST, read_checkpoint
from .outputs import output_folder
from .report import _clean, _write_csv, _write_text

CHECKPOINTS = {"last": LAST, "best": BEST}
COLUMNS = ("structure", "mean", "std", "min", "max", "folds_scored")


@dataclass
class FoldResult:
    run: Path
    fold: int | None
    folds: int | None
    epoch: int | None
    dice: float | None
    """The run's mean val Dice over the structures at that epoch."""
    per_structure: dict[str, float | None]
    labels: dict[str, str]
    cache_hash: str | None


@dataclass
class CVSummary:
    out: Path
    folds: list[FoldResult]
    rows: list[dict[str, Any]]
    """One per structure, in label-map order, then the mean over structures ("mean Dice")."""
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def read_fold(run: Path, which: str = "last") -> FoldResult:
    """A run folder's validation results at its last (or best) checkpoint; CtsliceError naming the file when it
    holds none."""
    path = Path(run) / CHECKPOINTS[which]
    ckpt = read_checkpoint(path)
    metrics = ckpt.metrics or {}
    per_structure = metrics.get("val/dice_per_structure")
    if not isinstance(per_structure, dict):
        raise CtsliceError(f"{path}: holds no validation results (a run stopped mid-epoch, or not written by a "
                           f"training run); resume the run to the end of an epoch, or use --which best")
    dice = metrics.get("val/dice")
    return FoldResult(Path(run), ckpt.fold, ckpt.folds, ckpt.epoch, None if dice is None else float(dice),
                      {str(k): (None if v is None else float(v)) for k, v in per_structure.items()},
                      dict(ckpt.label_map), ckpt.cache_hash)


def fold_table(results: list[FoldResult]) -> list[dict[str, Any]]:
    """Per structure (label-map order, background left out): mean, sample standard deviation (0 for one fold),
    min and max over the folds that scored it (NaN: absent from a fold's val subjects and never predicted, left
    out), how many did, and each fold's value; last the same for the mean Dice of each fold."""
    names = [n for i, n in sorted(results[0].labels.items(), key=lambda kv: int(kv[0])) if int(i) > 0]
    columns = fold_columns(results)
    rows = [_row(name, [r.per_structure.get(name) for r in results], columns) for name in names]
    return rows + [_row("mean Dice", [r.dice for r in results], columns)]


def _row(name: str, values: list[float | None], columns: list[str]) -> dict[str, Any]:
    scored = [v for v in values if v is not None and not math.isnan(v)]
    stats = {"mean": statistics.fmean(scored), "std": statistics.stdev(scored) if len(scored) > 1 else 0.0,
             "min": min(scored), "max": max(scored)} if scored else dict.fromkeys(("mean", "std", "min", "max"),
                                                                                   math.nan)
    return {"structure": name, **stats, "folds_scored": len(scored),
            **{c: (math.nan if v is None else v) for c, v in zip(columns, values)}}


def fold_columns(results: list[FoldResult]) -> list[str]:
    """Each run's column: "fold K", else its folder's name, else (names shared) its path."""
    names = [f"fold {r.fold}" if r.fold is not None else r.run.name for r in results]
    return names if len(set(names)) == len(names) else [str(r.run) for r in results]


def check_folds(results: list[FoldResult]) -> list[str]:
    """Refuse runs that cannot be summarised together (other label maps, the same fold twice, other numbers of
    folds); notes for what the user should know (folds missing, runs that are not folds, other caches)."""
    first = results[0]
    notes = []
    for r in results[1:]:
        if r.labels != first.labels:
            raise CtsliceError(f"{r.run}: its label map differs from {first.run}'s; the folds of one cross-validation "
                               f"share their labels")
    cv = [r for r in results if r.fold is not None]
    if {r.folds for r in cv} and len({r.folds for r in cv}) > 1:
        raise CtsliceError("the runs come from cross-validations with different numbers of folds ("
                           + ", ".join(f"{r.run}: {r.folds}" for r in cv) + ")")
    seen: dict[int, Path] = {}
    for r in cv:
        if r.fold in seen:
            raise CtsliceError(f"{r.run}: fold {r.fold} again (also {seen[r.fold]}); give each fold once")
        seen[r.fold] = r.run
    if cv and len(cv) < cv[0].folds:
        missing = sorted(set(range(cv[0].folds)) - set(seen))
        notes.append(f"folds {', '.join(map(str, missing))} of {cv[0].folds} are missing: the spread covers "
                     f"{len(cv)} fold(s)")
    if len(cv) < len(results):
        notes.append(f"{len(results) - len(cv)} run(s) were not trained on a cross-validation fold ("
                     + ", ".join(str(r.run) for r in results if r.fold is None) + "): their val subjects may overlap")
    if len({r.cache_hash for r in results}) > 1:
        notes.append("the runs were trained on caches with different content hashes (other settings or labels)")
    return notes


def cv_summary(runs: list[Path], out: Path, which: str = "last") -> CVSummary:
    """Read every run (all before writing anything), check they belong together, write the table and figure."""
    if not runs:
        raise CtsliceError("give at least one run folder")
    if which not in CHECKPOINTS:
        raise CtsliceError(f"--which must be one of {', '.join(CHECKPOINTS)}, got {which!r}")
    out = Path(out)
    for run in runs:
        if _inside(out, Path(run)):
            raise CtsliceError(f"{out}: lies in run folder {run}; cv-summary writes to a folder of its own and only "
                               f"reads the runs")
    results = [read_fold(Path(run), which) for run in runs]
    notes = check_folds(results)
    rows = fold_table(results)
    out = output_folder(out, "cv-summary writes a folder")
    columns = COLUMNS + tuple(fold_columns(results))
    document = {"checkpoint": which, "runs": [{"run": str(r.run.resolve()), "fold": r.fold, "folds": r.folds,
                                                "epoch": r.epoch, "dice": r.dice} for r in results],
                "notes": notes, "structures": rows}
    from .figures import cv_figure

    files = [_write_text(out / "cv_summary.json", lambda f: f.write(_json(document))),
             _write_csv(out / "cv_summary.csv", columns, rows),
             cv_figure(out / "cv_summary.png", rows, list(columns[len(COLUMNS):]), which)]
    return CVSummary(out, results, rows, notes, files)


def _json(document: dict) -> str:
    import json

    return json.dumps(_clean(document), indent=1)


def _inside(path: Path, folder: Path) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
