"""Attacks on checkpoints (issue 15).

- kills during training: a `ctslice train` (a new run, or `--resume` of the one killed before) is SIGKILLed at a
  random moment of its run, or, every other time, the moment its temporary `checkpoint_best.pth` file appears (a
  kill while the best checkpoint is written). Survived: afterwards every checkpoint in the folder loads, a
  `checkpoint_last.pth` that records a best score has its `checkpoint_best.pth`, a best checkpoint that existed
  before the kill still exists, and the next `--resume` completes or is refused with one line.
- bit flips: single random bit flips in a copy of a trained checkpoint, each loaded by `load_checkpoint` in a
  child process (a hang is a load past the timeout). Survived: refused with one line naming the file, or loaded
  with exactly the original tensors and settings (a flip in zip metadata torch does not read).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..model.checkpoint import BEST, LAST
from .attack import Lines, Ran, Tally, Workspace, child_env, finish, start


def _checkpoint_problems(run: Path, best_before: bool) -> str:
    from ..errors import CtsliceError
    from ..model.checkpoint import read_checkpoint_dict as load_checkpoint

    for path in sorted(run.glob("checkpoint_*.pth")):
        try:
            load_checkpoint(path)
        except CtsliceError as e:
            return f"{path.name} does not load: {e}"
    if best_before and not (run / BEST).is_file():
        return f"{BEST} existed before the kill and is gone"
    if (run / LAST).is_file():
        state = load_checkpoint(run / LAST).get("state") or {}
        if state.get("best_score") is not None and not (run / BEST).is_file():
            return f"{LAST} records a best score but {BEST} is missing"
    return ""


def _kill_at_best_write(proc: subprocess.Popen, run: Path, timeout: float) -> str:
    """SIGKILL `proc` the moment a temporary of checkpoint_best.pth appears (polled every millisecond): "landed",
    "ended" (the run ended first) or "hung" (still running after `timeout`)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if any(run.glob(f".{BEST}.*.tmp")):
            proc.kill()
            return "landed"
        time.sleep(0.001)
    running = proc.poll() is None
    proc.kill()
    return "hung" if running else "ended"


def _epochs_done(run: Path) -> int:
    from ..errors import CtsliceError
    from ..model.checkpoint import read_checkpoint_dict as load_checkpoint

    try:
        return int(load_checkpoint(run / LAST).get("epoch") or 0) if (run / LAST).is_file() else 0
    except CtsliceError:
        return 0  # (counted by _checkpoint_problems; the next run's resume says what it makes of it)


def _train_args(ws: Workspace, run: Path, epochs: int) -> list[str]:
    if (run / LAST).is_file():
        return ["train", "--resume", str(run), "--epochs", str(epochs)]
    return ["train", "--cache", str(ws.cache), "--out", str(run), "--config", str(ws.config), "--epochs", str(epochs)]


def kills_during_training(ws: Workspace, rng: random.Random, kills: int) -> Tally:
    """A chain of runs in one folder, each killed, each next one resuming the last (or refused in one line when
    the kill left nothing to resume from, e.g. an epoch checkpoint but no checkpoint_last.pth: then a new folder)."""
    from .attack import cli

    tally = Tally("kill during checkpoint write")
    run = ws.root / "killed-run-0"
    mid_write = refusals = 0
    for n in range(kills):
        best_before = (run / BEST).is_file()
        proc = start(_train_args(ws, run, _epochs_done(run) + 3))
        lines = Lines(proc.stderr)
        if n % 2:
            moment = _kill_at_best_write(proc, run, timeout=4 * ws.train_s + 120)
        else:
            time.sleep(rng.uniform(0, 1.5 * ws.train_s))
            moment = "landed" if proc.poll() is None else "ended"
            proc.kill()
        ran = finish(proc, 60, lines)
        mid_write += bool(run.is_dir() and list(run.glob(".checkpoint_*.tmp")))
        problem = _checkpoint_problems(run, best_before) if run.is_dir() else ""
        how = "at the best checkpoint's write" if n % 2 else "at a random moment"
        if moment == "ended":
            how += " (the run had ended)"
        refused = ran.refused_in_one_line()
        tally.add(not problem and (ran.rc in (-9, 0) or refused), ran, lost=int("is gone" in problem),
                  hung=moment == "hung", why=f"kill {how}: {problem or f'rc {ran.rc}'}")
        if refused:  # nothing to resume from: a user starts a new run
            refusals += 1
            said = next(line for line in ran.text.splitlines() if line.startswith("error:"))
            tally.notes.append(f"run {n + 1} refused: {said[:200]}")
            run = ws.root / f"killed-run-{n + 1}"
    ran = cli(_train_args(ws, run, _epochs_done(run) + 1), timeout=600)
    problem = _checkpoint_problems(run, False) if run.is_dir() else ""
    tally.add((ran.rc == 0 or ran.refused_in_one_line()) and not problem, ran,
              why=f"resume after the kills: {problem or 'neither completed nor refused in one line'}")
    tally.notes.append(f"{mid_write} of {kills} kills left a checkpoint half-written (a temporary file); "
                       f"{refusals} next run(s) refused in one line to resume, then a new folder")
    return tally


