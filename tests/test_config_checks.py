"""Every setting is checked the same way (issue 15): its type (a bool or a list is not a number), finite, in its
range or one of its choices, in one line naming the file, the key and the value; never a traceback or a hang.
The same check serves settings read from a checkpoint or a cache (validate_settings)."""

import dataclasses
import math
import os
import typing

import pytest
from typer.testing import CliRunner

from ctslice.cli import app
from ctslice.config import SECTIONS, AugmentConfig, Config, ConfigError, load_config, validate_settings
from ctslice.config.checks import Limit, check_value
from test_hostile_files import no_hang  # noqa: F401  (the fixture: a test that would hang fails instead)


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


BAD_TOML = [  # (file text, the key and the value the message must name); each was a traceback, a hang or accepted
    ("[preprocess]\nspacing = [1.5]\n", "spacing", "[1.5]"),  # a list for a number: a traceback
    ("[preprocess]\nspacing = true\n", "spacing", "true"),  # became 1 mm
    ("[preprocess]\nspacing = inf\n", "spacing", "inf"),  # an all-background cache, exit 0
    ("[preprocess]\nspacing = nan\n", "spacing", "nan"),
    ("[preprocess]\nspacing = 0.0\n", "spacing", "0.0"),
    ("[preprocess]\nspacing = 1e6\n", "spacing", "1000000.0"),
    ("[preprocess]\nsize = 256.0\n", "size", "256.0"),
    ("[preprocess]\nhu_min = 100\nhu_max = 0\n", "hu_min", "100"),
    ("[preprocess]\nval_fraction = nan\n", "val_fraction", "nan"),
    ("[preprocess]\nworkers = -1\n", "workers", "-1"),
    ("[loader]\nprefetch_factor = 0\nworkers = 2\n", "prefetch_factor", "0"),  # a traceback from torch
    ("[loader]\nbatch_size = true\n", "batch_size", "true"),
    ("[loader]\ncontext_slices = 2\n", "context_slices", "2"),
    ("[loader]\nseed = -1\n", "seed", "-1"),
    ("[loader]\npin_memory = 1\n", "pin_memory", "1"),
    ("[model]\nbase_width = 10000000\n", "base_width", "10000000"),
    ("[model]\ndepth = 60\n", "depth", "60"),
    ("[train]\nlearning_rate = nan\n", "learning_rate", "nan"),
    ("[train]\nepochs = [1, 2]\n", "epochs", "[1, 2]"),
    ("[train]\ngrad_clip = inf\n", "grad_clip", "inf"),
    ("[train]\nwindow_min = 500\nwindow_max = 100\n", "window_min", "500"),
    ("[train]\nscheduler = 3\n", "scheduler", "3"),
    ("[train]\nplateau_factor = 1.0\n", "plateau_factor", "1.0"),
    ("[augment]\nrotate_degrees = nan\n", "rotate_degrees", "nan"),  # a traceback
    ("[augment]\nbrightness = nan\n", "brightness", "nan"),  # a traceback
    ("[augment]\nbrightness = inf\n", "brightness", "inf"),  # a traceback
    ("[augment]\nscale = -0.1\n", "scale", "-0.1"),
    ("[evaluate]\nsurface_tolerance_mm = nan\n", "surface_tolerance_mm", "nan"),
    ("[evaluate]\ndetection_dice = 2\n", "detection_dice", "2"),
    ("[evaluate]\ndevice = \"gpu\"\n", "device", "'gpu'"),
    ("train = 5\n", "train", "5"),  # a section given as a value: a traceback
    ("rotate_degrees = 3.0\n", "rotate_degrees", "3.0"),  # a setting outside any section
]


@pytest.mark.parametrize("text, key, value", BAD_TOML, ids=[t.strip().replace("\n", " ") for t, _, _ in BAD_TOML])
def test_a_bad_value_in_a_file_is_one_line_naming_file_key_and_value(tmp_path, text, key, value):
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(toml)
    message = str(caught.value)
    assert str(toml) in message and key in message and value in message, message
    assert "\n" not in message


def test_evaluates_old_loader_keys_name_their_new_section(tmp_path):
    toml = tmp_path / "old.toml"
    for key in ("batch_size", "workers"):
        toml.write_text(f"[evaluate]\n{key} = 8\n")
        with pytest.raises(ConfigError) as caught:
            load_config(toml)
        assert f"{toml} [evaluate]: {key} is now set in [loader] ({key} = 8 under [loader])" in str(caught.value)
    toml.write_text("[loader]\nbatch_size = 8\nworkers = 0\n")
    assert (load_config(toml).loader.batch_size, load_config(toml).loader.workers) == (8, 0)


def test_a_file_that_is_not_utf8_or_not_a_file_is_named(tmp_path, no_hang):  # noqa: F811
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[train]\nwandb_project = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="latin.toml is not UTF-8"):
        load_config(latin)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # reading it would wait for a writer forever
    with pytest.raises(ConfigError, match="fifo.toml is not a regular file"):
        load_config(fifo)
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_config(tmp_path)


