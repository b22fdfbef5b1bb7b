"""CacheSettings: the typed form of what a cache was built with. Its JSON and its hash are those of the caches
already on disk (format version unchanged), and the way back to a configuration goes through the config checks."""

import json

import pytest

from ctslice.cache.manifest import read_manifest, recover_settings
from ctslice.cache.settings import CacheSettings, settings_diff
from ctslice.config import ConfigError, PreprocessConfig
from ctslice.errors import CacheError

LABELS = {"0": "background", "1": "liver"}


def test_the_hash_is_the_one_existing_caches_carry():
    # Pinned from the manifest code before the typed settings: a change here would rebuild every cache on disk.
    assert CacheSettings.from_config(PreprocessConfig(), LABELS).hash == "4d0352fc5c662494"
    native = CacheSettings.from_config(PreprocessConfig(spacing=None, size=40), {**LABELS, "2": "spleen"})
    assert native.hash == "196c63842d49572a"


def test_the_manifest_json_keeps_its_shape_and_reads_back(tiny_cache):
    on_disk = json.loads((tiny_cache / "manifest.json").read_text())["settings"]
    assert set(on_disk) == {"spacing", "size", "hu_min", "hu_max", "layout", "hash", "split"}
    assert set(on_disk["split"]) == {"val_fraction", "seed"}
    settings = read_manifest(tiny_cache).settings
    assert isinstance(settings, CacheSettings) and settings.to_json() == on_disk
    assert CacheSettings.from_json(on_disk) == settings
    assert (settings.size, settings.spacing, settings.seed) == (40, None, 0)


def test_to_a_config_and_back_is_the_same_settings():
    cfg = PreprocessConfig(spacing=None, size=64, hu_min=-500, hu_max=900, val_fraction=0.3, seed=4, workers=3)
    settings = CacheSettings.from_config(cfg, LABELS)
    back = settings.config(PreprocessConfig(workers=3))
    assert back == cfg and CacheSettings.from_config(back, LABELS) == settings


def test_settings_read_from_a_file_are_checked_on_the_way_to_a_config():
    bad = CacheSettings.from_json({"spacing": None, "size": 5, "hu_min": 0, "hu_max": 10, "hash": "x",
                                   "split": {"val_fraction": 0.2, "seed": 0}})  # reads: checked as a config
    with pytest.raises(ConfigError, match=r"the cache's settings \[preprocess\]: size"):
        bad.config()
    with pytest.raises(CacheError, match="lack size"):
        CacheSettings.from_json({"spacing": None, "hu_min": 0, "hu_max": 10, "hash": "x", "split": {}})
    with pytest.raises(CacheError, match="split"):
        CacheSettings.from_json({"spacing": None, "size": 5, "hu_min": 0, "hu_max": 10, "hash": "x"})


def test_settings_diff_names_content_and_label_changes_only():
    old = CacheSettings.from_config(PreprocessConfig(size=128), LABELS)
    new = CacheSettings.from_config(PreprocessConfig(size=256, seed=3), {**LABELS, "2": "spleen"})
    assert settings_diff(old, LABELS, new, {**LABELS, "2": "spleen"}) == {
        "size": [128, 256], "label_map": [1, 2, {"added": ["spleen"], "removed": []}]}


def test_recovered_settings_are_typed_from_either_copy(tiny_cache):
    built = read_manifest(tiny_cache).settings
    path = tiny_cache / "manifest.json"
    data = json.loads(path.read_text())
    data["totals"]["slices"] += 1  # checksum mismatch: its own settings still parse
    path.write_text(json.dumps(data))
    assert recover_settings(tiny_cache) == (built, "the damaged manifest's own settings")
    path.write_text("{ not json")
    settings, origin = recover_settings(tiny_cache)
    assert origin == "the copy in zarr.json" and settings.values() == built.values() and settings.hash == ""
    (tiny_cache / "zarr.json").unlink()
    assert recover_settings(tiny_cache) == (None, "none readable")
