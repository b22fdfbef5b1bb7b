"""An existing cache's settings are the defaults of its update; a flag that differs names what changed."""

from typer.testing import CliRunner

from ctslice.cache.manifest import read_manifest
from ctslice.cli import app


def preprocess(data, cache, *flags):
    result = CliRunner().invoke(app, ["preprocess", str(data), "--cache", str(cache), "--workers", "0", *flags])
    assert result.exit_code == 0, result.output
    return result.output


def test_update_without_flags_keeps_the_cache_settings(tiny_dataset, tmp_path):
    cache = tmp_path / "c"
    preprocess(tiny_dataset, cache, "--spacing", "native", "--size", "24", "--seed", "7")
    output = preprocess(tiny_dataset, cache)
    assert "0 processed" in output and "5 unchanged" in output and "full build" not in output
    m = read_manifest(cache)
    assert m.settings["size"] == 24 and m.settings["spacing"] is None and m.settings["split"]["seed"] == 7


def test_a_changed_flag_names_the_setting_and_the_cost(tiny_dataset, tmp_path):
    cache = tmp_path / "c"
    preprocess(tiny_dataset, cache, "--spacing", "native", "--size", "24")
    output = preprocess(tiny_dataset, cache, "--size", "32")
    assert "full rebuild of 5 subject(s): settings changed: size 24 -> 32" in output
    assert "5 processed" in output
    m = read_manifest(cache)
    assert m.settings["size"] == 32 and m.settings["spacing"] is None  # the other setting stuck


def test_config_file_values_override_the_cache_settings(tiny_dataset, tmp_path):
    cache, toml = tmp_path / "c", tmp_path / "s.toml"
    preprocess(tiny_dataset, cache, "--spacing", "native", "--size", "24")
    toml.write_text("[preprocess]\nspacing = 2.0\n")
    output = preprocess(tiny_dataset, cache, "--config", str(toml))
    assert "spacing native -> 2.0" in output
    assert read_manifest(cache).settings["size"] == 24


def test_a_changed_split_setting_is_said_and_rebuilds_nothing(tiny_dataset, tmp_path):
    (tiny_dataset / "meta.csv").unlink()  # with an official split for every subject the seed would not matter
    cache = tmp_path / "c"
    preprocess(tiny_dataset, cache, "--spacing", "native", "--size", "24")
    output = preprocess(tiny_dataset, cache, "--seed", "5")
    assert "split settings changed: seed 0 -> 5" in output and "0 processed" in output
