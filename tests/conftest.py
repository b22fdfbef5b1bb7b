"""Shared fixtures: tiny synthetic datasets and caches built from them (seconds, not minutes)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from ctslice.cache.manifest import read_manifest, write_manifest
from ctslice.config import PreprocessConfig
from ctslice.preprocess.run import run_preprocess
from ctslice.synthetic import DemoSpec, generate_demo_dataset

# The tests' models are tiny (a few thousand weights on 32 px slices): a second intra-op thread only adds
# synchronisation, and on a shared 2-core machine OpenMP threads that spin-wait for each other make a step many
# times slower. The same for the processes the tests start (train children, torchrun ranks), which inherit this.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_SUBJECT = SHARED_DATA / "totalseg_example"

# Small enough that a build takes about a second in-process (workers=0), big enough to have structure.
TINY = DemoSpec(subjects=5, size=32, slices=(6, 10), seed=3)
TINY_SETTINGS = PreprocessConfig(spacing=None, size=40, workers=0)


@pytest.fixture(scope="session")
def _tiny_dataset_master(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "data"
    generate_demo_dataset(root, TINY)
    return root


@pytest.fixture
def tiny_dataset(_tiny_dataset_master, tmp_path) -> Path:
    """A fresh copy of a 5-subject synthetic TotalSegmentator dataset, free to modify."""
    root = tmp_path / "data"
    shutil.copytree(_tiny_dataset_master, root)
    return root


@pytest.fixture(scope="session")
def _tiny_cache_master(_tiny_dataset_master, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("tiny") / "cache"
    report = run_preprocess(_tiny_dataset_master, cache, TINY_SETTINGS)
    assert report.ok, report.failed
    return cache


@pytest.fixture
def tiny_cache(tiny_dataset, tmp_path, _tiny_cache_master) -> Path:
    """A cache of tiny_dataset with TINY_SETTINGS: built once per test run and copied for each test (copies
    keep file times, so the copied dataset is unchanged against the copied cache), free to modify."""
    cache = tmp_path / "cache"
    shutil.copytree(_tiny_cache_master, cache, ignore=shutil.ignore_patterns(".lock"))
    manifest = read_manifest(cache)
    manifest.dataset["root"] = str(tiny_dataset.resolve())  # as if built from this test's copy of the dataset
    write_manifest(cache, manifest)  # (keeps its checksum right)
    return cache


@pytest.fixture(scope="session")
def cache32(tmp_path_factory) -> Path:
    """6 synthetic subjects at 32x32 px (divisible by 2**(depth-1) for the small test U-Nets), with a val split;
    shared by the training tests, read-only (copy it to modify)."""
    root = tmp_path_factory.mktemp("train")
    generate_demo_dataset(root / "data", DemoSpec(subjects=6, size=32, slices=(8, 12), seed=5))
    report = run_preprocess(root / "data", root / "cache", PreprocessConfig(spacing=None, size=32, workers=0))
    assert report.ok and read_manifest(root / "cache").splits["val"]
    return root / "cache"


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch) -> None:
    """wandb offline with its config and cache under tmp_path, whatever the user's environment says."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))


def require_real_subject() -> Path:
    if not REAL_SUBJECT.is_dir():
        pytest.skip(f"reference subject not found at {REAL_SUBJECT}")
    return REAL_SUBJECT
