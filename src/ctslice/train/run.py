"""`run_training`: the library entry point under `ctslice train`.

    result = run_training("cache", "runs/exp1", load_config(None, {"train": {"epochs": 5}}))
    result.best_checkpoint      # runs/exp1/checkpoint_best.pth
    result.history              # the per-epoch records of training_history.json

RUN/ receives config.json and label_map.json at the start, sample_visualization.png before the first step, and
after every epoch: training_history.json and .png, checkpoint_epoch{N}.pth (the latest cfg.train.keep_checkpoints
kept), checkpoint_last.pth, checkpoint_best.pth (when val Dice improved) and test_inference.png.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config
from ..errors import CtsliceError
from .build import Trainer, build_trainer, check_cache, fixed_slices, is_better, run_config, split_figures
from .checkpoint import epoch_checkpoint_name, load_checkpoint, prune_epoch_checkpoints, save_checkpoint
from .loggers import HISTORY_NAME, build_loggers, write_json_atomic
from .loop import fit, predict_examples
from .plots import plot_history, plot_samples
from .progress import NullProgress
from .state import TrainState, make_checkpoint, restore

BEST, LAST = "checkpoint_best.pth", "checkpoint_last.pth"


@dataclass
class TrainResult:
    out: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict] = field(default_factory=list)
    """Per-epoch records of the whole run (resumed runs include the earlier epochs)."""
    best_score: float | None = None
    total_params: int = 0


def resume_checkpoint(resume: Path | str) -> Path:
    """A run folder means its checkpoint_last.pth; a file is taken as it is."""
    path = Path(resume)
    return path / LAST if path.is_dir() else path


def run_training(cache: Path | str, out: Path | str, cfg: Config, resume: Path | str | None = None,
                 progress: NullProgress | None = None) -> TrainResult:
    progress = progress or NullProgress()
    cache, out = Path(cache).resolve(), Path(out)
    manifest = check_cache(cache)  # before anything is built or written
    ckpt = load_checkpoint(resume_checkpoint(resume)) if resume is not None else None
    if ckpt is not None and ckpt.get("cache_hash") != manifest.settings.get("hash"):
        raise CtsliceError(f"{resume}: trained on a cache with other settings or labels (hash "
                           f"{ckpt.get('cache_hash')}) than {cache} ({manifest.settings.get('hash')})")
    t = build_trainer(cache, cfg, manifest)
    state = TrainState()
    if ckpt is not None:
        restore(t, state, ckpt)
    figures = split_figures(manifest, len(t.train_loader.dataset), len(t.val_loader.dataset))
    progress.message(f"U-Net {cfg.model.base_width}x{cfg.model.depth}: {t.params[0]:,} parameters "
                     f"({t.params[1]:,} trainable), {cfg.loader.context_slices} input channel(s), "
                     f"{manifest.num_labels} outputs; {figures['train_slices']} train / {figures['val_slices']} val "
                     f"slices; device {t.device.type}")
    out.mkdir(parents=True, exist_ok=True)
    config = run_config(cfg, manifest, cache=cache, intensity=t.intensity, figures=figures, params=t.params,
                        device=t.device)
    write_json_atomic(out / "config.json", config)
    write_json_atomic(out / "label_map.json", manifest.label_map)
    history = _previous_history(out, state) if ckpt is not None else None
    loggers = build_loggers(cfg.train, out, config, history=history, resume=ckpt is not None)
    train_set = t.train_loader.dataset
    plot_samples(predict_examples(t, train_set, fixed_slices(train_set.present, 4), model=False), t.names,
                 out / "sample_visualization.png", columns=("ct", "reference"), title="Training slices")

    def end_of_epoch(state: TrainState, record: dict) -> None:
        _save_checkpoints(t, state, record, out)
        plot_history(loggers[0].data["epochs"], out / "training_history.png")
        plot_samples(predict_examples(t, t.val_loader.dataset, t.val_examples), t.names, out / "test_inference.png",
                     columns=("ct", "reference", "prediction"), title=f"Validation slices after epoch {state.epoch}")

    try:
        fit(t, state, loggers, progress, end_of_epoch)
    finally:
        for lg in loggers:
            lg.close()
    return TrainResult(out=out, best_checkpoint=out / BEST, last_checkpoint=out / LAST,
                       history=loggers[0].data["epochs"], best_score=state.best_score, total_params=t.params[0])


def _save_checkpoints(t: Trainer, state: TrainState, record: dict, out: Path) -> None:
    improved = is_better(record["val/dice"], state.best_score)
    if improved:
        state.best_score = record["val/dice"]
    ckpt = make_checkpoint(t, state, {k: v for k, v in record.items()})
    if t.cfg.train.keep_checkpoints:
        save_checkpoint(out / epoch_checkpoint_name(state.epoch), ckpt)
        prune_epoch_checkpoints(out, t.cfg.train.keep_checkpoints)
    save_checkpoint(out / LAST, ckpt)
    if improved:
        save_checkpoint(out / BEST, ckpt)


def _previous_history(out: Path, state: TrainState) -> dict | None:
    """The history up to the resumed checkpoint (later records belong to epochs that will be trained again)."""
    try:
        data = json.loads((out / HISTORY_NAME).read_text())
        return {"epochs": [r for r in data["epochs"] if r["epoch"] <= state.epoch],
                "batches": [r for r in data["batches"] if r["step"] <= state.step]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
