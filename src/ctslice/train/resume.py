"""Continuing a run: which checkpoint, whether it may continue with this cache and config, and its history.

A resumed run must be the run it continues: the model, the cache's content hash (settings and labels) and the
label map must match, or it is refused naming what differs. `--epochs` may be raised (train longer). A run
stopped mid-epoch also needs the same per-rank batch size and number of ranks, since its position in the
sampler's order is counted in batches.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..cache.manifest import Manifest
from ..config import Config
from ..errors import CtsliceError
from ..model.checkpoint import BEST, LAST, OLDER_MODEL, Checkpoint, read_checkpoint
from ..text import first_few
from .loggers import HISTORY_NAME
from .rundir import CONFIG_NAME
INTENSITY_KEYS = ("intensity", "window_min", "window_max")  # [train] settings that decide the model's input


def resume_checkpoint(resume: Path | str) -> Path:
    """A run folder means its checkpoint_last.pth; a file is taken as it is."""
    path = Path(resume)
    return path / LAST if path.is_dir() else path


def read_resumable(path: Path) -> Checkpoint:
    """The checkpoint at `path`, checked whole and holding a run's training state; else a CtsliceError "<path>:
    cannot resume from this checkpoint: <why>"."""
    checkpoint = read_checkpoint(path, refusal="cannot resume from this checkpoint")
    problem = checkpoint.resume_problem()
    if problem:
        raise CtsliceError(f"{path}: cannot resume from this checkpoint: {problem}")
    return checkpoint


def resume_defaults(resume: Path | str | None, cache: Path | str | None) -> tuple[Path | str, dict[str, Any] | None]:
    """The cache and the run settings a run starts from: with `resume`, the resumed run's own (its checkpoint's
    config, and its cache unless `cache` is given), so that `--resume RUN` alone continues it; else `cache` or
    ./cache and no settings (the defaults)."""
    if resume is None:
        return (cache if cache is not None else Path("cache")), None
    checkpoint = read_resumable(resume_checkpoint(resume))
    if cache is None and (checkpoint.cache or "").startswith("s3://"):  # a cache on object storage: its URL
        return checkpoint.cache, checkpoint.config
    return (cache if cache is not None else Path(checkpoint.cache or "cache")), checkpoint.config


def resume_mismatches(ckpt: Checkpoint, cfg: Config, manifest: Manifest, world_size: int) -> list[str]:
    """What differs between a checkpoint's run and the one asked for, one phrase each (empty: may resume)."""
    model = {**cfg.model.architecture(), "in_channels": cfg.loader.context_slices, "num_classes": manifest.num_labels}
    found = []
    was, now = _fold(ckpt.fold, ckpt.folds), _fold(cfg.train.fold, cfg.train.folds)
    if was != now:  # another fold trains and validates on other subjects
        found.append(f"the cross-validation fold ({was} in the checkpoint, {now} now)")
    if {**OLDER_MODEL, **ckpt.model_config} != model:
        found.append(f"the model ({_describe(ckpt.model_config)} in the checkpoint, {_describe(model)} now)")
    if ckpt.cache_hash != manifest.data_hash:
        found.append(f"the cache's content hash ({ckpt.cache_hash} in the checkpoint, "
                     f"{manifest.data_hash} now: other preprocessing settings or labels)")
    if ckpt.label_map != dict(manifest.label_map):
        found.append("the label map")
    found += _split_changes(ckpt.splits, manifest.splits)
    keys = ckpt.subject_keys if isinstance(ckpt.subject_keys, dict) else {}
    table = manifest.subjects.table  # the keys without reading record files
    changed = sorted(sid for sid, key in keys.items() if sid in table and table[sid].key != key)
    if changed:
        found.append(f"the content of {len(changed)} subject(s) ({first_few(changed)}: their source files changed "
                     f"and the cache was updated)")
    # the weights expect the input normalised as they were trained: another window is another model's input
    was = (ckpt.config or {}).get("train") or {}
    now = {k: getattr(cfg.train, k) for k in INTENSITY_KEYS}
    if was and any(k in was and was[k] != now[k] for k in INTENSITY_KEYS):
        found.append("the input intensity (" + ", ".join(f"{k} {was.get(k)} -> {now[k]}" for k in INTENSITY_KEYS
                                                         if was.get(k) != now[k]) + ")")
    if int(ckpt.state.get("batch", 0)):
        was = (ckpt.batch_size, ckpt.world_size or 1)
        if was != (cfg.loader.batch_size, world_size):
            found.append(f"batch size x processes ({was[0]} x {was[1]} in the checkpoint, stopped mid-epoch; "
                         f"{cfg.loader.batch_size} x {world_size} now)")
    return found


