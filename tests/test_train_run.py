"""Short training runs on a tiny cache: every artefact, the metric and config keys, learning, resume, wandb modes
and clear errors."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ctslice.cache.manifest import read_manifest, write_manifest
from ctslice.cli import app
from ctslice.config import ModelConfig, PreprocessConfig, load_config
from ctslice.errors import CacheError
from ctslice.preprocess.run import run_preprocess
from ctslice.synthetic import DemoSpec, generate_demo_dataset
from ctslice.model.checkpoint import checksum, read_checkpoint
from ctslice.model.unet import build_model
from ctslice.train.resume import resume_defaults
from ctslice.train.run import run_training

EPOCH_KEYS = {"train/dice", "train/loss", "val/dice", "val/loss", "val/iou", "comparison/loss_gap",
              "comparison/dice_gap", "comparison/overfit_score", "learning_rate", "gradient_norm", "epoch_time",
              "samples_per_second", "perf/data_wait_fraction", "perf/step_time", "val/dice_per_structure"}
BATCH_KEYS = {"batch/loss", "batch/dice", "batch/gradient_norm"}
WANDB_CONFIG_KEYS = {"architecture", "epochs", "batch_size", "learning_rate", "use_scheduler", "scheduler_type",
                     "cosine_t_max", "cosine_eta_min", "plateau_factor", "plateau_patience", "plateau_min_lr",
                     "num_classes", "train_subjects", "val_subjects", "train_slices", "val_slices", "train_ratio",
                     "val_ratio", "num_workers", "pin_memory", "total_params", "trainable_params"}
ARTEFACTS = {"checkpoint_epoch2.pth", "checkpoint_best.pth", "checkpoint_last.pth", "training_history.json",
             "training_history.png", "sample_visualization.png", "test_inference.png", "label_map.json",
             "config.json", ".lock"}  # (.lock: the one-writer lock, issue 15)


def tiny_config(**train):
    return load_config(None, {
        "train": {"epochs": 2, "wandb": "disabled", "log_every": 1, "val_images": 2, "keep_checkpoints": 1, **train},
        "model": {"base_width": 4, "depth": 3}, "loader": {"batch_size": 8, "workers": 0}})


def test_short_run_writes_every_artefact(cache32, tmp_path):
    run = tmp_path / "run"
    torch.manual_seed(123)
    callers = torch.get_rng_state()
    result = run_training(cache32, run, tiny_config())
    assert torch.equal(torch.get_rng_state(), callers)  # the run seeded its own, and gave the caller's back
    assert {p.name for p in run.iterdir()} == ARTEFACTS  # one epoch checkpoint kept; no wandb folder when disabled
    history = json.loads((run / "training_history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == [1, 2] and result.history == history["epochs"]
    for record in history["epochs"]:
        assert EPOCH_KEYS <= set(record)
        assert len([k for k in record if k.startswith("top_classes/rank_")]) == 5
        assert len([k for k in record if k.startswith("bottom_classes/rank_")]) == 5
    assert history["batches"] and all(BATCH_KEYS <= set(r) for r in history["batches"])
    manifest = read_manifest(cache32)
    assert set(history["epochs"][0]["val/dice_per_structure"]) == set(manifest.labels.values()) - {"background"}

    config = json.loads((run / "config.json").read_text())
    assert WANDB_CONFIG_KEYS <= set(config)
    assert config["num_classes"] == manifest.num_labels - 1 and config["total_params"] == result.total_params
    for section in ("train", "model", "loader", "augment"):
        assert set(config[section]) == set(tiny_config().to_dict()[section])
    assert json.loads((run / "label_map.json").read_text()) == manifest.label_map

    ckpt = torch.load(run / "checkpoint_best.pth", map_location="cpu", weights_only=True)
    mc = ckpt["model_config"]
    model = build_model(ModelConfig(mc["base_width"], mc["depth"]), mc["in_channels"], mc["num_classes"])
    model.load_state_dict(ckpt["model"])  # what the evaluator does
    assert ckpt["label_map"] == manifest.label_map and ckpt["cache_hash"] == manifest.settings.hash
    assert ckpt["preprocess"] == manifest.settings.to_json() and ckpt["intensity"]["clip"] == [-1024.0, 3071.0]
    assert {"optimizer", "schedule", "rng", "state", "metrics", "config", "epoch"} <= set(ckpt)
    typed = read_checkpoint(run / "checkpoint_best.pth")  # the one typed checkpoint: its dict is the file's
    assert typed.resume_problem() is None and typed.labels == manifest.labels
    assert checksum(typed.to_dict()) == checksum({k: v for k, v in ckpt.items()
                                                  if k not in ("format", "format_version", "checksum")})


def test_training_learns_the_demo_data(tmp_path):
    # three large structures, so that a small U-Net learns them within seconds
    spec = DemoSpec(subjects=6, size=32, slices=(8, 12), seed=5, structures=("liver", "heart", "stomach"))
    generate_demo_dataset(tmp_path / "data", spec)
    assert run_preprocess(tmp_path / "data", tmp_path / "cache", PreprocessConfig(spacing=None, size=32, workers=0)).ok
    cfg = load_config(None, {
        "train": {"epochs": 6, "learning_rate": 1e-2, "window_min": -200, "window_max": 300, "wandb": "disabled",
                  "log_every": 100, "val_images": 0, "keep_checkpoints": 0},
        "augment": {"enabled": False}, "model": {"base_width": 8, "depth": 3},
        "loader": {"batch_size": 4, "workers": 0}})
    history = run_training(tmp_path / "cache", tmp_path / "run", cfg).history
    assert history[-1]["train/loss"] < 0.8 * history[0]["train/loss"]
    assert history[-1]["val/loss"] < 0.8 * history[0]["val/loss"]
    assert history[-1]["val/dice"] > history[0]["val/dice"] + 0.2  # measured: 0.0 -> 0.57


def test_resume_from_a_checkpoint_continues_the_same_run(cache32, tmp_path):
    cfg = tiny_config(keep_checkpoints=2)
    whole = run_training(cache32, tmp_path / "whole", cfg)
    resumed = run_training(cache32, tmp_path / "resumed", cfg, resume=tmp_path / "whole" / "checkpoint_epoch1.pth")
    assert [r["epoch"] for r in resumed.history] == [2]
    a = torch.load(whole.last_checkpoint, weights_only=True)["model"]
    b = torch.load(resumed.last_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # same data order, augmentation and RNGs: the same weights


def test_wandb_offline_writes_a_run(cache32, tmp_path, offline_wandb):
    run = tmp_path / "run"
    run_training(cache32, run, tiny_config(epochs=1, wandb="offline"))
    record = json.loads((run / "wandb_run.json").read_text())
    assert record["mode"] == "offline"
    runs = list((run / "wandb").glob(f"offline-run-*-{record['id']}"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_cache_without_val_split_stops_before_any_work(cache32, tmp_path):
    cache = tmp_path / "cache"
    import shutil

    shutil.copytree(cache32, cache)
    manifest = read_manifest(cache)
    manifest.splits = {"train": manifest.splits["train"] + manifest.splits["val"], "val": [], "test": []}
    write_manifest(cache, manifest)
    with pytest.raises(CacheError, match="no 'val' subjects"):
        run_training(cache, tmp_path / "run", tiny_config())
    assert not (tmp_path / "run").exists()


def test_unreadable_manifest_is_one_error_line(cache32, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "manifest.json").write_text("{ not json")
    result = CliRunner().invoke(app, ["train", "--cache", str(cache), "--out", str(tmp_path / "run"),
                                      "--wandb", "disabled", "--workers", "0"])
    assert result.exit_code == 2
    assert "error:" in result.output and "unreadable manifest" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_cli_passes_flags_over_the_config_file(cache32, tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[train]\nepochs = 5\nval_images = 1\n[model]\nbase_width = 4\ndepth = 3\n[loader]\n"
                    "batch_size = 4\n")
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--cache", str(cache32), "--out", str(run), "--config", str(toml),
                                      "--epochs", "1", "--batch-size", "8", "--workers", "0", "--wandb", "disabled",
                                      "--scheduler", "none", "--lr", "0.002"])
    assert result.exit_code == 0, result.output
    assert "1 epochs, final val Dice" in result.output and "parameters" in result.output
    config = json.loads((run / "config.json").read_text())
    assert (config["epochs"], config["batch_size"], config["scheduler_type"], config["learning_rate"]) == (
        1, 8, "none", 0.002)
    assert config["use_scheduler"] is False and config["model"]["base_width"] == 4


def test_resume_alone_continues_with_the_runs_own_settings_and_cache(cache32, tmp_path, monkeypatch):
    toml = tmp_path / "c.toml"
    toml.write_text("[train]\nval_images = 1\nscheduler = \"none\"\nwandb = \"disabled\"\n[model]\nbase_width = 4\n"
                    "depth = 3\n[loader]\nbatch_size = 8\nworkers = 0\n")
    run = tmp_path / "run"
    first = CliRunner().invoke(app, ["train", "--cache", str(cache32), "--out", str(run), "--config", str(toml),
                                     "--epochs", "1"])
    assert first.exit_code == 0, first.output
    monkeypatch.chdir(tmp_path)  # no ./cache here: the cache must come from the checkpoint
    # the rule, in the library: the run's own cache and settings unless a cache is given; no resume: ./cache
    cache, settings = resume_defaults(run, None)
    assert Path(cache).resolve() == cache32.resolve() and settings["model"]["base_width"] == 4
    assert resume_defaults(run, tmp_path / "other")[0] == tmp_path / "other"
    assert resume_defaults(None, None) == (Path("cache"), None)
    resumed = CliRunner().invoke(app, ["train", "--resume", str(run), "--epochs", "2"])
    assert resumed.exit_code == 0, resumed.output
    config = json.loads((run / "config.json").read_text())
    assert (config["epochs"], config["model"]["base_width"], config["model"]["depth"]) == (2, 4, 3)
    assert config["cache"] == str(cache32.resolve()) or config["cache"] == str(cache32)


def test_wandb_online_without_a_server_fails_soon_with_one_line(tmp_path, monkeypatch):
    import wandb

    from ctslice.errors import CtsliceError
    from ctslice.train.loggers import WANDB_INIT_TIMEOUT_S, WandbLogger

    seen = {}

    def unreachable(**kwargs):
        seen.update(kwargs)
        raise wandb.errors.CommError('Timed out while retrying: Post "https://api.wandb.ai/graphql": no such host\n'
                                     "Consider increasing the init_timeout setting:\n  wandb.init(settings=...)")

    monkeypatch.setattr(wandb, "init", unreachable)
    with pytest.raises(CtsliceError) as err:
        WandbLogger("online", "p", tmp_path, {})
    assert "\n" not in str(err.value) and "CommError: Timed out" in str(err.value) and "init_timeout" not in str(err.value)
    assert seen["settings"].init_timeout == WANDB_INIT_TIMEOUT_S <= 30


def test_default_run_folders_started_in_the_same_second_differ(tmp_path):
    from ctslice.train.rundir import default_run_folder, new_run_folder

    base = tmp_path / "runs" / "20261129-120000"
    first, second = new_run_folder(base), new_run_folder(base)
    assert first != second and first.is_dir() and second.is_dir() and second.name == "20261129-120000-2"
    # no --out: a resumed run folder continues in place, a checkpoint file or a new run gets a new folder
    assert default_run_folder(first, runs=tmp_path / "runs") == first
    (first / "c.pth").write_bytes(b"")
    new = default_run_folder(first / "c.pth", runs=tmp_path / "runs")
    assert new.parent == tmp_path / "runs" and new.is_dir() and new not in (first, second)
