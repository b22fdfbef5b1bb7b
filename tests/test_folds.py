"""Cross-validation folds: every non-test subject validated exactly once, stable when subjects are added, the test
split never used; a fold run records its fold and resume refuses another."""

import json

import pytest

from ctslice.cache.folds import assign_folds, fold_splits
from ctslice.cache.manifest import read_manifest
from ctslice.config import load_config
from ctslice.errors import CtsliceError
from ctslice.model.checkpoint import read_checkpoint
from ctslice.train.run import run_training


def ids(n, start=0):
    return [f"s{i:04d}" for i in range(start, start + n)]


SPLITS = {"train": ids(40), "val": ids(10, 40), "test": ids(8, 50)}


def test_five_folds_validate_every_non_test_subject_exactly_once_and_never_a_test_subject():
    parts = [fold_splits(SPLITS, k, 5) for k in range(5)]
    validated = [sid for p in parts for sid in p["val"]]
    assert sorted(validated) == sorted(SPLITS["train"] + SPLITS["val"])  # each once
    for p in parts:
        assert sorted(p["train"] + p["val"]) == sorted(SPLITS["train"] + SPLITS["val"])
        assert not set(p["train"] + p["val"]) & set(SPLITS["test"]) and p["test"] == SPLITS["test"]
    assert fold_splits(SPLITS, 2, 5) == fold_splits({k: v[::-1] for k, v in SPLITS.items()}, 2, 5)  # deterministic


def test_adding_a_subject_assigns_only_it():
    before = assign_folds(ids(50), 5)
    after = assign_folds(ids(51), 5)
    assert {k: after[k] for k in before} == before and set(after) - set(before) == {"s0050"}


def test_an_empty_fold_or_a_fold_out_of_range_is_refused():
    with pytest.raises(CtsliceError, match=r"fold 5 does not exist with 5 folds"):
        fold_splits(SPLITS, 5, 5)
    with pytest.raises(CtsliceError, match=r"fold \d of 100 leaves no validation subjects.*use fewer folds"):
        [fold_splits({"train": ids(3)}, k, 100) for k in range(100)]


def test_config_refuses_a_fold_beyond_folds():
    with pytest.raises(CtsliceError, match=r"fold must be below folds"):
        load_config(None, {"train": {"fold": 3, "folds": 3}})


def _config(**train):
    return load_config(None, {
        "train": {"epochs": 1, "wandb": "disabled", "val_images": 0, "keep_checkpoints": 0, "steps_per_epoch": 1,
                  "folds": 2, **train},
        "model": {"base_width": 4, "depth": 3}, "loader": {"batch_size": 4, "workers": 0}})


def test_a_fold_run_trains_and_validates_on_its_fold_and_records_it(cache32, tmp_path):
    manifest = read_manifest(cache32)
    expected = fold_splits(manifest.splits, 1, 2)
    run = tmp_path / "fold1"
    run_training(cache32, run, _config(fold=1))
    ckpt = read_checkpoint(run / "checkpoint_last.pth")
    assert (ckpt.fold, ckpt.folds) == (1, 2) and ckpt.splits == expected
    config = json.loads((run / "config.json").read_text())  # what wandb's config receives
    assert (config["fold"], config["folds"], config["fold_val_subjects"]) == (1, 2, expected["val"])
    assert config["val_subjects"] == len(expected["val"]) and config["train"]["fold"] == 1
    with pytest.raises(CtsliceError, match=r"cannot resume.*the cross-validation fold \(fold 1 of 2 in the "
                                           r"checkpoint, fold 0 of 2 now\)"):
        run_training(cache32, run, _config(fold=0, epochs=2), resume=run)
