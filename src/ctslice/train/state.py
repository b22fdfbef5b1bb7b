"""The resumable state of a run and the checkpoint dict built from it (format in `checkpoint.py`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .build import Trainer
from .checkpoint import bare_state_dict, rng_state, set_rng_state


@dataclass
class TrainState:
    """Progress counters: epochs completed, optimizer steps done, best val Dice so far."""

    epoch: int = 0
    step: int = 0
    best_score: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.step, self.best_score = int(state["epoch"]), int(state["step"]), state["best_score"]


def make_checkpoint(t: Trainer, state: TrainState, metrics: dict[str, Any]) -> dict[str, Any]:
    """Everything evaluation needs (model, its config, intensity, label map, preprocessing settings) and everything
    a resumed run needs (optimizer, schedule, RNGs, counters; the sampler's epoch is `epoch`)."""
    return {
        "model": bare_state_dict(t.model), "model_config": t.model_config(),
        "context_slices": t.cfg.loader.context_slices, "intensity": t.intensity,
        "label_map": dict(t.manifest.label_map), "preprocess": dict(t.manifest.settings),
        "cache": str(t.cache), "cache_hash": t.manifest.settings.get("hash"), "config": t.cfg.to_dict(),
        "epoch": state.epoch, "metrics": metrics,
        "optimizer": t.optimizer.state_dict(), "schedule": t.schedule.state_dict(), "state": state.state_dict(),
        "rng": rng_state(), "augment_rng": t.augment_rng.get_state(),
    }


def restore(t: Trainer, state: TrainState, ckpt: dict[str, Any]) -> None:
    """Load a checkpoint's weights and training state into freshly built parts."""
    t.model.load_state_dict(ckpt["model"])
    t.optimizer.load_state_dict(ckpt["optimizer"])
    t.schedule.load_state_dict(ckpt["schedule"])
    state.load_state_dict(ckpt["state"])
    set_rng_state(ckpt["rng"])
    t.augment_rng.set_state(ckpt["augment_rng"].cpu())  # (a CUDA generator's state is a CPU tensor too)