def _split_changes(was: Any, now: dict[str, list[str]]) -> list[str]:
    """Train or val subjects that differ from the checkpoint's (another cache, or this one updated or re-split):
    continuing would train on other data, or on subjects it validated with."""
    if not isinstance(was, dict):
        return []  # checkpoints written before the splits were recorded
    found = []
    for split in ("train", "val"):
        before, after = set(was.get(split) or []), set(now.get(split) or [])
        if before != after:
            changes = [f"+{s}" for s in sorted(after - before)] + [f"-{s}" for s in sorted(before - after)]
            found.append(f"the {split} subjects ({first_few(changes)}: "
                         f"another cache, or this one updated or re-split)")
    return found


def check_resumable(path: Path, ckpt: Checkpoint, cfg: Config, manifest: Manifest, world_size: int) -> None:
    problems = resume_mismatches(ckpt, cfg, manifest, world_size)
    if problems:
        raise CtsliceError(f"{path}: cannot resume, the run would differ in {'; '.join(problems)}; start a new run "
                           f"(another --out) instead")
    done = ckpt.epochs_done
    if done >= cfg.train.epochs:  # else nothing would train, and config.json would claim the smaller number
        raise CtsliceError(f"{path}: the run has already trained {done} epoch(s) and --epochs is {cfg.train.epochs}; "
                           f"to train longer give --epochs above {done}")


def in_own_folder(path: Path, out: Path) -> bool:
    """Does the resumed run continue in the folder of its checkpoint (else a new folder starts its own history
    and best checkpoint)?"""
    return os.path.realpath(out) == os.path.realpath(path.parent)


def check_resume_files(path: Path, ckpt: Checkpoint, out: Path) -> None:
    """Refuse a resume in its own folder when the folder does not hold what the checkpoint says it should, naming
    the file: the best checkpoint it recorded (else the resumed run would name a file that does not exist), a
    history with all its epochs (else only the new ones would remain) and a config.json of the same run (else a
    checkpoint copied in from another run would mix two runs in one folder)."""
    state = ckpt.state
    if not in_own_folder(path, out):
        return  # a new folder: its history and its best checkpoint start here
    best = out / BEST
    if state.get("best_score") is not None and not best.is_file():
        raise CtsliceError(f"{best}: missing, but {path} records a best checkpoint (val Dice "
                           f"{state['best_score']:.4f}) there; restore it, or resume from a copy of the run that "
                           f"has it")
    run_id = ckpt.run_id
    try:
        folder_id = json.loads((out / CONFIG_NAME).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        folder_id = None
    if run_id is not None and folder_id is not None and run_id != folder_id:
        raise CtsliceError(f"{path}: belongs to another run (run id {run_id}) than the folder {out} (run id "
                           f"{folder_id} in its {CONFIG_NAME}); resuming would mix two runs in one folder. Resume "
                           f"that checkpoint into a new --out instead")
    done = int(state.get("epoch", 0))
    history = out / HISTORY_NAME
    records = _history_epochs(history)
    if records is None and (done or history.exists()):
        raise CtsliceError(f"{history}: missing, truncated or not JSON, but {path} has trained {done} epoch(s); "
                           f"resuming would keep only the new epochs. Restore it, or resume into a new --out")
    if records is not None and sorted(set(records) & set(range(1, done + 1))) != list(range(1, done + 1)):
        have = sorted(r for r in records if r <= done)
        raise CtsliceError(f"{history}: holds epochs {first_few(have, 3)} but {path} has "
                           f"trained {done}; resuming would lose the others. Restore it, or resume into a new --out")


def _history_epochs(history: Path) -> list[int] | None:
    """The epoch numbers of a training_history.json, or None if it is missing or unreadable."""
    try:
        data = json.loads(history.read_text())
        return [int(r["epoch"]) for r in data["epochs"]] if isinstance(data["batches"], list) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def restore_or_explain(path: Path, restore, *args) -> None:
    """`restore(*args)`, turning a checkpoint whose contents do not fit (another model, missing parts) into an
    error naming the file."""
    try:
        restore(*args)
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as e:
        raise CtsliceError(f"{path}: cannot resume from this checkpoint ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else e!r})") from None


def previous_history(out: Path, epoch: int, step: int) -> dict | None:
    """The history up to the resumed checkpoint (later records belong to epochs or steps trained again)."""
    try:
        data = json.loads((out / HISTORY_NAME).read_text())
        return {"epochs": [r for r in data["epochs"] if r["epoch"] <= epoch],
                "batches": [r for r in data["batches"] if r["step"] <= step]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _describe(model: Any) -> str:
    if not isinstance(model, dict):
        return "unknown"
    unusual = [str(model[k]) for k in ("norm", "activation") if model.get(k, OLDER_MODEL[k]) != OLDER_MODEL[k]]
    return (f"width {model.get('base_width')} depth {model.get('depth')}, {model.get('in_channels')} input(s), "
            f"{model.get('num_classes')} outputs" + (", deep supervision" if model.get("deep_supervision") else "")
            + "".join(f", {u}" for u in unusual))


def _fold(fold: int | None, folds: int | None) -> str:
    return "the cache's own split" if fold is None else f"fold {fold} of {folds}"
