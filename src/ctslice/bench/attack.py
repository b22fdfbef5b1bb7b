"""What every attack of `ctslice bench safety` shares: the real CLI in a subprocess under a generous timeout (a hang
is a run past it), the rule for "refused with one line", hashes of the user's files before and after, and the
counts per family (tried, survived, tracebacks, hangs, files lost).

    ws = Workspace.build(root, seed)               # demo dataset, its cache, a finished tiny training run
    run = cli(["predict", ...], timeout=120)      # Ran(rc, out, err, hung)
    before = snapshot(ws.data, ws.cache)           # {path: sha256}; lost(before, snapshot(...)) after
    tally.add(survived, run, lost=n, why="...")    # one attack's outcome
"""

from __future__ import annotations

import hashlib
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Files that ctslice itself rewrites while reading or writing (locks, reader leases): not the user's files.
_NOT_USERS = {".lock"}
_NOT_USERS_DIRS = {".readers"}

# The demo model of the attacks: tiny, so a run of a few epochs takes seconds (plus the figures).
TRAIN_TOML = """[train]
val_images = 1
scheduler = "none"
wandb = "disabled"
device = "cpu"
keep_checkpoints = 2
[model]
base_width = 4
depth = 3
[loader]
batch_size = 8
workers = 0
"""
PREPROCESS_ARGS = ["--workers", "0", "--spacing", "native", "--size", "32"]


@dataclass
class Ran:
    rc: int | None  # None: killed after the timeout (a hang)
    out: str
    err: str

    @property
    def hung(self) -> bool:
        return self.rc is None

    @property
    def text(self) -> str:
        return self.out + self.err

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.text

    def refused_in_one_line(self) -> bool:
        """Exit 2 with exactly one `error:` line and no traceback: a known problem, said once."""
        return self.rc == 2 and not self.traceback and \
            sum(line.startswith("error:") for line in self.text.splitlines()) == 1

    def tail(self, n: int = 300) -> str:
        return " ".join(self.text.split())[-n:]


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ctslice", *map(str, args)]


def child_env() -> dict[str, str]:
    """The running ctslice's source first, so the subprocesses run the same code as this process."""
    src = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p),
            "COLUMNS": "200"}


def cli(args: list[str], timeout: float = 180, cwd: Path | None = None) -> Ran:
    """`ctslice ARGS` as a user runs it; past `timeout` seconds it is killed and counted as a hang."""
    proc = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(), cwd=cwd, stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return Ran(None, out, err)
    return Ran(proc.returncode, out, err)


def start(args: list[str], stdin: bool = False) -> subprocess.Popen:
    """`ctslice ARGS` started in the background, its output in pipes (text)."""
    return subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(), stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)


def finish(proc: subprocess.Popen, timeout: float, lines: "Lines | None" = None) -> Ran:
    """Wait for a started child (killed after `timeout`: a hang); with `lines`, its stderr was read by them."""
    try:
        if lines is None:
            out, err = proc.communicate(timeout=timeout)
        else:
            proc.wait(timeout=timeout)  # (its stdout is a line or two: the pipe cannot fill meanwhile)
            out = proc.stdout.read() if proc.stdout else ""
            lines.ended.wait(timeout)
            err = "".join(lines.seen)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return Ran(None, "", "".join(lines.seen) if lines else "")
    return Ran(proc.returncode, out, err)


class Lines:
    """A child's output lines, read by a thread, so that the bench can wait for a line with a timeout (the child's
    own report says where it is; the timeout only catches a hang)."""

    def __init__(self, stream) -> None:
        self.seen: list[str] = []
        self.ended = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.seen.append(line)
            self._queue.put(line)
        self.ended.set()
        self._queue.put(None)

    def wait_for(self, wanted: Callable[[str], bool], timeout: float) -> str | None:
        """The next line for which `wanted` is true; None if the stream ended or `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                return None
            if line is None:
                self._queue.put(None)  # stays ended for later waits
                return None
            if wanted(line):
                return line


def must(args: list[str], timeout: float = 600) -> Ran:
    """A setup step of the bench (not an attack): it must succeed."""
    from ..errors import CtsliceError

    ran = cli(list(map(str, args)), timeout=timeout)
    if ran.rc != 0:
        raise CtsliceError(f"bench safety: setting up with `ctslice {args[0]}` failed: {ran.tail()}")
    return ran


def snapshot(*folders: Path) -> dict[str, str]:
    """SHA-256 of every regular file under `folders` (lock files and reader leases excluded: ctslice's own)."""
    hashes = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.name in _NOT_USERS or _NOT_USERS_DIRS & set(path.parts) or path.is_symlink() \
                    or not path.is_file():
                continue
            hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def lost(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Files of `before` that are gone or changed in `after`."""
    return [p for p, h in before.items() if after.get(p) != h]


def added(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [p for p in after if p not in before]


@dataclass
class Tally:
    """The counts of one family of attacks, and what went wrong in each attack that was not survived."""
    family: str
    tried: int = 0
    survived: int = 0
    tracebacks: int = 0
    hangs: int = 0
    files_lost: int = 0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, survived: bool, ran: Ran | None = None, lost: int = 0, why: str = "",
            traceback: bool = False, hung: bool = False) -> None:
        """One attack. A traceback, a hang or a lost file is never survived."""
        traceback = traceback or (ran is not None and ran.traceback)
        hung = hung or (ran is not None and ran.hung)
        ok = survived and not traceback and not hung and not lost
        self.tried += 1
        self.survived += ok
        self.tracebacks += traceback
        self.hangs += hung
        self.files_lost += lost
        if not ok:
            detail = why or "not survived"
            if hung:
                detail += " (hung: killed after the timeout)"
            if ran is not None:
                detail += f" [rc {ran.rc}: {ran.tail()}]"
            self.failures.append(detail)

    @property
    def ok(self) -> bool:
        return self.survived == self.tried


def total(tallies: list[Tally]) -> Tally:
    whole = Tally("total")
    for t in tallies:
        whole.tried += t.tried
        whole.survived += t.survived
        whole.tracebacks += t.tracebacks
        whole.hangs += t.hangs
        whole.files_lost += t.files_lost
    return whole


@dataclass
class Workspace:
    """What the attacks aim at: a demo dataset, its cache, a finished tiny training run (the user's earlier
    output), and the settings to train more runs like it."""
    root: Path
    data: Path
    cache: Path
    run: Path
    config: Path
    train_s: float  # how long that training run took, start-up included

    @property
    def checkpoint(self) -> Path:
        return self.run / "checkpoint_best.pth"

    @classmethod
    def build(cls, root: Path, seed: int, epochs: int = 1) -> "Workspace":
        from ..synthetic import DemoSpec, generate_demo_dataset

        root.mkdir(parents=True, exist_ok=True)
        data, cache, run, config = root / "data", root / "cache", root / "run", root / "tiny.toml"
        generate_demo_dataset(data, DemoSpec(subjects=4, size=32, slices=(6, 8), seed=seed))
        config.write_text(TRAIN_TOML)
        for args in (["preprocess", data, "--cache", cache, *PREPROCESS_ARGS],
                     ["train", "--cache", cache, "--out", run, "--config", config, "--epochs", str(epochs)]):
            began = time.perf_counter()
            must(args)
        return cls(root, data, cache, run, config, time.perf_counter() - began)
