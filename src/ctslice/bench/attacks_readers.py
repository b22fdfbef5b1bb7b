"""A reader across updates (issue 15): while 2 or 3 `ctslice preprocess` runs update random subjects of its cache,

- a cache reader (a child process with `CacheReader`) reads every slice again and again, comparing each pass with
  its first: it must read its own version unchanged, or stop with "updated ... restart";
- a `ctslice train` runs on; after the updates it completes a whole epoch, then gets SIGTERM: it must stop with
  its one-line SIGTERM message, or end with "updated ... restart".
"damaged", a traceback or a hang is never survived; the dataset's files must not change.
"""

from __future__ import annotations

import random
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .attack import PREPROCESS_ARGS, Lines, Tally, Workspace, child_env, cli, finish, must, start

_READER = """
import select, sys
import numpy as np
from ctslice.cache.reader import CacheReader
from ctslice.errors import CacheError
reader = CacheReader(sys.argv[1])
first = [reader.read_at(i) for i in range(len(reader))]
print("opened", flush=True)
passes = 0
while True:
    try:
        now = [reader.read_at(i) for i in range(len(reader))]
    except CacheError as e:
        print("error " + " ".join(str(e).split()), flush=True)
        break
    passes += 1
    if not all(np.array_equal(a, c) and np.array_equal(b, d) for (a, b), (c, d) in zip(first, now)):
        print(f"different after {passes} passes", flush=True)
        break
    if select.select([sys.stdin], [], [], 0)[0]:
        print(f"same after {passes} passes", flush=True)
        break
"""
_EPOCH_END = re.compile(r"^epoch \d+/\d+: train loss")


def _update(rng: random.Random, data: Path, cache: Path) -> str:
    """One preprocess update of 1 to all subjects (new CT bytes: new folders, the old version to be removed)."""
    from .incremental import modify_subject

    subjects = sorted(p.name for p in data.iterdir() if (p / "ct.nii.gz").is_file())
    for sid in rng.sample(subjects, rng.randint(1, len(subjects))):
        modify_subject(data, sid, delta=rng.randint(1, 50))
    ran = cli(["preprocess", str(data), "--cache", str(cache), *PREPROCESS_ARGS], timeout=300)
    return "" if ran.rc == 0 else f"the update failed (rc {ran.rc}: {ran.tail(200)})"


def _said_update(text: str) -> bool:
    return "updated" in text and "restart" in text and "damaged" not in text


def _reader_attack(rng: random.Random, data: Path, cache: Path, updates: int) -> tuple[bool, str, bool, bool]:
    """(survived, what happened, traceback, hang)"""
    proc = subprocess.Popen([sys.executable, "-c", _READER, str(cache)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    lines = Lines(proc.stdout)
    try:
        if lines.wait_for(lambda line: line == "opened\n", 300) is None:
            return False, "the reader did not open the cache", "Traceback" in proc.stderr.read(), False
        problem = next(filter(None, (_update(rng, data, cache) for _ in range(updates))), "")
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        said = lines.wait_for(lambda line: not line.startswith("opened"), 300)
        if said is None:
            return False, "the reader did not answer", False, proc.poll() is None
        ok = said.startswith("same") or (said.startswith("error") and _said_update(said))
        return ok and not problem, f"{said.strip()} {problem}", False, False
    finally:
        proc.kill()
        proc.wait()


def _train_attack(rng: random.Random, ws: Workspace, data: Path, cache: Path, updates: int,
                  n: int) -> tuple[bool, str, bool, bool]:
    out = ws.root / f"reader-run-{n}"
    proc = start(["train", "--cache", str(cache), "--out", str(out), "--config", str(ws.config),
                  "--epochs", "100000"])
    lines = Lines(proc.stderr)
    timeout = 4 * ws.train_s + 120
    try:
        if lines.wait_for(lambda line: line.startswith("epoch 1/"), timeout) is None:
            ran = finish(proc, 60, lines)
            return _said_update(ran.text), f"no first epoch: {ran.tail(200)}", ran.traceback, ran.hung
        problem = next(filter(None, (_update(rng, data, cache) for _ in range(updates))), "")
        # Two epoch ends after the updates: the second epoch was read wholly after them.
        ended = [lines.wait_for(lambda line: bool(_EPOCH_END.match(line)), timeout) for _ in range(2)]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        ran = finish(proc, timeout, lines)
        stopped = ran.rc == 2 and "SIGTERM" in ran.text and None not in ended
        ok = (stopped or (ran.rc == 2 and _said_update(ran.text))) and "damaged" not in ran.text
        return ok and not problem, f"rc {ran.rc}, {problem} {ran.tail(200)}", ran.traceback, ran.hung
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def readers_across_updates(ws: Workspace, rng: random.Random, readers: int, trains: int) -> Tally:
    tally = Tally("reader across updates")
    data, cache = ws.root / "data-updates", ws.root / "cache-updates"
    shutil.copytree(ws.data, data)
    must(["preprocess", data, "--cache", cache, *PREPROCESS_ARGS])
    for n in range(readers + trains):
        updates = rng.choice([2, 3])
        what = "cache reader" if n < readers else "ctslice train"
        ok, said, traceback, hung = (_reader_attack(rng, data, cache, updates) if n < readers
                                     else _train_attack(rng, ws, data, cache, updates, n))
        tally.add(ok, traceback=traceback, hung=hung, why=f"{what} across {updates} updates: {said}")
    tally.notes.append(f"{readers} cache readers and {trains} training runs, 2 or 3 updates each")
    return tally
