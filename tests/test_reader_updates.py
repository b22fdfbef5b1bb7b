"""Readers during updates (issue 15): a reader keeps reading the version it opened through any number of
preprocess runs (its lease keeps it on disk), the version goes at the first run after the reader let go, and a
chunk missing from a version that is no longer current is an update, never "damaged"."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SETTINGS

from ctslice.bench.incremental import modify_subject
from ctslice.cache import layout
from ctslice.cache.manifest import read_manifest
from ctslice.cache.reader import CacheReader
from ctslice.errors import CacheError
from ctslice.preprocess.run import run_preprocess

SRC = str(Path(__file__).resolve().parents[1] / "src")


def read_all(reader: CacheReader) -> list[tuple[np.ndarray, np.ndarray]]:
    return [reader.read_at(row) for row in range(len(reader))]


def folders(cache: Path) -> set[str]:
    return {f"{layout.SUBJECTS_DIR}/{p.name}" for p in (cache / layout.SUBJECTS_DIR).iterdir() if p.is_dir()}


def update(data: Path, cache: Path, delta: int) -> None:
    """A real update of every subject: new CT bytes, so every subject gets a new folder."""
    for sid in sorted(read_manifest(cache).subjects):
        modify_subject(data, sid, delta=delta)
    report = run_preprocess(data, cache, TINY_SETTINGS)
    assert report.ok and len(report.processed) == 5, report.failed


@pytest.mark.parametrize("updates", [2, 3])
def test_a_reader_reads_its_version_through_several_updates_and_it_goes_once_let_go(tiny_dataset, tiny_cache,
                                                                                   updates):
    reader = CacheReader(tiny_cache)
    worker_copy = pickle.loads(pickle.dumps(reader))  # a spawned DataLoader worker: relies on the builder's lease
    before = read_all(reader)
    own = {r.path for r in reader.manifest.subjects.values()}
    for n in range(updates):
        update(tiny_dataset, tiny_cache, delta=n + 1)
    assert own <= folders(tiny_cache)  # two or more runs later the reader's version is still there
    for (image, label), (got_image, got_label) in zip(before, read_all(reader)):
        np.testing.assert_array_equal(got_image, image)
        np.testing.assert_array_equal(got_label, label)
    np.testing.assert_array_equal(worker_copy.read_at(len(reader) - 1)[0], before[-1][0])

    reader.close()
    update(tiny_dataset, tiny_cache, delta=updates + 1)
    assert not own & folders(tiny_cache)  # let go: the next run removed it
    with pytest.raises(CacheError, match="updated or removed while reading.*restart"):
        worker_copy.read_at(0)
    fresh = CacheReader(tiny_cache)
    assert len(fresh) == len(before) and not np.array_equal(fresh.read_at(0)[0], before[0][0])


def test_a_dead_readers_version_goes_at_the_next_run(tiny_dataset, tiny_cache):
    reader = CacheReader(tiny_cache)
    own = {r.path for r in reader.manifest.subjects.values()}
    del reader  # garbage collection lets go, as the end of a process does
    for n in range(2):
        update(tiny_dataset, tiny_cache, delta=n + 1)
    assert not own & folders(tiny_cache)
    assert len(list((tiny_cache / layout.READERS_DIR).iterdir())) == 2  # only the current and previous versions


def test_a_chunk_missing_from_a_version_being_deleted_is_an_update_not_damage(tiny_dataset, tiny_cache):
    reader = CacheReader(tiny_cache)
    old = read_manifest(tiny_cache)
    update(tiny_dataset, tiny_cache, delta=1)
    # What a reader without a lease (a cache clean, a cache from before leases) sees while a later run deletes its
    # version: the folder still there, some chunk files already gone.
    record = old.subjects[reader.subjects[0]]
    (tiny_cache / record.path / layout.chunk_key("image", 0, 0, 0)).unlink()
    with pytest.raises(CacheError, match="updated or removed while reading") as err:
        reader.read(0, 0)
    assert "damaged" not in str(err.value)


def test_a_chunk_missing_from_the_current_version_is_damage(tiny_cache):
    reader = CacheReader(tiny_cache)
    record = reader.manifest.subjects[reader.subjects[0]]
    (tiny_cache / record.path / layout.chunk_key("label", 1, 0, 0)).unlink()
    with pytest.raises(CacheError, match="missing, the cache is damaged"):
        reader.read(0, 1)


TRAIN_CONFIG = ("[train]\nval_images = 1\nscheduler = \"none\"\nwandb = \"disabled\"\ndevice = \"cpu\"\n"
                "[model]\nbase_width = 4\ndepth = 3\n[loader]\nbatch_size = 8\nworkers = 0\n")


def epochs_done(run: Path) -> int:
    import json

    path = run / "training_history.json"
    return len(json.loads(path.read_text())["epochs"]) if path.exists() else 0


def wait_for_line(proc: subprocess.Popen, prefix: str, seen: list[str]) -> None:
    """Read the child's stderr until a line starts with `prefix` (fails, with its output, if it ends first)."""
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(prefix):
            return
    proc.wait()
    pytest.fail(f"train ended (rc {proc.returncode}) before {prefix!r}:\n{''.join(seen)[-3000:]}")


