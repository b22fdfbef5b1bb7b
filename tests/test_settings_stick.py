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
    assert m.settings.size == 24 and m.settings.spacing is None and m.settings.seed == 7


def test_a_changed_flag_names_the_setting_and_the_cost(tiny_dataset, tmp_path):
    cache = tmp_path / "c"
    preprocess(tiny_dataset, cache, "--spacing", "native", "--size", "24")
    output = preprocess(tiny_dataset, cache, "--size", "32")
    assert "full rebuild of 5 subject(s): settings changed: size 24 -> 32" in output
    assert "5 processed" in output
    m = read_manifest(cache)
    assert m.settings.size == 32 and m.settings.spacing is None  # the other setting stuck


def test_config_file_values_override_the_cache_settings(tiny_dataset, tmp_path):
    cache, toml = tmp_path / "c", tmp_path / "s.toml"
    preprocess(tiny_dataset, cache, "--spacing", "native", "--size", "24")
    toml.write_text("[preprocess]\nspacing = 2.0\n")
    output = preprocess(tiny_dataset, cache, "--config", str(toml))
    assert "spacing native -> 2.0" in output
    assert read_manifest(cache).settings.size == 24


def test_a_changed_split_setting_is_said_and_rebuilds_nothing(tiny_dataset, tmp_path):
    (tiny_dataset / "meta.csv").unlink()  # with an official split for every subject the seed would not matter
    cache = tmp_path / "c"
    preprocess(tiny_dataset, cache, "--spacing", "native", "--size", "24")
    output = preprocess(tiny_dataset, cache, "--seed", "5")
    assert "split settings changed: seed 0 -> 5" in output and "0 processed" in output


# The rule itself is the library's: a script or a test that calls run_preprocess gets it too.

def test_a_library_update_given_only_size_keeps_the_other_settings(tiny_dataset, tmp_path):
    from ctslice.config import PreprocessConfig
    from ctslice.preprocess.run import run_preprocess

    cache = tmp_path / "c"
    built = PreprocessConfig(spacing=None, size=24, hu_min=-500, hu_max=900, val_fraction=0.4, seed=7, workers=0)
    assert run_preprocess(tiny_dataset, cache, built).ok
    before = read_manifest(cache).settings
    report = run_preprocess(tiny_dataset, cache, {"size": 32, "workers": 0})
    after = read_manifest(cache).settings
    assert report.rebuilt_all == "settings changed: size 24 -> 32" and len(report.processed) == 5
    assert after.values() == {**before.values(), "size": 32}


def test_a_library_call_without_settings_keeps_all_of_an_existing_caches(tiny_dataset, tmp_path):
    from ctslice.config import PreprocessConfig
    from ctslice.preprocess.run import run_preprocess

    cache = tmp_path / "c"
    built = PreprocessConfig(spacing=None, size=24, hu_min=-500, hu_max=900, val_fraction=0.4, seed=7, workers=0)
    assert run_preprocess(tiny_dataset, cache, built).ok
    before = read_manifest(cache)
    report = run_preprocess(tiny_dataset, cache)  # nothing to compute, so no workers start
    after = read_manifest(cache)
    assert report.rebuilt_all is None and report.processed == [] and len(report.unchanged) == 5
    assert after.settings == before.settings and after.splits == before.splits


def test_a_library_force_over_an_unusable_manifest_says_first_which_settings_it_uses(tiny_dataset, tiny_cache):
    from ctslice.preprocess.run import run_preprocess

    (tiny_cache / "manifest.json").write_text("{ not json")
    said = []
    report = run_preprocess(tiny_dataset, tiny_cache, {"workers": 0}, force=True, say=said.append)
    assert said[0].startswith("the manifest is unusable: the rebuild uses the cache's settings recovered from "
                              "the copy in zarr.json") and report.notes[0] == said[0]
    assert read_manifest(tiny_cache).settings.size == 40 and len(report.processed) == 5
