"""A flag the user did not give never overrides the --config file (issue 15): options that set a config value
default to None ("not given"), so the precedence is flags > file > defaults for every command."""

import dataclasses

import pytest
import typer.main
from typer.testing import CliRunner

from ctslice.cli import app
from ctslice.config import SECTIONS

ALIASES = {"lr": "learning_rate", "surface_tolerance": "surface_tolerance_mm"}
NOT_SETTINGS = {("bench", "train", "size")}  # the demo cache's size, built by the benchmark: no [preprocess] run
SETTING_NAMES = {f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)}

TOML = """
[train]
device = "cpu"
epochs = 3
scheduler = "plateau"
learning_rate = 0.02
wandb = "disabled"

[loader]
batch_size = 3
workers = 1
"""


def _commands(command, path=()):
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, command


def test_every_option_that_sets_a_config_value_defaults_to_not_given():
    checked = []
    for path, command in _commands(typer.main.get_command(app)):
        if "config" not in {p.name for p in command.params}:
            continue  # reads no config file: its defaults override nothing
        for param in command.params:
            name = ALIASES.get(param.name, param.name)
            if param.param_type_name == "option" and name in SETTING_NAMES and (*path, param.name) not in NOT_SETTINGS:
                checked.append(f"{' '.join(path)} --{param.name}")
                assert param.default is None, f"{' '.join(path)} --{param.name} overrides the config file"
    assert {"train --batch_size", "bench train --device", "bench train --batch_size"} <= set(checked)


@pytest.fixture
def toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(TOML)
    return path


def test_train_keeps_the_files_values_unless_a_flag_is_given(tmp_path, toml, monkeypatch):
    seen = []

    def fake_training(cache, out, cfg, **_):
        seen.append(cfg)
        return type("Result", (), {"history": []})()

    monkeypatch.setattr("ctslice.train.run.run_training", fake_training)
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--cache", str(tmp_path), "--out", str(tmp_path / "run"),
                                 "--config", str(toml)])
    assert result.exit_code == 0, result.output
    t, loader = seen[-1].train, seen[-1].loader
    assert (t.device, t.epochs, t.scheduler, t.learning_rate, t.wandb) == ("cpu", 3, "plateau", 0.02, "disabled")
    assert (loader.batch_size, loader.workers) == (3, 1)
    result = runner.invoke(app, ["train", "--cache", str(tmp_path), "--out", str(tmp_path / "run2"),
                                 "--config", str(toml), "--batch-size", "5", "--epochs", "4"])
    assert result.exit_code == 0, result.output
    assert (seen[-1].loader.batch_size, seen[-1].train.epochs, seen[-1].train.device) == (5, 4, "cpu")


def test_bench_train_keeps_the_files_device_batch_size_and_workers(tmp_path, toml, monkeypatch):
    seen = []

    def fake_benchmark(cache, cfg, counts, steps, **_):
        seen.append((cfg, counts))
        return {}

    monkeypatch.setattr("ctslice.bench.train.run_train_benchmark", fake_benchmark)
    monkeypatch.setattr("ctslice.bench.train.format_table", lambda result: [])
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "train", "--cache", str(tmp_path), "--config", str(toml)])
    assert result.exit_code == 0, result.output
    cfg, counts = seen[-1]
    assert (cfg.train.device, cfg.loader.batch_size, cfg.loader.workers, counts) == ("cpu", 3, 1, (1,))
    assert cfg.train.wandb == "disabled"  # a benchmark logs nothing, whatever the file says
    result = runner.invoke(app, ["bench", "train", "--cache", str(tmp_path), "--config", str(toml),
                                 "--batch-size", "2", "--workers", "0,2"])
    assert result.exit_code == 0, result.output
    cfg, counts = seen[-1]
    assert (cfg.train.device, cfg.loader.batch_size, cfg.loader.workers, counts) == ("cpu", 2, 0, (0, 2))