def test_a_real_training_run_outlives_two_updates_of_its_cache(tmp_path):
    from ctslice.config import PreprocessConfig
    from ctslice.synthetic import DemoSpec, generate_demo_dataset

    data, cache, run = tmp_path / "data", tmp_path / "cache", tmp_path / "run"
    generate_demo_dataset(data, DemoSpec(subjects=4, size=32, slices=(6, 8), seed=5))
    settings = PreprocessConfig(spacing=None, size=32, workers=0)
    assert run_preprocess(data, cache, settings).ok
    opened = {r.path for r in read_manifest(cache).subjects.values()}
    (tmp_path / "c.toml").write_text(TRAIN_CONFIG)
    proc = subprocess.Popen([sys.executable, "-m", "ctslice", "train", "--cache", str(cache), "--out", str(run),
                             "--config", str(tmp_path / "c.toml"), "--epochs", "100000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": SRC})
    seen: list[str] = []
    try:
        wait_for_line(proc, "epoch 1/", seen)  # the run has opened the cache and read it once
        for delta in (1, 2):  # two updates of every subject while it trains
            for sid in sorted(read_manifest(cache).subjects):
                modify_subject(data, sid, delta=delta)
            assert len(run_preprocess(data, cache, settings).processed) == 4
        assert opened <= folders(cache)  # kept for the running reader (its lease), though two versions old
        # Epoch done+2 starts after epoch done+1 ended, i.e. after both updates: a whole epoch read after them.
        wait_for_line(proc, f"epoch {epochs_done(run) + 2}/", seen)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=300)[1]
    output = "".join(seen) + rest
    assert proc.returncode == 2 and "SIGTERM: stopped" in output, output[-3000:]
    assert "damaged" not in output and "updated" not in output and "Traceback" not in output
    assert run_preprocess(data, cache, settings).processed == []  # the run ended: its version goes now
    assert not opened & folders(cache)


def test_a_version_being_removed_is_not_leased_and_a_cache_without_leases_still_reads(tiny_cache):
    import fcntl

    from ctslice.cache.lease import VersionGone, take_lease, version_token

    manifest = read_manifest(tiny_cache)
    path = tiny_cache / layout.READERS_DIR / f"{version_token(manifest)}.json"
    with open(path) as writer:  # what a preprocess run holds while it removes a version
        fcntl.flock(writer, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(VersionGone, match="updated or removed while reading"):
            take_lease(tiny_cache, manifest)
    path.unlink()  # a cache written before leases existed
    assert take_lease(tiny_cache, manifest) is None
    reader = CacheReader(tiny_cache)
    assert reader._lease is None and reader.read_at(0)[0].shape == tuple(reader.shapes[0, 1:])
