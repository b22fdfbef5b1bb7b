"""Preprocessing speed against its floor: the time to only read a subject's files with nibabel."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np

from ..config import PreprocessConfig
from ..preprocess.run import run_preprocess
from ..preprocess.sources import discover
from .demo import benchmark_spec, ensure_demo_dataset


def read_floor_seconds(data: Path) -> float:
    """Seconds to decode every file of every subject (CT and masks) with nibabel, one process."""
    dataset = discover(data)
    start = time.perf_counter()
    for subject in dataset.subjects:
        for name in subject.files:
            np.asanyarray(nib.load(dataset.root / name).dataobj)
    return time.perf_counter() - start


def _timed_build(data: Path, cache: Path, cfg: PreprocessConfig) -> float:
    shutil.rmtree(cache, ignore_errors=True)
    report = run_preprocess(data, cache, cfg)
    if not report.ok:
        raise RuntimeError(f"benchmark build failed: {report.failed}")
    return report.seconds


def run_preprocess_benchmark(out: Path, subjects: int = 4, size: int = 512, slices: tuple[int, int] = (80, 100),
                             workers: int = 2) -> dict:
    out = Path(out)
    data = ensure_demo_dataset(out / f"demo-{size}px-{subjects}", benchmark_spec(subjects, size, slices))
    cfg = PreprocessConfig()  # the defaults a user gets: 1.5 mm, 512 px
    floor = read_floor_seconds(data)
    result = {"subjects": subjects, "size": size, "slices": list(slices), "settings": cfg.content_settings(),
              "read_floor_s_per_subject": floor / subjects}
    runs = {"in_process": 0, "dask_1_worker": 1, f"dask_{workers}_workers": workers}
    for name, n in runs.items():
        seconds = _timed_build(data, out / "cache-bench-preprocess", replace(cfg, workers=n))
        result[f"{name}_s_per_subject"] = seconds / subjects
    result["in_process_vs_floor"] = result["in_process_s_per_subject"] / result["read_floor_s_per_subject"]
    result[f"speedup_1_to_{workers}_workers"] = (result["dask_1_worker_s_per_subject"]
                                                 / result[f"dask_{workers}_workers_s_per_subject"])
    shutil.rmtree(out / "cache-bench-preprocess", ignore_errors=True)
    return result
