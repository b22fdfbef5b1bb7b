"""The worker cap, the manifest's statistics against the arrays, and plain-zarr access to a cache."""

import csv
import json

import numpy as np
import zarr

from ctslice.cache import store
from ctslice.cache.manifest import read_manifest
from ctslice.config import PreprocessConfig
from ctslice.preprocess.run import run_preprocess
from ctslice.cache.statistics import intensity_statistics
from ctslice.preprocess.workers import cap_workers

GIB = 2**30


def test_workers_are_capped_by_cores_subjects_and_memory():
    assert cap_workers(1000, cores=2, subjects=50, available_bytes=64 * GIB, per_worker_bytes=GIB) == (
        2, "--workers 1000 capped to 2: 2 core(s) available")
    assert cap_workers(8, cores=16, subjects=3, available_bytes=64 * GIB, per_worker_bytes=GIB)[0] == 3
    workers, note = cap_workers(8, cores=16, subjects=50, available_bytes=5 * GIB, per_worker_bytes=2 * GIB)
    assert workers == 2 and "GiB" in note
    assert cap_workers(4, cores=16, subjects=50, available_bytes=GIB, per_worker_bytes=8 * GIB)[0] == 1
    assert cap_workers(4, cores=16, subjects=50, available_bytes=64 * GIB, per_worker_bytes=GIB) == (4, None)


def test_a_capped_run_says_so_once(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr("ctslice.preprocess.plan.available_resources", lambda: (1, 64 * GIB))
    said = []
    report = run_preprocess(tiny_dataset, tmp_path / "c", PreprocessConfig(spacing=None, size=40, workers=1000),
                            say=said.append)
    assert report.ok and said == ["--workers 1000 capped to 1: 1 core(s) available"] == report.notes


def test_statistics_match_the_arrays(tiny_cache):
    m = read_manifest(tiny_cache)
    values, per_label = [], np.zeros(m.num_labels, np.int64)
    ml = np.zeros(m.num_labels)
    for record in m.subjects.values():
        group = store.open_subject(tiny_cache, record.path)
        image, label = np.asarray(group["image"][...]), np.asarray(group["label"][...])
        values.append(image[label > 0])
        counts = np.bincount(label.ravel(), minlength=m.num_labels)
        per_label += counts
        ml += counts * np.prod(record.spacing) / 1000
    values = np.concatenate(values).astype(np.float64)
    got = m.statistics["intensity"]
    assert got["voxels"] == values.size
    assert np.isclose(got["mean"], values.mean(), atol=1e-3) and np.isclose(got["std"], values.std(), atol=1e-3)
    assert got["min"] == values.min() and got["max"] == values.max()
    assert got["p00_5"] == np.percentile(values, 0.5, method="inverted_cdf")
    assert got["p99_5"] == np.percentile(values, 99.5, method="inverted_cdf")
    for index, name in m.labels.items():
        if index:
            s = m.statistics["structures"][name]
            assert s["voxels"] == per_label[index] and np.isclose(s["ml"], ml[index], atol=1e-3)
            assert s["subjects"] == sum(r.label_voxels[index] > 0 for r in m.subjects.values())
    thickness = m.statistics["spacing"]["slice_thickness"]
    assert thickness[0] <= min(r.spacing[0] for r in m.subjects.values()) + 1e-4


def test_intensity_statistics_of_nothing_and_of_one_value():
    hist = np.zeros(65536, np.int64)
    assert intensity_statistics(hist) == {"voxels": 0}
    hist[32768 + 40] = 3
    assert intensity_statistics(hist) == {"voxels": 3, "mean": 40.0, "std": 0.0, "p00_5": 40, "p99_5": 40,
                                          "min": 40, "max": 40}


def test_plain_zarr_reads_the_cache_and_root_files_match_the_manifest(tiny_cache):
    m = read_manifest(tiny_cache)
    root = zarr.open_group(tiny_cache, mode="r")
    assert sorted(root["subjects"].group_keys()) == sorted(r.path.split("/")[1] for r in m.subjects.values())
    record = next(iter(m.subjects.values()))
    image = root[record.path]["image"][...]
    assert image.shape == tuple(record.shape) and image.dtype == np.int16
    assert json.loads((tiny_cache / "label_map.json").read_text()) == m.label_map
    with open(tiny_cache / "splits.csv", newline="") as f:
        assert {row["subject"]: row["split"] for row in csv.DictReader(f)} == m.split_of()


def test_memory_available_to_a_subject_is_the_dask_workers_limit_inside_one():
    """Outside a dask worker: the machine's available memory, without importing distributed (seconds a run);
    inside one: at most the worker's memory limit."""
    import subprocess
    import sys

    code = ("import sys; from ctslice.imaging.memory import available_bytes; assert available_bytes() > 0; "
            "assert 'distributed' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    from dask.distributed import Client, LocalCluster

    from ctslice.imaging.memory import available_bytes

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                      memory_limit="3GiB") as cluster, Client(cluster) as client:
        assert client.submit(available_bytes, pure=False).result() <= 3 * GIB
