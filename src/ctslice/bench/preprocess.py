"""Preprocessing speed against its floor: the time to only read a subject's files with stock nibabel."""

from __future__ import annotations

import hashlib
import resource
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np

from ..cache import store
from ..cache.manifest import read_manifest
from ..config import PreprocessConfig
from ..preprocess import parallel
from ..preprocess.run import run_preprocess
from ..preprocess.sources import discover
from .demo import benchmark_spec, ensure_demo_dataset
from .subject_write import measure_subject_write, subject_arrays

TARGET_VS_FLOOR = 1.0  # issue 19: in-process at most the stock read's time
TARGET_SPEEDUP = 1.8  # issue 19: 2 workers at least 1.8x one


def read_floor_seconds(data: Path) -> tuple[float, float]:
    """(wall, CPU) seconds to decode every file of every subject (CT and masks) with stock nibabel, one thread."""
    dataset = discover(data)
    start, cpu = time.perf_counter(), time.process_time()
    for subject in dataset.subjects:
        for name in subject.files:
            np.asanyarray(nib.load(dataset.root / name).dataobj)
    return time.perf_counter() - start, time.process_time() - cpu


def arrays_digest(cache: Path) -> str:
    """sha256 of every cached array (name, dtype, shape, bytes), subjects in id order: equal digests, equal caches."""
    digest = hashlib.sha256()
    for sid, record in sorted(read_manifest(cache).subjects.items()):
        group = store.open_subject(cache, record.path)
        for name in sorted(group.array_keys()):
            a = np.asarray(group[name][...])
            digest.update(f"{sid}/{name}/{a.dtype}/{a.shape}".encode())
            digest.update(a.tobytes())
    return digest.hexdigest()[:16]


def _timed_build(data: Path, cache: Path, cfg: PreprocessConfig) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of this process, its threads and the worker processes it started and ended,
    arrays digest) of one build."""
    shutil.rmtree(cache, ignore_errors=True)
    cpu = _cpu_with_children()
    report = run_preprocess(data, cache, cfg)
    cpu = _cpu_with_children() - cpu
    if not report.ok:
        raise RuntimeError(f"benchmark build failed: {report.failed}")
    return report.seconds, cpu, arrays_digest(cache)


def _cpu_with_children() -> float:
    """CPU seconds of this process and of its ended children (a local cluster's processes, once it is closed)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _import_subject_code() -> None:
    from ..preprocess import subject  # noqa: F401


@contextmanager
def clocked_cluster(seconds: list[float]) -> Iterator[None]:
    """While inside, the local cluster each build starts (parallel.dask_client) is timed: the seconds from asking
    for it until its workers are up with the subject code imported, and from the last result until it is closed,
    are appended to `seconds`. That part is paid once per run whatever the subjects; the rest is what more workers
    can speed up."""
    original = parallel.dask_client

    @contextmanager
    def timed(workers: int, scheduler: str | None) -> Iterator[object]:
        start = time.perf_counter()
        with original(workers, scheduler) as client:
            client.wait_for_workers(workers)
            client.run(_import_subject_code)  # what each worker's first task would import
            seconds.append(time.perf_counter() - start)
            yield client
            start = time.perf_counter()
        seconds.append(time.perf_counter() - start)

    parallel.dask_client = timed
    try:
        yield
    finally:
        parallel.dask_client = original


def run_preprocess_benchmark(out: Path, subjects: int = 4, size: int = 512, slices: tuple[int, int] = (80, 100),
                             workers: int = 2, data: Path | None = None, layout: str = "slices") -> dict:
    """Seconds per subject after one untimed warm-up build: the stock read floor (the faster of two measurements,
    before and after the builds), in-process, 1 and `workers` dask workers, and the CPU seconds of each (all
    processes; on a machine shared with other jobs, less noisy than wall time). For the dask rows also the
    cluster's own start and stop (clocked_cluster), and the rows without it (the part that can scale with workers).
    On the demo dataset, or on `data` (dask rows only with 2+ subjects: one subject is always processed
    in-process). `layout`: the cache's array layout ("slices", the default, or "shards")."""
    out = Path(out)
    if data is None:
        data = ensure_demo_dataset(out / f"demo-{size}px-{subjects}", benchmark_spec(subjects, size, slices))
    n = len(discover(data).subjects)
    cfg = PreprocessConfig(layout=layout)  # otherwise the defaults a user gets: 1.5 mm, 512 px
    result = {"data": str(data), "subjects": n, "size": size, "slices": list(slices),
              "settings": cfg.content_settings()}
    # Untimed first build: the timed ones then see the libraries imported and the files in the page cache, as the
    # floor does (on the one real subject, importing zarr and friends took 10x the subject's own work).
    _timed_build(data, out / "cache-bench-preprocess", replace(cfg, workers=0))
    floor, floor_cpu = read_floor_seconds(data)
    runs = {"in_process": 0} if n < 2 else {"in_process": 0, "dask_1_worker": 1, f"dask_{workers}_workers": workers}
    digests = set()
    for name, w in runs.items():
        cluster: list[float] = []
        with clocked_cluster(cluster):
            seconds, cpu, digest = _timed_build(data, out / "cache-bench-preprocess", replace(cfg, workers=w))
        result[f"{name}_s_per_subject"] = seconds / n
        result[f"{name}_cpu_s_per_subject"] = cpu / n
        if cluster:
            result[f"{name}_cluster_s"] = sum(cluster)
            result[f"{name}_s_per_subject_without_cluster"] = (seconds - sum(cluster)) / n
        digests.add(digest)
    again, again_cpu = read_floor_seconds(data)
    result["read_floor_s_per_subject"] = min(floor, again) / n
    result["read_floor_cpu_s_per_subject"] = min(floor_cpu, again_cpu) / n
    result["arrays_digest"] = digests.pop() if len(digests) == 1 else sorted(digests)
    result["in_process_vs_floor"] = result["in_process_s_per_subject"] / result["read_floor_s_per_subject"]
    result["in_process_cpu_vs_floor_cpu"] = (result["in_process_cpu_s_per_subject"]
                                             / result["read_floor_cpu_s_per_subject"])
    if n >= 2:
        for suffix in ("", "_without_cluster"):
            many = result[f"dask_{workers}_workers_s_per_subject{suffix}"]
            result[f"speedup_1_to_{workers}_workers{suffix}"] = (result[f"dask_1_worker_s_per_subject{suffix}"]
                                                                 / many if many else float("nan"))
    # The write of one subject, zarr against the direct writer (bench/subject_write.py), on the cache just built.
    result["subject_write"] = measure_subject_write(subject_arrays(out / "cache-bench-preprocess"),
                                                    out / "bench-subject-write")
    shutil.rmtree(out / "cache-bench-preprocess", ignore_errors=True)
    return result
