"""One typed config: command line > TOML file > defaults, with clear errors for unknown or invalid settings."""

import pytest

from ctslice.config import PreprocessConfig, load_config
from ctslice.errors import CtsliceError


def test_defaults_then_file_then_command_line(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[preprocess]\nspacing = "native"\nsize = 256\n\n[loader]\nbatch_size = 8\n')
    assert load_config().preprocess.size == PreprocessConfig().size == 512
    from_file = load_config(toml)
    assert from_file.preprocess.spacing is None and from_file.preprocess.size == 256
    assert from_file.loader.batch_size == 8
    both = load_config(toml, {"preprocess": {"size": 128, "spacing": "2.0", "seed": None}})
    assert both.preprocess.size == 128 and both.preprocess.spacing == 2.0
    assert both.preprocess.seed == 0  # None means "not given"


def test_unknown_and_invalid_settings_are_named(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[preprocess]\nsizes = 3\n")
    with pytest.raises(CtsliceError, match="unknown setting.*sizes"):
        load_config(toml)
    with pytest.raises(CtsliceError, match="unknown section"):
        load_config(None, {"prepro": {}})
    with pytest.raises(CtsliceError, match="size must be"):
        load_config(None, {"preprocess": {"size": 3}})
    with pytest.raises(CtsliceError, match="spacing must be"):
        load_config(None, {"preprocess": {"spacing": "fine"}})
    with pytest.raises(CtsliceError, match="context_slices"):
        load_config(None, {"loader": {"context_slices": 2}})
    for name, value in (("weight_decay", -1.0), ("cosine_eta_min", -1e-6), ("plateau_min_lr", -1.0),
                        ("learning_rate", float("inf"))):  # each was a traceback from torch, or a NaN run
        with pytest.raises(CtsliceError, match=f"{name} must be"):
            load_config(None, {"train": {name: value}})
    (tmp_path / "bad.toml").write_text("[preprocess\n")
    with pytest.raises(CtsliceError, match="cannot read config"):
        load_config(tmp_path / "bad.toml")


def test_content_settings_are_what_the_cache_hash_covers():
    cfg = PreprocessConfig(workers=3, seed=9)
    assert set(cfg.content_settings()) == {"spacing", "size", "hu_min", "hu_max", "layout"}
    assert cfg.split_settings() == {"val_fraction": 0.2, "seed": 9}