@pytest.mark.parametrize("command", [["preprocess", "DATA"], ["train"]])
def test_cli_refuses_a_fifo_config_in_one_line(tmp_path, no_hang, command):  # noqa: F811
    (tmp_path / "DATA").mkdir()
    fifo = tmp_path / "c.toml"
    os.mkfifo(fifo)
    args = [tmp_path / a if a == "DATA" else a for a in command]
    result = cli(*args, "--cache", tmp_path / "cache", "--config", fifo)
    assert result.exit_code == 2, result.output
    assert "not a regular file" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command, text, key", [
    (["train"], "[augment]\nrotate_degrees = nan\n", "[augment]: rotate_degrees"),
    (["preprocess", "DATA"], "[preprocess]\nspacing = true\n", "[preprocess]: spacing"),
])
def test_cli_bad_config_value_is_one_error_line(tmp_path, command, text, key):
    (tmp_path / "DATA").mkdir()
    toml = tmp_path / "c.toml"
    toml.write_text(text)
    args = [tmp_path / a if a == "DATA" else a for a in command]
    result = cli(*args, "--cache", tmp_path / "cache", "--config", toml)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and key in lines[0] and "c.toml" in lines[0], lines


def test_flags_are_checked_and_named_as_the_command_line():
    with pytest.raises(ConfigError, match=r"command line \[train\]: learning_rate must be a finite number.*nan"):
        load_config(None, {"train": {"learning_rate": float("nan")}})
    with pytest.raises(ConfigError, match=r"command line \[preprocess\]: spacing .* got 'fine'"):
        load_config(None, {"preprocess": {"spacing": "fine"}})
    assert load_config(None, {"preprocess": {"spacing": "native"}}).preprocess.spacing is None


def test_a_rule_between_fields_names_where_each_value_came_from(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[preprocess]\nhu_min = 500\n")
    with pytest.raises(ConfigError, match=r"c.toml and command line \[preprocess\]: hu_min must be below hu_max"):
        load_config(toml, {"preprocess": {"hu_max": 100}})


def test_validate_settings_checks_a_checkpoints_or_a_caches_settings():
    # the one entry point: what Config.to_dict saves comes back as the same Config, None (native spacing) kept
    native = dataclasses.replace(Config(), preprocess=dataclasses.replace(Config().preprocess, spacing=None))
    assert validate_settings(native.to_dict(), "ckpt.pth") == native
    assert validate_settings({"preprocess": {"spacing": None, "size": 64}}, "manifest").preprocess.size == 64
    for settings, named in [({"model": {"depth": 60}}, "depth"), ({"train": "x"}, "train = 'x'"),
                            ({"preprocess": {"spacing": float("nan")}}, "spacing"),
                            ({"model": {"base_width": True}}, "base_width"), ({"modle": {}}, "modle"),
                            ({"augment": {"rotate_degrees": None}}, "rotate_degrees"), ([1, 2], "got an array")]:
        with pytest.raises(ConfigError, match=r"ckpt\.pth") as caught:
            validate_settings(settings, "ckpt.pth")
        assert named in str(caught.value)


def test_section_validate_checks_an_instance_built_in_code():
    with pytest.raises(ConfigError, match="rotate_degrees must be a finite number"):
        AugmentConfig(rotate_degrees=math.nan).validate()
    AugmentConfig().validate()


def test_the_rules_are_no_settings():
    for cls in SECTIONS.values():  # evaluation.json lists __dataclass_fields__: the rules must not be among them
        assert set(cls.__dataclass_fields__) == {f.name for f in dataclasses.fields(cls)}
        assert set(cls.LIMITS) <= set(cls.__dataclass_fields__)


def _numeric_fields():
    for name, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            options = typing.get_args(hints[f.name]) or (hints[f.name],)
            if int in options or float in options:
                yield name, cls, f.name, float in options


@pytest.mark.parametrize("section, cls, field, is_float", list(_numeric_fields()),
                         ids=[f"{s}.{f}" for s, _, f, _ in _numeric_fields()])
def test_every_number_has_a_range_and_refuses_bools_nan_and_out_of_range(section, cls, field, is_float):
    limit = cls.LIMITS.get(field)
    assert isinstance(limit, Limit), f"[{section}] {field} has no range in LIMITS"
    assert check_value(cls, field, getattr(cls(), field)) is None  # the default passes
    assert check_value(cls, field, True) is not None
    assert check_value(cls, field, [1]) is not None
    assert check_value(cls, field, limit.high + 1) is not None
    assert check_value(cls, field, limit.low if limit.low_open else limit.low - 1) is not None
    if is_float:
        for value in (math.nan, math.inf, -math.inf):
            assert "finite" in check_value(cls, field, value)
    else:
        assert check_value(cls, field, float(limit.low)) is not None  # 3.0 is not an integer
