"""`ctslice cv-summary`: the folds' val results in one table (mean and spread per structure) and a figure, written
to a folder of its own; runs that do not belong together are refused."""

import csv
import json
import math
import statistics

import pytest
from typer.testing import CliRunner

from checkpoints import edit_checkpoint, make_checkpoint
from ctslice.cache.manifest import read_manifest
from ctslice.cli import app
from ctslice.errors import CtsliceError
from ctslice.evaluate.cv_summary import cv_summary


def _fold_run(cache, folder, fold, folds, scores, which="checkpoint_last.pth"):
    """A run folder whose checkpoint records fold `fold` of `folds` and these val Dice per structure."""
    def change(ckpt):
        ckpt.update(fold=fold, folds=folds, metrics={
            "val/dice": statistics.fmean(v for v in scores.values() if v is not None),
            "val/dice_per_structure": scores})
    return edit_checkpoint(make_checkpoint(cache, folder / which), change).parent


def test_three_folds_give_mean_and_spread_per_structure(tiny_cache, tmp_path):
    names = [n for i, n in read_manifest(tiny_cache).labels.items() if i > 0]
    values = [[0.8, 0.6, 0.7], [0.5, 0.7, None]]  # per structure, per fold (None: absent from that fold)
    runs = [_fold_run(tiny_cache, tmp_path / f"fold{k}", k, 3,
                      {n: (values[j][k] if j < 2 else 0.9) for j, n in enumerate(names)}) for k in range(3)]
    result = cv_summary(runs, tmp_path / "cv")
    first = result.rows[0]
    assert first["structure"] == names[0] and math.isclose(first["mean"], 0.7)
    assert math.isclose(first["std"], statistics.stdev([0.8, 0.6, 0.7])) and (first["min"], first["max"]) == (0.6, 0.8)
    second = result.rows[1]
    assert second["folds_scored"] == 2 and math.isclose(second["mean"], 0.6) and math.isnan(second["fold 2"])
    assert result.rows[-1]["structure"] == "mean Dice" and result.notes == []
    with open(tmp_path / "cv" / "cv_summary.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["structure"] for r in table] == names + ["mean Dice"] and table[0]["fold 1"] == "0.6"
    doc = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())
    assert [r["fold"] for r in doc["runs"]] == [0, 1, 2] and (tmp_path / "cv" / "cv_summary.png").stat().st_size


def test_missing_folds_are_noted_and_mismatched_runs_refused(tiny_cache, tmp_path):
    names = [n for i, n in read_manifest(tiny_cache).labels.items() if i > 0]
    scores = dict.fromkeys(names, 0.5)
    a = _fold_run(tiny_cache, tmp_path / "a", 0, 5, scores)
    b = _fold_run(tiny_cache, tmp_path / "b", 1, 5, scores)
    assert "folds 2, 3, 4 of 5 are missing" in cv_summary([a, b], tmp_path / "cv").notes[0]
    twice = _fold_run(tiny_cache, tmp_path / "c", 1, 5, scores)
    with pytest.raises(CtsliceError, match=r"c: fold 1 again"):
        cv_summary([a, b, twice], tmp_path / "cv2")
    other = _fold_run(tiny_cache, tmp_path / "d", 2, 3, scores)
    with pytest.raises(CtsliceError, match=r"different numbers of folds"):
        cv_summary([a, other], tmp_path / "cv3")
    with pytest.raises(CtsliceError, match=r"lies in run folder"):
        cv_summary([a, b], a / "summary")
    before = sorted(p.name for p in a.iterdir())
    interrupted = edit_checkpoint(make_checkpoint(tiny_cache, tmp_path / "e" / "checkpoint_last.pth"),
                                  lambda c: c.update(metrics={}))
    with pytest.raises(CtsliceError, match=r"checkpoint_last.pth: holds no validation results"):
        cv_summary([a, interrupted.parent], tmp_path / "cv4")
    assert sorted(p.name for p in a.iterdir()) == before and not (tmp_path / "cv4").exists()


def test_cli_prints_the_table(tiny_cache, tmp_path):
    names = [n for i, n in read_manifest(tiny_cache).labels.items() if i > 0]
    runs = [str(_fold_run(tiny_cache, tmp_path / f"f{k}", k, 2, dict.fromkeys(names, 0.4 + 0.2 * k),
                          which="checkpoint_best.pth")) for k in range(2)]
    res = CliRunner().invoke(app, ["cv-summary", *runs, "--out", str(tmp_path / "cv"), "--which", "best"])
    assert res.exit_code == 0, res.output
    assert "mean Dice" in res.output and "0.500" in res.output and (tmp_path / "cv" / "cv_summary.png").is_file()
