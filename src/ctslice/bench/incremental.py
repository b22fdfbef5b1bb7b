"""How much an incremental preprocess saves: rebuild after changing 1 subject of N, against a full build.

The ideal is 1/N of the full build plus a constant (discovery, the size-and-time check of every file, the new slice
index and manifest). The constant is measured too, as a run with nothing to do, so the printed numbers show both
parts instead of one ratio that hides them.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..config import PreprocessConfig
from ..errors import CtsliceError
from ..preprocess.run import run_preprocess
from ..synthetic import DemoSpec, generate_demo_dataset


@dataclass(frozen=True)
class IncrementalResult:
    subjects: int
    size: int
    slices: tuple[int, int]
    workers: int
    full_s: float
    """Build from an empty cache."""
    noop_s: float
    """Run with nothing changed: the constant part of every incremental run."""
    incremental_s: float
    """Run after one subject's CT was rewritten."""

    @property
    def ratio(self) -> float:
        return self.incremental_s / self.full_s

    @property
    def ideal(self) -> float:
        return 1 / self.subjects


def modify_subject(data: Path, subject: str, delta: int = 1) -> None:
    """Rewrite a subject's CT with every value shifted by `delta` HU: new bytes at the same path, as a corrected
    scan looks to the cache. (Shapes and masks stay, so the subject still preprocesses.)"""
    path = next(p for p in (Path(data) / subject / "ct.nii.gz", Path(data) / subject / "ct.nii") if p.exists())
    img = nib.load(path)
    values = np.asanyarray(img.dataobj).astype(np.int16) + np.int16(delta)
    nib.save(nib.Nifti1Image(values, img.affine, img.header), path)


def _run(data: Path, cache: Path, cfg: PreprocessConfig, expect: int) -> float:
    report = run_preprocess(data, cache, cfg)
    if not report.ok or len(report.processed) != expect:
        raise CtsliceError(f"benchmark run processed {report.processed} (expected {expect}), failed {report.failed}")
    return report.seconds


def bench_incremental(subjects: int = 12, size: int = 128, slices: tuple[int, int] = (48, 64), workers: int = 0,
                      workdir: Path | None = None, seed: int = 0) -> IncrementalResult:
    """Generate a demo dataset, build its cache, then time a no-op run and a run after modifying one subject."""
    if subjects < 2:
        raise CtsliceError(f"need at least 2 subjects, got {subjects}")
    cfg = PreprocessConfig(spacing=None, size=size, workers=workers)
    tmp = Path(tempfile.mkdtemp(prefix="ctslice-bench-incremental-", dir=workdir))
    try:
        data, cache = tmp / "data", tmp / "cache"
        ids = generate_demo_dataset(data, DemoSpec(subjects=subjects, size=size, slices=slices, seed=seed))
        full = _run(data, cache, cfg, expect=subjects)
        noop = _run(data, cache, cfg, expect=0)
        modify_subject(data, ids[len(ids) // 2])
        incremental = _run(data, cache, cfg, expect=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return IncrementalResult(subjects, size, tuple(slices), workers, full, noop, incremental)
