"""`preprocess --force` over an unusable manifest (issue 15): it says, before it starts, which settings it rebuilds
with and why, and uses the cache's own settings where they can still be read, not silently the defaults."""

import json

from typer.testing import CliRunner

from ctslice.cache.manifest import read_manifest
from ctslice.cli import app
from ctslice.config import PreprocessConfig


def force(data, cache, *flags):
    return CliRunner().invoke(app, ["preprocess", str(data), "--cache", str(cache), "--workers", "0", "--force",
                                    *flags])


def built_with(cache):
    settings = read_manifest(cache).settings
    return settings.spacing, settings.size


def said_before_the_work(output, text):
    flat = " ".join(output.split())
    assert text in flat, output
    assert flat.index(text) < flat.index(" processed, "), output


def test_force_over_a_manifest_that_is_not_json_uses_the_settings_copy(tiny_dataset, tiny_cache):
    assert built_with(tiny_cache) == (None, 40) != (PreprocessConfig().spacing, PreprocessConfig().size)
    (tiny_cache / "manifest.json").write_text("{ not json")
    result = force(tiny_dataset, tiny_cache)
    assert result.exit_code == 0, result.output
    said_before_the_work(result.output, "recovered from the copy in zarr.json and the flags given (spacing native, size 40,")
    assert built_with(tiny_cache) == (None, 40)


def test_force_over_a_manifest_with_a_bad_checksum_uses_its_own_settings(tiny_dataset, tiny_cache):
    path = tiny_cache / "manifest.json"
    data = json.loads(path.read_text())
    data["totals"]["slices"] += 1  # a checksum mismatch: the settings themselves still parse
    path.write_text(json.dumps(data))
    result = force(tiny_dataset, tiny_cache)
    assert result.exit_code == 0, result.output
    said_before_the_work(result.output, "recovered from the damaged manifest's own settings and the flags given "
                                        "(spacing native, size 40")
    assert built_with(tiny_cache) == (None, 40)


def test_force_without_any_readable_settings_says_the_defaults_are_used_and_how_to_pass_others(tiny_dataset,
                                                                                             tiny_cache):
    (tiny_cache / "manifest.json").write_text("{ not json")
    (tiny_cache / "zarr.json").unlink()
    result = force(tiny_dataset, tiny_cache, "--spacing", "native", "--size", "48")
    assert result.exit_code == 0, result.output
    said_before_the_work(result.output, "no copy of the cache's settings is readable: the rebuild uses the defaults "
                                        "and the flags given (spacing native, size 48,")
    assert "--size" in result.output and built_with(tiny_cache) == (None, 48)
