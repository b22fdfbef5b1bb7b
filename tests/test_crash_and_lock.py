"""Crash safety and the one-writer lock, with real processes: a preprocess (or repair) killed with SIGKILL mid-way
leaves a cache that verify accepts as before, and the next run finishes the job; a second writer is refused.

The child stops at a known point (after its first finished subject it says so on stdout and waits on stdin), and
is killed there: no timers, so the kill always lands mid-way."""

import os
import shutil
import signal
import subprocess
import sys

import pytest

from ctslice.bench.incremental import modify_subject
from ctslice.cache import store
from ctslice.cache.lock import LOCK_NAME
from ctslice.cache.manifest import read_manifest
from ctslice.cache.verify import verify_cache
from ctslice.config import PreprocessConfig
from ctslice.data.dataset import SliceDataset
from ctslice.errors import CacheError
from ctslice.preprocess.repair import repair_cache
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


# Runs preprocess (or repair) and, after each finished subject, says "done" and waits for a line on stdin that
# never comes: the parent kills it there.
CHILD = """
import sys
from pathlib import Path

def pause(*_):
    print("done", flush=True)
    sys.stdin.readline()

mode, data, cache = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if mode == "preprocess":
    from ctslice.config import PreprocessConfig
    from ctslice.preprocess.run import run_preprocess
    run_preprocess(data, cache, PreprocessConfig(spacing=None, size=64, workers=0), progress=pause)
else:
    from ctslice.preprocess.repair import repair_cache
    repair_cache(cache, data, progress=pause)
"""


def start_paused(mode, data, cache):
    """Start the child and return once it has finished its first subject and waits (fails if it ended)."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode, str(data), str(cache)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.stdout.readline().strip() != b"done":
        pytest.fail(f"{mode} ended before its first subject: {proc.communicate()[1].decode()[-2000:]}")
    return proc


def kill(proc):
    assert proc.poll() is None, "the run had already finished: the kill would not test a crash"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()


def test_first_run_killed_midway_then_finished(medium, tmp_path):
    cache = tmp_path / "cache"
    proc = start_paused("preprocess", medium, cache)
    # A second writer while the first runs: refused (not queued), naming the first one's process.
    with pytest.raises(CacheError, match=f"another preprocess \\(pid {proc.pid} "):
        run_preprocess(medium, cache, SETTINGS)
    kill(proc)

    finished = subject_folders(cache)
    report = verify_cache(cache)
    assert report.ok, report.problems  # the manifest written at the start: valid and empty
    assert read_manifest(cache).subjects == {}
    assert {f"subjects/{name}" for name in finished} <= set(report.leftovers)

    rerun = run_preprocess(medium, cache, SETTINGS)
    assert rerun.ok and len(rerun.processed) + len(rerun.reused) == SPEC.subjects
    assert rerun.reused  # the subject finished before the kill
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
    proc = start_paused("preprocess", medium, cache)
    assert subject_folders(cache) - old_folders  # one new folder written, the manifest not yet swapped
    kill(proc)

    report = verify_cache(cache)
    assert report.ok, report.problems
    at_kill = {sid: r.key for sid, r in read_manifest(cache).subjects.items()}
    rerun = run_preprocess(medium, cache, SETTINGS)
    assert rerun.ok and sorted(rerun.processed + rerun.reused) == changed and rerun.reused
    new = {sid: r.key for sid, r in read_manifest(cache).subjects.items()}
    assert at_kill in (old, new)  # the manifest is the old one or the new one, never a mix
    assert all(new[sid] != old[sid] for sid in changed)
    assert verify_cache(cache).ok
    run_preprocess(medium, cache, SETTINGS)  # the previous version's folders go one run later
    final = verify_cache(cache)
    assert final.ok and final.leftovers == []
    assert subject_folders(cache) == {r.path.split("/")[1] for r in read_manifest(cache).subjects.values()}


HOLD_LOCK = ("import sys\nfrom ctslice.cache.lock import cache_lock\n"
             "with cache_lock(sys.argv[1]):\n    print('locked', flush=True)\n    sys.stdin.readline()\n")


def test_live_lock_refuses_a_second_run_and_a_dead_one_is_taken_over(medium, tmp_path):
    from typer.testing import CliRunner

    from ctslice.cli import app

    cache = tmp_path / "cache"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(cache)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"locked"
    result = CliRunner().invoke(app, ["preprocess", str(medium), "--cache", str(cache), *CLI_SETTINGS])
    assert result.exit_code == 2 and f"pid {holder.pid}" in result.output and "Traceback" not in result.output
    assert not (cache / "manifest.json").exists()

    kill(holder)  # dies holding the lock; its lock file still names it
    assert f'"pid": {holder.pid}' in (cache / LOCK_NAME).read_text()
    assert run_preprocess(medium, cache, SETTINGS).ok
    assert f'"pid": {os.getpid()}' in (cache / LOCK_NAME).read_text()


def test_repair_killed_midway_leaves_the_cache_as_verify_found_it(medium, tmp_path):
    cache = tmp_path / "cache"
    assert run_preprocess(medium, cache, SETTINGS).ok
    damaged = sorted(read_manifest(cache).subjects)[:2]
    for sid in damaged:
        chunk = store.chunk_path(cache, read_manifest(cache).subjects[sid].path, "image", 0)
        chunk.write_bytes(chunk.read_bytes()[:-1] + b"x")
    manifest = (cache / "manifest.json").read_bytes()
    kill(start_paused("repair", medium, cache))  # one damaged subject recomputed, the other not yet

    assert (cache / "manifest.json").read_bytes() == manifest
    assert verify_cache(cache).damaged_subjects == damaged and len(verify_cache(cache).problems) == 2
    assert len(SliceDataset(cache, "train")) + len(SliceDataset(cache, "val")) > 0  # readers accept it
    result = repair_cache(cache, medium)
    assert result.damaged == damaged and result.preprocess.ok and verify_cache(cache).ok
