"""Learning-rate schedules: pure functions of (epoch, step, state), plus a small resumable object around them.

    schedule = build_schedule(cfg.train)
    lr = schedule.lr(epoch, step)          # set on the optimizer before every step
    schedule.end_epoch(val_dice)           # plateau bookkeeping
    state = schedule.state_dict()          # into the checkpoint

The formulas are those of torch's CosineAnnealingLR (closed form) and ReduceLROnPlateau (mode max, relative
threshold 1e-4, no cooldown), tested against torch itself, and nnU-Net's poly schedule (its PolyLRScheduler, set
once per epoch as the cosine is), tested against a hand computation. They are written out because a linear warm-up in steps
multiplies whichever is chosen, and torch's epoch schedulers cannot be composed with a per-step warm-up and with
each other's state in one optimizer without stepping in two places.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..config import TrainConfig

PLATEAU_THRESHOLD = 1e-4
"""ReduceLROnPlateau's default: a score counts as better when it beats the best by this relative margin."""


def cosine_lr(epoch: int, base_lr: float, t_max: int, eta_min: float) -> float:
    """CosineAnnealingLR: eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / t_max)) / 2. Past t_max it rises
    again (torch's closed form does the same)."""
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2


def poly_lr(epoch: int, base_lr: float, epochs: int, exponent: float = 0.9) -> float:
    """nnU-Net's poly schedule: base_lr * (1 - epoch / epochs) ** exponent, per epoch (epoch from 0, so the last
    epoch trains at a small non-zero rate); 0 from `epochs` on (a resume that raises --epochs stretches it)."""
    return base_lr * max(0.0, 1 - epoch / epochs) ** exponent


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up: (step + 1) / warmup_steps for the first warmup_steps optimizer steps (step counts from 0),
    then 1."""
    return 1.0 if step >= warmup_steps else (step + 1) / warmup_steps


@dataclass
class PlateauState:
    """ReduceLROnPlateau's state: the best score so far, epochs since it, and the current learning rate."""

    lr: float
    best: float = -math.inf
    bad_epochs: int = 0


def plateau_step(state: PlateauState, score: float, *, factor: float, patience: int, min_lr: float) -> PlateauState:
    """The state after an epoch with val score `score` (higher is better; NaN counts as no improvement): once more
    than `patience` epochs pass without a better score, lr *= factor (not below min_lr) and the count restarts."""
    if score > state.best * (1 + PLATEAU_THRESHOLD):  # torch's rule, also for NaN (never better)
        return PlateauState(state.lr, score, 0)
    bad = state.bad_epochs + 1
    if bad > patience:
        return PlateauState(max(state.lr * factor, min_lr), state.best, 0)
    return PlateauState(state.lr, state.best, bad)


class LRSchedule:
    """The learning rate of every step: base schedule by epoch (cosine, plateau, poly or constant) times the
    warm-up."""

    def __init__(self, cfg: TrainConfig):
        self.kind, self.base_lr, self.warmup_steps = cfg.scheduler, cfg.learning_rate, cfg.warmup_steps
        self.t_max, self.eta_min = cfg.cosine_t_max or cfg.epochs, cfg.cosine_eta_min
        self.epochs, self.poly_exponent = cfg.epochs, cfg.poly_exponent
        self.plateau_args = dict(factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.plateau_min_lr)
        self.plateau = PlateauState(cfg.learning_rate)

    def epoch_lr(self, epoch: int) -> float:
        if self.kind == "cosine":
            return cosine_lr(epoch, self.base_lr, self.t_max, self.eta_min)
        if self.kind == "plateau":
            return self.plateau.lr
        if self.kind == "poly":
            return poly_lr(epoch, self.base_lr, self.epochs, self.poly_exponent)
        return self.base_lr

    def lr(self, epoch: int, step: int) -> float:
        """Learning rate for global optimizer step `step` (from 0) in epoch `epoch` (from 0)."""
        return self.epoch_lr(epoch) * warmup_factor(step, self.warmup_steps)

    def end_epoch(self, val_score: float) -> None:
        if self.kind == "plateau":
            self.plateau = plateau_step(self.plateau, val_score, **self.plateau_args)

    def state_dict(self) -> dict:
        return {"plateau": asdict(self.plateau)}

    def load_state_dict(self, state: dict) -> None:
        self.plateau = PlateauState(**state["plateau"])


def build_schedule(cfg: TrainConfig) -> LRSchedule:
    return LRSchedule(cfg)
