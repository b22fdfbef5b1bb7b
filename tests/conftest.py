"""Shared fixtures: tiny synthetic datasets and caches built from them (seconds, not minutes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ctslice.config import PreprocessConfig
from ctslice.preprocess.run import run_preprocess
from ctslice.synthetic import DemoSpec, generate_demo_dataset

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


@pytest.fixture
def tiny_cache(tiny_dataset, tmp_path) -> Path:
    """A cache built from tiny_dataset with TINY_SETTINGS (in-process, no dask)."""
    cache = tmp_path / "cache"
    report = run_preprocess(tiny_dataset, cache, TINY_SETTINGS)
    assert report.ok, report.failed
    return cache


def require_real_subject() -> Path:
    if not REAL_SUBJECT.is_dir():
        pytest.skip(f"reference subject not found at {REAL_SUBJECT}")
    return REAL_SUBJECT
