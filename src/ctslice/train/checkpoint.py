"""What only the trainer does with checkpoint files (their format and names are `model/checkpoint.py`'s): prune
old epoch checkpoints and delete the temporaries a killed save left."""

from __future__ import annotations

import os
from pathlib import Path

from ..model.checkpoint import EPOCH_NAME, TEMPORARY_NAME


def prune_epoch_checkpoints(run: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` latest checkpoint_epoch{N}.pth in `run` (only files of exactly that name directly
    in the folder, never anything else); returns what was deleted."""
    found = sorted((int(m.group(1)), p) for p in Path(run).iterdir()
                   if (m := EPOCH_NAME.match(p.name)) and p.is_file() and not p.is_symlink())
    doomed = [p for _, p in found[:max(len(found) - keep, 0)]]
    for p in doomed:
        p.unlink()
    return doomed


def remove_stale_temporaries(run: Path) -> list[Path]:
    """Delete the half-written temporaries a killed save_checkpoint left directly in `run` (files of exactly that
    name whose writer process is gone); returns what was deleted."""
    doomed = [p for p in Path(run).iterdir() if (m := TEMPORARY_NAME.match(p.name)) and p.is_file()
              and not p.is_symlink() and not _alive(int(m.group(1)))]
    for p in doomed:
        p.unlink()
    return doomed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True
