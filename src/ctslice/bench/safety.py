"""`ctslice bench safety`: the cache against an unlucky and a hostile user, as counts a user can reproduce.

- Kills: preprocess and repair runs (`ctslice` processes) are SIGKILLed at a random moment of their run. Survived
  means: afterwards the manifest reads, verify finds no damage beyond what was injected before the run, readers
  open the cache, and the next run leaves a cache that verify accepts.
- Corruptions: a fresh copy of a good cache gets one random change to one of its files (byte flip, truncation,
  deletion, garbage appended, zeroed, or a file replaced by a FIFO or a link to /dev/zero). Caught means verify
  reports it (or refuses the cache); harmless means every slice still reads exactly as before; missed means a
  read returned other data without an error, the one outcome that must never happen.
- sync: in-process preprocess seconds with and without syncing the cache's filesystem before the manifest swap.
- The attacks of issue 15, each through the real CLI (or `load_checkpoint`) in a subprocess under a generous
  timeout, against a demo dataset, its cache and a finished tiny training run: write paths and two writers
  (`attacks_writes`), kills during training and checkpoint bit flips (`attacks_checkpoints`), readers across
  updates (`attacks_readers`). Every family, the two above included, is counted the same way (`attack.Tally`):
  tried, survived, tracebacks, hangs, files lost.

Random timers are the point here (unlike in the tests): the kills should land anywhere.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cache import store
from ..cache.manifest import read_manifest
from ..cache.reader import CacheReader
from ..cache.verify import verify_cache
from ..config import PreprocessConfig
from ..errors import CacheError
from ..preprocess.run import run_preprocess
from ..synthetic import DemoSpec, generate_demo_dataset
from .attack import Tally, Workspace
from .incremental import modify_subject

SETTINGS = PreprocessConfig(spacing=None, size=64, workers=0)
CLI_SETTINGS = ["--workers", "0", "--spacing", "native", "--size", "64"]
HANG_S = 600  # a run past this is a hang (the runs here take seconds)
FAMILIES = ("kills", "corruptions", "sync", "write-paths", "two-writers", "train-kills", "readers", "flips")
CORRUPTIONS = ("flip", "truncate", "delete", "append", "zero", "fifo", "devzero")


@dataclass
class SafetyResult:
    kills: int = 0
    killed_mid_run: int = 0
    survived: int = 0
    kill_failures: list[str] = field(default_factory=list)
    corruptions: int = 0
    caught: int = 0
    harmless: int = 0
    missed: list[str] = field(default_factory=list)
    fsync_s: float = 0.0
    no_fsync_s: float = 0.0
    tallies: list[Tally] = field(default_factory=list)
    """Counts per family, in the order run (the kills and corruptions above included)."""


def _all_slices(cache: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    reader = CacheReader(cache)
    return [reader.read_at(i) for i in range(len(reader))]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from ctslice.cli import app; app()", *args]


def _kill_once(rng: random.Random, data: Path, cache: Path, run_s: float) -> tuple[bool, str | None]:
    """One run killed at a random moment: (was it still running, None if the cache survived else what failed)."""
    injected: set[str] = set()
    if rng.random() < 0.5:
        sid = rng.choice(sorted(read_manifest(cache).subjects))
        chunk = store.chunk_path(cache, read_manifest(cache).subjects[sid].path, "image", 0)
        chunk.write_bytes(b"damaged")
        injected.add(sid)
        args = ["cache", "verify", str(cache), "--repair", "--data", str(data)]
    else:
        for sid in rng.sample(sorted(read_manifest(cache).subjects), 2):
            modify_subject(data, sid, delta=rng.randint(1, 50))
        args = ["preprocess", str(data), "--cache", str(cache), *CLI_SETTINGS]
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0, run_s))
    running = proc.poll() is None
    proc.kill()
    proc.wait()
    return running, _after_kill(data, cache, args, injected)


def _after_kill(data: Path, cache: Path, args: list[str], injected: set[str]) -> str | None:
    try:
        damaged = set(verify_cache(cache).damaged_subjects)
        if not damaged <= injected or any(p.subject is None for p in verify_cache(cache).problems):
            return f"after the kill verify found {sorted(damaged - injected)} or index/split problems"
        CacheReader(cache)
        try:
            subprocess.run(_cli(*args), check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=HANG_S)
        except subprocess.TimeoutExpired:
            return f"hung: the run after the kill did not end in {HANG_S} s"
        if not verify_cache(cache).ok:
            return "the run after the kill left a cache that verify rejects"
    except CacheError as e:
        return f"cache unusable after the kill: {e}"
    return None


def _corrupt(rng: random.Random, path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
    elif how == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif how == "devzero":
        path.unlink()
        path.symlink_to("/dev/zero")
    else:
        data = bytearray(path.read_bytes())
        if how == "flip" and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif how == "truncate":
            data = data[:rng.randrange(len(data))] if data else data
        elif how == "append":
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif how == "zero":
            data = bytearray(len(data))
        path.write_bytes(bytes(data))


def _corruption_once(rng: random.Random, pristine: Path, work: Path, good) -> str:
    """'caught', 'harmless' or a description of a miss."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(pristine, work, symlinks=True)
    files = sorted(p for p in work.rglob("*") if p.is_file() and p.name != ".lock")
    target, how = rng.choice(files), rng.choice(CORRUPTIONS)
    _corrupt(rng, target, how)
    where = f"{how} {target.relative_to(work)}"
    try:
        if not verify_cache(work).ok:
            return "caught"
    except CacheError:
        return "caught"
    except Exception as e:  # noqa: BLE001  (a crash of verify is a miss too)
        return f"{where}: verify crashed ({type(e).__name__}: {e})"
    try:
        now = _all_slices(work)
    except CacheError:
        return "caught"
    same = len(now) == len(good) and all(np.array_equal(a, b) and np.array_equal(c, d)
                                         for (a, c), (b, d) in zip(now, good))
    return "harmless" if same else f"{where}: verify passed and reads returned other data"


