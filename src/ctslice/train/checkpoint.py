"""Checkpoints: plain dicts of tensors and Python values, written atomically, loaded with weights_only=True.

    save_checkpoint(run / "checkpoint_last.pth", state)
    ckpt = load_checkpoint(run / "checkpoint_best.pth")          # CtsliceError naming the file if unreadable
    model.load_state_dict(ckpt["model"])

Format (`FORMAT`, `FORMAT_VERSION`): model (bare state_dict), model_config, context_slices, intensity, label_map,
preprocess (the cache's settings), cache, cache_hash, config, epoch (epochs completed), metrics, and the training
state: optimizer, schedule, rng, best_score, step. No numpy or custom classes, so `torch.load(weights_only=True)`
reads it (RNG states become tensors and lists).
"""

from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CtsliceError

FORMAT = "ctslice-checkpoint"
FORMAT_VERSION = 1
EPOCH_NAME = re.compile(r"^checkpoint_epoch(\d+)\.pth$")
TEMPORARY_NAME = re.compile(r"^\.checkpoint_\w+\.pth\.(\d+)\.tmp$")  # what save_checkpoint writes first


def epoch_checkpoint_name(epoch: int) -> str:
    return f"checkpoint_epoch{epoch}.pth"


def bare_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights without the "module." (DDP) or "_orig_mod." (torch.compile) prefixes, so any trainer
    and the evaluator load them into a plain UNet."""
    inner = model
    while hasattr(inner, "module") or hasattr(inner, "_orig_mod"):
        inner = getattr(inner, "module", None) or inner._orig_mod
    return {k: v.detach().cpu() for k, v in inner.state_dict().items()}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary name in the same folder, fsync, rename: never a half-written checkpoint. A write
    that fails (full disk, no permission) is a CtsliceError naming the file; the previous one stays."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
        reason = e.strerror if isinstance(e, OSError) and e.strerror else (str(e).splitlines() or [""])[0]
        raise CtsliceError(f"{path}: cannot write checkpoint ({reason}); the previous {path.name}, if any, is "
                           f"intact") from None
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by `save_checkpoint`, or a CtsliceError naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CtsliceError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's message advises weights_only=False, i.e. running code from the file: not advice to pass on
        raise CtsliceError(f"{path}: not a readable checkpoint: damaged, not a checkpoint file, or one holding "
                           f"objects that a safe (weights-only) load refuses") from None
    except Exception as e:  # torch raises pickle, zip, OS and runtime errors of many kinds for a damaged file
        first = (str(e).splitlines() or [""])[0]
        raise CtsliceError(f"{path}: not a readable checkpoint: truncated, damaged or not a checkpoint file "
                           f"({type(e).__name__}: {first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CtsliceError(f"{path}: not a ctslice checkpoint")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CtsliceError(f"{path}: checkpoint format version {ckpt.get('format_version')!r}, this ctslice reads "
                           f"version {FORMAT_VERSION}")
    return ckpt


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


def rng_state() -> dict[str, Any]:
    """Every RNG the trainer draws from, as tensors and plain lists (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
