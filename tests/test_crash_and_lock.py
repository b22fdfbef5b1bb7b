"""Crash safety and the one-writer lock, with real processes: a preprocess killed with SIGKILL mid-way leaves a
cache that verify accepts, and the next run finishes the job; a second writer is refused at once."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ctslice.bench.incremental import modify_subject
from ctslice.cache.lock import LOCK_NAME
from ctslice.cache.manifest import read_manifest
from ctslice.cache.verify import verify_cache
from ctslice.config import PreprocessConfig
from ctslice.errors import CacheError
from ctslice.preprocess.run import run_preprocess
from ctslice.synthetic import DemoSpec, generate_demo_dataset

# About 0.2 s a subject in-process: a run takes a couple of seconds, so a kill after the first subject is mid-way.
SPEC = DemoSpec(subjects=8, size=64, slices=(30, 40), seed=5)
SETTINGS = PreprocessConfig(spacing=None, size=64, workers=0)
CLI_SETTINGS = ["--workers", "0", "--spacing", "native", "--size", "64"]
CLI = [sys.executable, "-c", "from ctslice.cli import app; app()"]


@pytest.fixture(scope="module")
def _medium_master(tmp_path_factory):
    root = tmp_path_factory.mktemp("medium") / "data"
    generate_demo_dataset(root, SPEC)
    return root


@pytest.fixture
def medium(_medium_master, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(_medium_master, data)
    return data


def subject_folders(cache):
    folder = cache / "subjects"
    return {p.name for p in folder.iterdir() if p.name != "zarr.json"} if folder.is_dir() else set()


def start_preprocess(data, cache):
    return subprocess.Popen([*CLI, "preprocess", str(data), "--cache", str(cache), *CLI_SETTINGS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_until(proc, condition, timeout=60.0):
    """Poll until condition() holds; fail if the process ends first (then there was nothing to kill mid-way)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"preprocess ended before the kill: {proc.communicate()[1].decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("preprocess made no progress")
        time.sleep(0.002)


def kill(proc):
    assert proc.poll() is None, "the run had already finished: the kill would not test a crash"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()


def test_first_run_killed_midway_then_finished(medium, tmp_path):
    cache = tmp_path / "cache"
    proc = start_preprocess(medium, cache)
    wait_until(proc, lambda: subject_folders(cache))
    # A second writer while the first runs: refused at once, naming the first one's process.
    start = time.monotonic()
    with pytest.raises(CacheError, match=f"another preprocess \\(pid {proc.pid} "):
        run_preprocess(medium, cache, SETTINGS)
    assert time.monotonic() - start < 5
    kill(proc)

    finished = subject_folders(cache)
    report = verify_cache(cache)
    assert report.ok, report.problems  # the manifest written at the start: valid and empty
    assert read_manifest(cache).subjects == {}
    assert {f"subjects/{name}" for name in finished} <= set(report.leftovers)

    rerun = run_preprocess(medium, cache, SETTINGS)
    assert rerun.ok and len(rerun.processed) + len(rerun.reused) == SPEC.subjects
    assert {read_manifest(cache).subjects[sid].path.split("/")[1] for sid in rerun.reused} == finished
    after = verify_cache(cache)
    assert after.ok and after.leftovers == []


def test_incremental_run_killed_midway_keeps_the_old_manifest(medium, tmp_path):
    cache = tmp_path / "cache"
    assert run_preprocess(medium, cache, SETTINGS).ok
    old = {sid: r.key for sid, r in read_manifest(cache).subjects.items()}
    old_folders = subject_folders(cache)
    changed = sorted(old)[:6]
    for sid in changed:
        modify_subject(medium, sid)
    proc = start_preprocess(medium, cache)
    wait_until(proc, lambda: subject_folders(cache) - old_folders)
    kill(proc)

    report = verify_cache(cache)
    assert report.ok, report.problems
    at_kill = {sid: r.key for sid, r in read_manifest(cache).subjects.items()}
    rerun = run_preprocess(medium, cache, SETTINGS)
    assert rerun.ok and sorted(rerun.processed + rerun.reused) == changed and rerun.reused
    new = {sid: r.key for sid, r in read_manifest(cache).subjects.items()}
    assert at_kill in (old, new)  # the manifest is the old one or the new one, never a mix
    assert all(new[sid] != old[sid] for sid in changed)
    final = verify_cache(cache)
    assert final.ok and final.leftovers == []
    assert subject_folders(cache) == {r.path.split("/")[1] for r in read_manifest(cache).subjects.values()}


HOLD_LOCK = ("import sys, time\nfrom ctslice.cache.lock import cache_lock\n"
             "with cache_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n")


def test_live_lock_refuses_a_second_run_and_a_dead_one_is_taken_over(medium, tmp_path):
    from typer.testing import CliRunner

    from ctslice.cli import app

    cache = tmp_path / "cache"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(cache)], stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"locked"
    result = CliRunner().invoke(app, ["preprocess", str(medium), "--cache", str(cache), *CLI_SETTINGS])
    assert result.exit_code == 2 and f"pid {holder.pid}" in result.output and "Traceback" not in result.output
    assert not (cache / "manifest.json").exists()

    kill(holder)  # dies holding the lock; its lock file still names it
    assert f'"pid": {holder.pid}' in (cache / LOCK_NAME).read_text()
    assert run_preprocess(medium, cache, SETTINGS).ok
    assert f'"pid": {os.getpid()}' in (cache / LOCK_NAME).read_text()