def _fsync_seconds(data: Path, cache: Path, sync: bool, repeats: int = 2) -> float:
    real = store.sync_filesystem
    best = float("inf")
    try:
        if not sync:
            store.sync_filesystem = lambda folder: None
        for _ in range(repeats):
            shutil.rmtree(cache, ignore_errors=True)
            best = min(best, run_preprocess(data, cache, PreprocessConfig(workers=0, spacing=None)).seconds)
    finally:
        store.sync_filesystem = real
        shutil.rmtree(cache, ignore_errors=True)
    return best


@dataclass(frozen=True)
class Counts:
    """How many attacks of each family `bench_safety` runs."""
    kills: int = 6
    corruptions: int = 60
    write_paths: int = 10
    pairs: int = 1
    train_kills: int = 4
    readers: int = 2
    reader_trains: int = 1
    flips: int = 100


def bench_safety(workdir: Path, counts: Counts = Counts(), seed: int = 0, fsync_subjects: int = 3,
                 families: tuple[str, ...] = FAMILIES) -> SafetyResult:
    from .attacks_checkpoints import bit_flips, kills_during_training
    from .attacks_readers import readers_across_updates
    from .attacks_writes import two_writers, write_paths

    workdir = Path(workdir)
    rng, result = random.Random(seed), SafetyResult()
    shutil.rmtree(workdir / "safety", ignore_errors=True)
    root = workdir / "safety"
    if "kills" in families or "corruptions" in families:
        _cache_attacks(root / "cache-attacks", rng, counts, seed, families, result)
    new = [f for f in ("write-paths", "two-writers", "train-kills", "readers", "flips") if f in families]
    if new:
        ws = Workspace.build(root / "attacks", seed)
        attacks = {"write-paths": lambda: write_paths(ws, rng, counts.write_paths),
                   "two-writers": lambda: two_writers(ws, rng, counts.pairs),
                   "train-kills": lambda: kills_during_training(ws, rng, counts.train_kills),
                   "readers": lambda: readers_across_updates(ws, rng, counts.readers, counts.reader_trains),
                   "flips": lambda: bit_flips(ws, rng, counts.flips)}
        result.tallies += [attacks[f]() for f in new]
    if "sync" in families:
        big = root / "fsync-data"
        generate_demo_dataset(big, DemoSpec(subjects=fsync_subjects, size=512, slices=(60, 80), seed=seed))
        result.fsync_s = _fsync_seconds(big, root / "fsync-cache", True)
        result.no_fsync_s = _fsync_seconds(big, root / "fsync-cache", False)
    shutil.rmtree(root, ignore_errors=True)
    return result


def _cache_attacks(root: Path, rng: random.Random, counts: Counts, seed: int, families: tuple[str, ...],
                   result: SafetyResult) -> None:
    """Random corruptions of a copy of a good cache, then kills of preprocess/repair runs (issue 7)."""
    data = root / "data"
    generate_demo_dataset(data, DemoSpec(subjects=8, size=64, slices=(30, 40), seed=seed))
    cache = root / "cache"
    run_s = run_preprocess(data, cache, SETTINGS).seconds + 1.5  # plus the CLI's start-up
    pristine = root / "pristine"
    shutil.copytree(cache, pristine, symlinks=True)
    good = _all_slices(pristine)
    if "corruptions" in families:
        tally = Tally("cache corruptions")
        for _ in range(counts.corruptions):
            outcome = _corruption_once(rng, pristine, root / "corrupted", good)
            result.corruptions += 1
            if outcome == "caught":
                result.caught += 1
            elif outcome == "harmless":
                result.harmless += 1
            else:
                result.missed.append(outcome)
            tally.add(outcome in ("caught", "harmless"), traceback="verify crashed" in outcome, why=outcome)
        tally.notes.append(f"{result.caught} caught by verify, {result.harmless} harmless (reads unchanged)")
        result.tallies.append(tally)
    if "kills" in families:
        tally = Tally("kill during preprocess/repair")
        for _ in range(counts.kills):
            running, problem = _kill_once(rng, data, cache, run_s)
            result.kills += 1
            result.killed_mid_run += running
            if problem is None:
                result.survived += 1
            else:
                result.kill_failures.append(problem)
            tally.add(problem is None, hung=bool(problem and problem.startswith("hung")), why=problem or "")
        tally.notes.append(f"{result.killed_mid_run} of {result.kills} kills landed mid-run")
        result.tallies.append(tally)
