"""Which folders a run may write into: checked before anything is built or written, so that `--out` never
overwrites a user's files, another run's checkpoints, the cache or the dataset.

    check_run_folder(out, cache, manifest, resumed_run=None)   # CtsliceError naming the folder, or None
    out = default_run_folder(resume)                           # no --out: the resumed run's folder, or runs/<time>

A new run needs a missing or empty folder, or a run folder that holds no checkpoint yet (a start that failed
before its first epoch: only its own files are replaced). A resumed run may also write into the folder of the
checkpoint it continues. A folder that holds a run with checkpoints is refused for a new run (that would replace
its checkpoints and history); any other non-empty folder is refused outright.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..cache.manifest import Manifest
from ..cache.owner import check_output_apart
from ..errors import CtsliceError
from ..model.checkpoint import is_checkpoint_name
from .runlock import LOCK_NAME

CONFIG_NAME = "config.json"
RUN_KEYS = {"architecture", "cache_hash", "train", "model"}  # what a ctslice run's config.json always holds


def is_run_folder(path: Path) -> bool:
    """A folder written by `ctslice train`: its config.json has the keys every run writes (a file of that name
    alone is not enough, users keep their own config.json files)."""
    try:
        data = json.loads((Path(path) / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and RUN_KEYS <= set(data)


def _checkpoints(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if is_checkpoint_name(p.name))


def check_run_folder(out: Path, cache: Path, manifest: Manifest, resumed_run: Path | None = None) -> None:
    """Refuse an `out` that would overwrite or mix with what is not this run's (see the module docstring)."""
    check_output_apart(out, cache, manifest.dataset.get("root") if isinstance(manifest.dataset, dict) else None,
                       "the run folder")
    real = Path(os.path.realpath(out))
    if resumed_run is not None and real == Path(os.path.realpath(resumed_run)):
        return  # continuing the run in its own folder
    if not real.exists():
        return
    if not real.is_dir():
        raise CtsliceError(f"--out {out}: is not a folder")
    if not any(p.name != LOCK_NAME for p in real.iterdir()):
        return  # (the lock file alone is what a start refused or failed before writing anything leaves)
    if not is_run_folder(real):
        raise CtsliceError(f"--out {out}: the folder is not empty and holds no ctslice run; a run writes "
                           f"config.json, checkpoints and figures there, so give a new or empty folder")
    found = _checkpoints(real)
    if found:
        how = f"continue it with --resume {out}, or choose another --out" if resumed_run is None else \
            "choose another --out"
        raise CtsliceError(f"--out {out}: already holds another training run ({', '.join(found)}), whose "
                           f"checkpoints and history this run would replace; {how}")


def default_run_folder(resume: Path | None, runs: Path = Path("runs")) -> Path:
    """Where a run writes when no folder is given: the folder `resume` names when it is a run folder (the run
    continues in place), else a new runs/<YYYYmmdd-HHMMSS> (`new_run_folder`)."""
    if resume is not None and Path(resume).is_dir():
        return Path(resume)
    return new_run_folder(runs / time.strftime("%Y%m%d-%H%M%S"))


def new_run_folder(base: Path) -> Path:
    """`base`, or base-2, base-3, ... : created here (mkdir is atomic), so two runs started in the same second
    never share a folder."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise CtsliceError(f"{base}: no free run folder name (tried {base.name}-2 to -999)")
