"""`--out` never overwrites what is not this run's: user files, another run, the cache or the dataset."""

import json

import pytest
from typer.testing import CliRunner

from ctslice.cache.manifest import read_manifest
from ctslice.cli import app
from ctslice.config import load_config
from ctslice.errors import CtsliceError
from ctslice.train.rundir import check_run_folder
from ctslice.train.run import run_training


def config(**train):
    return load_config(None, {
        "train": {"epochs": 1, "wandb": "disabled", "val_images": 1, "keep_checkpoints": 1, **train},
        "model": {"base_width": 4, "depth": 3}, "loader": {"batch_size": 8, "workers": 0}})


def test_a_folder_of_user_files_is_refused_and_left_as_it_was(cache32, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"my": "settings"}')
    (out / "checkpoint_epoch1.pth").write_text("not ours")
    with pytest.raises(CtsliceError, match="not empty and holds no ctslice run"):
        run_training(cache32, out, config())
    assert (out / "config.json").read_text() == '{"my": "settings"}'
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint_epoch1.pth", "config.json"]


def test_a_new_run_into_a_finished_run_is_refused_and_resume_is_allowed(cache32, tmp_path):
    run = tmp_path / "run"
    run_training(cache32, run, config())
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    result = CliRunner().invoke(app, ["train", "--cache", str(cache32), "--out", str(run), "--epochs", "1",
                                      "--workers", "0", "--wandb", "disabled"])
    assert result.exit_code == 2 and "already holds another training run" in result.output
    assert f"--resume {run}" in result.output and "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    resumed = run_training(cache32, run, config(epochs=2), resume=run)  # its own folder: allowed
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    other = tmp_path / "other"
    run_training(cache32, other, config())
    with pytest.raises(CtsliceError, match="already holds another training run.*choose another --out"):
        run_training(cache32, other, config(epochs=3), resume=run)


def test_a_run_that_failed_before_its_first_checkpoint_may_be_started_again(cache32, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"architecture": "UNet2D", "cache_hash": "x", "train": {},
                                                 "model": {}}))
    check_run_folder(out, cache32, read_manifest(cache32))  # no error


def test_the_cache_and_the_dataset_are_refused_as_run_folders(tiny_cache, tiny_dataset, tmp_path):
    manifest = read_manifest(tiny_cache)
    for out in (tiny_cache, tiny_cache / "run", tiny_cache.parent, tiny_dataset / "run1"):
        with pytest.raises(CtsliceError, match=r"must not contain each other|inside the cache's dataset folder"):
            check_run_folder(out, tiny_cache, manifest)
    check_run_folder(tmp_path / "runs" / "new", tiny_cache, manifest)  # a new folder elsewhere is fine
