"""The resumable state of a run and the checkpoint built from it (`model/checkpoint.py`: the format)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from ..cache.location import shown
from ..config import TrainConfig
from ..model.checkpoint import Checkpoint, bare_state_dict
from .build import Trainer
from .distributed import gather_rows
from .rng import rng_state, set_rng_state


@dataclass
class TrainState:
    """Progress counters: epochs completed, optimizer steps done, best val Dice so far, and for a run stopped
    mid-epoch the batches of epoch `epoch` already done with the sums of its metrics so far (`partial`)."""

    epoch: int = 0
    step: int = 0
    best_score: float | None = None
    batch: int = 0
    partial: dict | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Names the run across its checkpoints, config.json and resumes: a checkpoint of another run copied into a
    run folder is refused on resume instead of mixing two runs in one folder."""

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "best_score": self.best_score, "batch": self.batch,
                "partial": self.partial}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.step, self.best_score = int(state["epoch"]), int(state["step"]), state["best_score"]
        self.batch, self.partial = int(state.get("batch", 0)), state.get("partial")


def make_checkpoint(trainer: Trainer, state: TrainState, metrics: dict[str, Any]) -> Checkpoint:
    """Everything evaluation needs (model, its config, intensity, label map and the dataset's label values,
    preprocessing settings, the splits it was trained with) and everything a resumed run needs (optimizer,
    schedule, RNGs, counters; the sampler's epoch is `epoch`, its position `state.batch`). Called on every rank
    (the ranks' augmentation RNGs are gathered); rank 0 writes it."""
    manifest = trainer.manifest
    return Checkpoint(
        model=bare_state_dict(trainer.model), model_config=trainer.model_config(),
        context_slices=trainer.cfg.loader.context_slices, intensity=trainer.intensity,
        label_map=dict(manifest.label_map), preprocess=manifest.settings.to_json(),
        label_values=manifest.dataset.get("label_values") if isinstance(manifest.dataset, dict) else None,
        run_id=state.run_id, splits={k: list(v) for k, v in manifest.splits.items()},
        subject_keys={sid: manifest.subjects.table[sid].key for split in ("train", "val")
                      for sid in manifest.splits.get(split, []) if sid in manifest.subjects},
        cache=shown(trainer.cache), cache_hash=manifest.data_hash, config=trainer.cfg.to_dict(),
        epoch=state.epoch, metrics=metrics, world_size=trainer.dist.world_size,
        batch_size=trainer.cfg.loader.batch_size,
        optimizer=trainer.optimizer.state_dict(), schedule=trainer.schedule.state_dict(),
        state=state.state_dict(), rng=rng_state(),
        augment_rng=gather_rows(trainer.dist, trainer.augment_rng.get_state(), trainer.device),
        **fold_fields(trainer.cfg.train))


def fold_fields(train: TrainConfig) -> dict[str, int]:
    """The checkpoint's cross-validation fields: fold and folds, or nothing outside cross-validation."""
    return {} if train.fold is None else {"fold": train.fold, "folds": train.folds}


def restore(trainer: Trainer, state: TrainState, checkpoint: Checkpoint) -> None:
    """Load a checkpoint's weights and training state into freshly built parts (every rank the same checkpoint;
    each rank its own augmentation RNG when the number of ranks is unchanged)."""
    trainer.model.load_state_dict(checkpoint.model)
    trainer.optimizer.load_state_dict(checkpoint.optimizer)
    trainer.schedule.load_state_dict(checkpoint.schedule)
    state.load_state_dict(checkpoint.state)
    if isinstance(checkpoint.run_id, str):
        state.run_id = checkpoint.run_id
    set_rng_state(checkpoint.rng)
    ranks = checkpoint.augment_rng
    ranks = ranks[None] if ranks.dim() == 1 else ranks  # (checkpoints of one process before DDP: one state)
    # clone: set_state reads from the start of the tensor's storage (a row view of rank > 0 crashes torch 2.13);
    # a CUDA generator's state is a CPU tensor too
    trainer.augment_rng.set_state(ranks[trainer.dist.rank % len(ranks)].cpu().clone())
