"""The resumable state of a run and the checkpoint dict built from it (format in `checkpoint.py`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from .build import Trainer
from .checkpoint import bare_state_dict, rng_state, set_rng_state
from .distributed import gather_rows


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


def make_checkpoint(t: Trainer, state: TrainState, metrics: dict[str, Any]) -> dict[str, Any]:
    """Everything evaluation needs (model, its config, intensity, label map, preprocessing settings, the splits it
    was trained with) and everything a resumed run needs (optimizer, schedule, RNGs, counters; the sampler's
    epoch is `epoch`, its position `state.batch`). Called on every rank (the ranks' augmentation RNGs are
    gathered); rank 0 writes it."""
    return {
        "model": bare_state_dict(t.model), "model_config": t.model_config(),
        "context_slices": t.cfg.loader.context_slices, "intensity": t.intensity,
        "label_map": dict(t.manifest.label_map), "preprocess": t.manifest.settings.to_json(),
        # the dataset's own label values: predict writes them on a machine that has no cache
        "label_values": t.manifest.dataset.get("label_values") if isinstance(t.manifest.dataset, dict) else None,
        "run_id": state.run_id,
        "splits": {k: list(v) for k, v in t.manifest.splits.items()},
        # each trained-on subject's content key: a resume on a cache whose subjects changed is refused
        "subject_keys": {sid: t.manifest.subjects[sid].key for split in ("train", "val")
                         for sid in t.manifest.splits.get(split, []) if sid in t.manifest.subjects},
        "cache": str(t.cache), "cache_hash": t.manifest.settings.hash, "config": t.cfg.to_dict(),
        "epoch": state.epoch, "metrics": metrics, "world_size": t.dist.world_size,
        "batch_size": t.cfg.loader.batch_size,
        "optimizer": t.optimizer.state_dict(), "schedule": t.schedule.state_dict(), "state": state.state_dict(),
        "rng": rng_state(), "augment_rng": gather_rows(t.dist, t.augment_rng.get_state(), t.device),
    }


def restore(t: Trainer, state: TrainState, ckpt: dict[str, Any]) -> None:
    """Load a checkpoint's weights and training state into freshly built parts (every rank the same checkpoint;
    each rank its own augmentation RNG when the number of ranks is unchanged)."""
    t.model.load_state_dict(ckpt["model"])
    t.optimizer.load_state_dict(ckpt["optimizer"])
    t.schedule.load_state_dict(ckpt["schedule"])
    state.load_state_dict(ckpt["state"])
    if isinstance(ckpt.get("run_id"), str):
        state.run_id = ckpt["run_id"]
    set_rng_state(ckpt["rng"])
    ranks = ckpt["augment_rng"]
    ranks = ranks[None] if ranks.dim() == 1 else ranks  # (checkpoints of one process before DDP: one state)
    # clone: set_state reads from the start of the tensor's storage (a row view of rank > 0 crashes torch 2.13);
    # a CUDA generator's state is a CPU tensor too
    t.augment_rng.set_state(ranks[t.dist.rank % len(ranks)].cpu().clone())