_LOADER = """
import json, sys, torch
from ctslice.errors import CtsliceError
from ctslice.model.checkpoint import checksum, read_checkpoint_dict as load_checkpoint
original = load_checkpoint(sys.argv[1])
want = checksum(original)
print("ready", flush=True)
for line in sys.stdin:
    path = line.rstrip("\\n")
    try:
        got = load_checkpoint(path)
    except CtsliceError as e:
        said = str(e)
        ok = said.startswith(path) and "\\n" not in said
        print(json.dumps({"outcome": "refused" if ok else "refused, not in one line naming the file",
                          "said": said}), flush=True)
        continue
    except BaseException as e:
        print(json.dumps({"outcome": "traceback", "said": f"{type(e).__name__}: {e}"[:300]}), flush=True)
        continue
    same = checksum(got) == want and set(got["model"]) == set(original["model"]) and all(
        torch.equal(got["model"][k], original["model"][k]) for k in original["model"])
    print(json.dumps({"outcome": "identical" if same else "silently different"}), flush=True)
"""


class _Loader:
    """One child process loading checkpoints on request (a process start per flip would cost seconds)."""

    def __init__(self, original: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _LOADER, str(original)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=child_env())
        self.lines = Lines(self.proc.stdout)
        if self.lines.wait_for(lambda line: line == "ready\n", 300) is None:
            self.close()
            raise RuntimeError("the checkpoint loader did not start")

    def load(self, path: Path, timeout: float) -> dict | None:
        """{"outcome": ...}, or None if it did not answer within `timeout` (a hang)."""
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        line = self.lines.wait_for(lambda line: True, timeout)
        return json.loads(line) if line else None

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def bit_flips(ws: Workspace, rng: random.Random, flips: int, timeout: float = 120) -> Tally:
    tally = Tally("checkpoint bit flips")
    original = ws.root / "flips" / "original.pth"
    original.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ws.checkpoint, original)
    data = original.read_bytes()
    target = original.with_name("flipped.pth")
    loader = _Loader(original)
    counts = {"refused": 0, "identical": 0}
    try:
        for _ in range(flips):
            position, bit = rng.randrange(len(data)), rng.randrange(8)
            flipped = bytearray(data)
            flipped[position] ^= 1 << bit
            target.write_bytes(bytes(flipped))
            answer = loader.load(target, timeout)
            if answer is None:
                loader.close()
                loader = _Loader(original)
                tally.add(False, hung=True, why=f"bit {bit} of byte {position}: load did not end")
                continue
            outcome = answer["outcome"]
            counts[outcome] = counts.get(outcome, 0) + 1
            tally.add(outcome in ("refused", "identical"), traceback=outcome == "traceback",
                      why=f"bit {bit} of byte {position}: {outcome} {answer.get('said', '')}")
    finally:
        loader.close()
    tally.notes.append(f"{counts['refused']} refused, {counts['identical']} loaded identical tensors and settings "
                       f"(flips in bytes torch does not read), of {flips}")
    return tally
