"""`run_training`: the library entry point under `ctslice train`.

    result = run_training("cache", "runs/exp1", load_config(None, {"train": {"epochs": 5}}))
    result.best_checkpoint      # runs/exp1/checkpoint_best.pth
    result.history              # the per-epoch records of training_history.json

RUN/ is held by one run at a time (`runlock.py`: RUN/.lock). It receives config.json and label_map.json at the
start, sample_visualization.png before the first step, and after every epoch: training_history.json and .png,
checkpoint_epoch{N}.pth (the latest cfg.train.keep_checkpoints kept), checkpoint_best.pth (when val Dice improved,
before:) checkpoint_last.pth, and test_inference.png. A figure that cannot be written is a warning.

SIGTERM or Ctrl-C (also to the whole process group, DataLoader workers included): the current step finishes,
checkpoint_last.pth is written at that step, and `TrainingInterrupted` (a CtsliceError) says how to resume. Under
torchrun every rank trains its share and rank 0 alone writes (`distributed.py`).

The global RNGs are seeded for the run and given back to the caller as they were when it ends (`rng.py`).
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config
from ..data.loader import worker_errors
from .build import Trainer, build_trainer, check_cache, fixed_slices, is_better, run_config, split_figures
from ..model.checkpoint import BEST, LAST, Checkpoint, epoch_checkpoint_name, save_checkpoint
from ..model.unet import describe_heads
from ..stopping import stop_signals
from .checkpoint import prune_epoch_checkpoints, remove_stale_temporaries
from .distributed import Dist, any_rank, close_distributed, init_distributed
from .interrupt import StopTraining, TrainingInterrupted
from .loggers import build_loggers, write_json_atomic
from .loop import fit, predict_examples, release_loaders
from .plots import plot_history, plot_samples
from .progress import NullProgress
from .resume import (check_resumable, check_resume_files, in_own_folder, previous_history, read_resumable,
                     restore_or_explain, resume_checkpoint)
from .rundir import check_run_folder
from .rng import seeded_rngs
from .runlock import run_lock
from .state import TrainState, make_checkpoint, restore


@dataclass
class TrainResult:
    out: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict] = field(default_factory=list)
    """Per-epoch records of the whole run (resumed runs include the earlier epochs; empty on ranks > 0)."""
    best_score: float | None = None
    total_params: int = 0


def run_training(cache: Path | str, out: Path | str, cfg: Config, resume: Path | str | None = None,
                 progress: NullProgress | None = None) -> TrainResult:
    distributed = init_distributed(cfg.train.device)
    try:
        return _run(Path(cache).resolve(), Path(out), cfg, resume, progress or NullProgress(), distributed)
    finally:
        close_distributed(distributed)


def _run(cache: Path, out: Path, cfg: Config, resume: Path | str | None, progress: NullProgress,
         distributed: Dist) -> TrainResult:
    progress = progress if distributed.main else NullProgress()
    manifest = check_cache(cache, cfg.train.fold, cfg.train.folds)  # before anything is built or written
    ckpt = path = resumed_run = None
    if resume is not None:
        path = resume_checkpoint(resume)
        ckpt, seen = read_resumable(path), _identity(path)
        check_resumable(path, ckpt, cfg, manifest, distributed.world_size)
        resumed_run = path.parent
    check_run_folder(out, cache, manifest, resumed_run=resumed_run)  # before the lock creates the folder
    with ExitStack() as stack:
        if distributed.main:  # one writer per run folder; then check again what the folder holds now that it is ours
            stack.enter_context(run_lock(out))
            check_run_folder(out, cache, manifest, resumed_run=resumed_run)
        if path is not None:
            if _identity(path) != seen:  # another run wrote it since it was read (and has ended: the lock is ours)
                ckpt = read_resumable(path)
                check_resumable(path, ckpt, cfg, manifest, distributed.world_size)
            check_resume_files(path, ckpt, out)
        # the global RNGs: seeded for the run (model initialisation, loader seeds; a resume restores its own),
        # the caller's as they were afterwards
        with seeded_rngs(cfg.train.seed):
            return _train(cache, out, cfg, manifest, path, ckpt, progress, distributed)


def _identity(path: Path) -> tuple[int, int, int]:
    """What changes when a checkpoint is replaced (save_checkpoint renames a new file into place)."""
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


def _train(cache: Path, out: Path, cfg: Config, manifest, path: Path | None, ckpt: Checkpoint | None,
           progress: NullProgress, distributed: Dist) -> TrainResult:
    trainer = build_trainer(cache, cfg, manifest, distributed)
    state = TrainState()
    if ckpt is not None:
        restore_or_explain(path, restore, trainer, state, ckpt)
        if not in_own_folder(path, out):
            state.best_score = None  # this folder's checkpoint_best.pth is the best of the epochs trained here
    figures = split_figures(manifest, len(trainer.train_loader.dataset), len(trainer.val_loader.dataset))
    progress.message(f"U-Net {cfg.model.base_width}x{cfg.model.depth}: {trainer.params[0]:,} parameters "
                     f"({trainer.params[1]:,} trainable), {cfg.loader.context_slices} input channel(s), "
                     f"{manifest.num_labels} outputs ({describe_heads(trainer.model)}); {figures['train_slices']} train / {figures['val_slices']} val "
                     f"slices; device {trainer.device.type}"
                     + (f", {distributed.world_size} processes ({distributed.backend})" if distributed.enabled else ""))
    loggers = []
    if distributed.main:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)  # left by a run killed (kill -9) while writing a checkpoint
        config = run_config(cfg, manifest, cache=cache, intensity=trainer.intensity, figures=figures,
                            params=trainer.params, device=trainer.device, world_size=distributed.world_size)
        config["run_id"] = state.run_id  # (a resumed run keeps its checkpoint's)
        write_json_atomic(out / "config.json", config)
        write_json_atomic(out / "label_map.json", manifest.label_map)
        history = previous_history(out, state.epoch, state.step) if ckpt is not None else None
        loggers = build_loggers(cfg.train, out, config, history=history, resume=ckpt is not None)
        train_set = trainer.train_loader.dataset
        _figure(progress, plot_samples,
                predict_examples(trainer, train_set, fixed_slices(train_set.present, 4), model=False),
                trainer.names, out / "sample_visualization.png", columns=("ct", "reference"), title="Training slices")

    def end_of_epoch(state: TrainState, record: dict) -> None:
        _save_checkpoints(trainer, state, record, out)
        if distributed.main:  # after the checkpoints: a figure that cannot be written never costs one
            _figure(progress, plot_history, loggers[0].data["epochs"], out / "training_history.png")
            _figure(progress, plot_samples,
                    predict_examples(trainer, trainer.val_loader.dataset, trainer.val_examples), trainer.names,
                    out / "test_inference.png", columns=("ct", "reference", "prediction"),
                    title=f"Validation slices after epoch {state.epoch}")

    try:
        with stop_signals() as stop:
            try:
                with worker_errors():  # a damaged chunk read in a worker: its one-line error, not torch's traceback
                    fit(trainer, state, loggers, progress, end_of_epoch,
                        lambda: _stop(distributed, trainer, state, stop.requested))
            except StopTraining as e:
                release_loaders(trainer.train_loader, trainer.val_loader)  # (workers a group signal killed, too)
                ckpt = make_checkpoint(trainer, state, {})
                if distributed.main:
                    save_checkpoint(out / LAST, ckpt)
                why = stop.requested or "a signal on another rank"
                raise TrainingInterrupted(
                    f"{why}{f' ({e})' if str(e) else ''}: stopped after step {state.step} (epoch "
                    f"{state.epoch + 1}, batch {state.batch}); resumable checkpoint {out / LAST}. Resume with: "
                    f"ctslice train --cache {cache} --out {out} --resume {out}") from None
    finally:
        for logger in loggers:
            logger.close()
    return TrainResult(out=out, best_checkpoint=out / BEST, last_checkpoint=out / LAST,
                       history=loggers[0].data["epochs"] if loggers else [], best_score=state.best_score,
                       total_params=trainer.params[0])


def _figure(progress: NullProgress, plot, *args, **kwargs) -> None:
    """Draw a figure; one that cannot be written (full disk, no permission) is a warning and training goes on:
    the figures are drawn from the history and checkpoints, which are written first and are what matters."""
    try:
        plot(*args, **kwargs)
    except OSError as e:
        target = next((a for a in args if isinstance(a, Path)), None)
        progress.message(f"warning: {target}: cannot write the figure ({e.strerror or e}); training continues, "
                         f"the checkpoints and history are unaffected")


def _stop(distributed: Dist, trainer: Trainer, state: TrainState, requested: str | None) -> bool:
    """Stop now? One process: whenever a signal came. Several: the ranks agree every log_every steps (where the
    loop synchronises with the GPU anyway), so a step is not made to wait for the others."""
    if not distributed.enabled:
        return requested is not None
    return (state.step % trainer.cfg.train.log_every == 0
            and any_rank(distributed, requested is not None, trainer.device))


def _save_checkpoints(trainer: Trainer, state: TrainState, record: dict, out: Path) -> None:
    """Every rank takes part in building the checkpoint (RNG states are gathered); rank 0 writes it."""
    improved = is_better(record["val/dice"], state.best_score)
    if improved:
        state.best_score = record["val/dice"]
    ckpt = make_checkpoint(trainer, state, dict(record))
    if not trainer.dist.main:
        return
    if trainer.cfg.train.keep_checkpoints:
        save_checkpoint(out / epoch_checkpoint_name(state.epoch), ckpt)
        prune_epoch_checkpoints(out, trainer.cfg.train.keep_checkpoints)
    # best before last: checkpoint_last.pth records the best score, so it must never claim a best that is not on
    # disk (a kill or a full disk between the two writes keeps the previous last, which names the previous best)
    if improved:
        save_checkpoint(out / BEST, ckpt)
    save_checkpoint(out / LAST, ckpt)
