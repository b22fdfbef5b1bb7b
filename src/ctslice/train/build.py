"""Everything the training loop needs, built from the config and the cache's manifest by small `build_*` functions.
The loop (`loop.py`) only uses what `build_trainer` returns."""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..cache.location import shown
from ..cache.folds import fold_splits
from ..cache.manifest import Manifest, read_manifest
from ..config import Config
from ..data.loader import build_loader
from ..errors import CacheError, CtsliceError
from ..model.device import resolve_device
from ..model.predictor import air_value
from ..model.unet import build_model, count_parameters
from .distributed import Dist
from .intensity import resolve_intensity
from .interrupt import ignore_stop_signals
from .schedule import LRSchedule, build_schedule

ARCHITECTURE = "UNet2D"


def check_cache(cache: Path, fold: int | None = None, folds: int = 5) -> Manifest:
    """The cache's manifest, or a clear error before any work: unreadable or foreign manifest (CacheError from
    read_manifest), no train or val subjects, a label map without structures. With `fold`: its splits are that
    cross-validation fold's (`cache.folds.fold_splits`), for everything the run builds and records."""
    manifest = read_manifest(cache)
    if fold is not None:
        try:
            manifest = dataclasses.replace(manifest, splits=fold_splits(manifest.splits, fold, folds))
        except CtsliceError as e:
            raise CacheError(f"{cache}: {e}") from None
    for split in ("train", "val"):
        if not manifest.splits.get(split):
            raise CacheError(f"{cache}: the manifest has no {split!r} subjects (splits: "
                             f"{', '.join(f'{k} {len(v)}' for k, v in manifest.splits.items()) or 'none'}); "
                             f"training needs both a train and a val split")
    if manifest.num_labels < 2:
        raise CacheError(f"{cache}: the label map has no structures")
    return manifest


def build_valid_table(manifest: Manifest, subjects: list[str], device: torch.device) -> torch.Tensor | None:
    """bool (subjects, classes): False where a subject's record lists the structure as missing (unknown there);
    rows follow the reader's subject order (a batch's "subject" indexes it). None when nothing is missing, so
    the loss and metrics take their plain paths."""
    index = {name: int(i) for i, name in manifest.label_map.items()}
    table = torch.ones((len(subjects), manifest.num_labels), dtype=torch.bool)
    rows = manifest.subjects.table
    for row, sid in enumerate(subjects):
        if not rows[sid].missing:  # the table's count: only such subjects' record files are read
            continue
        for name in manifest.subjects[sid].missing_structures or []:
            if name in index:
                table[row, index[name]] = False
    return table.to(device) if not bool(table.all()) else None


def fixed_slices(present: np.ndarray, count: int) -> list[int]:
    """`count` item indices spread evenly over the slices that show any structure (all slices if none do): the
    same val slices every epoch, so their images can be compared across epochs."""
    candidates = np.flatnonzero(present[:, 1:].any(1)) if present.shape[1] > 1 else np.arange(len(present))
    if not len(candidates):
        candidates = np.arange(len(present))
    if count <= 0 or not len(candidates):
        return []
    picks = np.linspace(0, len(candidates) - 1, min(count, len(candidates))).round().astype(int)
    return sorted({int(candidates[p]) for p in picks})


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW, or nnU-Net's SGD (momentum 0.99, Nesterov); the learning rate is set before every step."""
    train = cfg.train
    if train.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=train.learning_rate, momentum=train.momentum,
                               nesterov=train.nesterov and train.momentum > 0,
                               weight_decay=train.resolved_weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=train.learning_rate, weight_decay=train.resolved_weight_decay)


def split_figures(manifest: Manifest, train_slices: int, val_slices: int) -> dict[str, float | int]:
    """The dataset figures dashboards show, from the manifest (ratios of subjects over all cached subjects)."""
    n = {split: len(manifest.splits.get(split, [])) for split in ("train", "val", "test")}
    total = max(sum(n.values()), 1)
    return {"train_subjects": n["train"], "val_subjects": n["val"], "train_slices": train_slices,
            "val_slices": val_slices, "train_ratio": n["train"] / total, "val_ratio": n["val"] / total}


def run_config(cfg: Config, manifest: Manifest, *, cache: Path, intensity: dict, figures: dict,
               params: tuple[int, int], device: torch.device, world_size: int = 1) -> dict:
    """What RUN/config.json holds and wandb's config receives: the flat keys existing dashboards use (names
    fixed), then every section of the resolved config, with the cache's own preprocessing settings. batch_size
    is per process (GPU); global_batch_size = batch_size x world_size, at the learning rate used."""
    train = cfg.train
    flat = {
        "architecture": ARCHITECTURE, "epochs": train.epochs, "batch_size": cfg.loader.batch_size,
        "learning_rate": train.learning_rate, "use_scheduler": train.scheduler != "none",
        "scheduler_type": train.scheduler, "cosine_t_max": train.cosine_t_max or train.epochs,
        "cosine_eta_min": train.cosine_eta_min, "plateau_factor": train.plateau_factor,
        "plateau_patience": train.plateau_patience, "plateau_min_lr": train.plateau_min_lr,
        "num_classes": manifest.num_labels - 1, **figures,
        "num_workers": cfg.loader.workers, "pin_memory": cfg.loader.pin_memory and device.type == "cuda",
        "total_params": params[0], "trainable_params": params[1],
        "world_size": world_size, "global_batch_size": cfg.loader.batch_size * world_size,
    }
    if train.fold is not None:  # the fold's subjects, so that dashboards can tell the folds' runs apart
        flat.update(fold=train.fold, folds=train.folds, fold_train_subjects=manifest.splits["train"],
                    fold_val_subjects=manifest.splits["val"])
    sections = {**cfg.to_dict(), "preprocess": manifest.settings.to_json()}
    return {**flat, **sections, "cache": shown(cache), "cache_hash": manifest.data_hash,
            "intensity": intensity, "device": device.type}


@dataclass
class Trainer:
    """The built parts of one training run."""

    cfg: Config
    cache: Path
    manifest: Manifest
    device: torch.device
    model: torch.nn.Module
    """The bare model (checkpoints save its weights)."""
    forward: torch.nn.Module
    """What the training loop calls: the model, wrapped by DistributedDataParallel and/or torch.compile."""
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    intensity: dict
    valid: torch.Tensor | None
    augment_rng: torch.Generator
    names: dict[int, str]
    dist: Dist = field(default_factory=Dist)
    val_examples: list[int] = field(default_factory=list)
    params: tuple[int, int] = (0, 0)

    @property
    def fill(self) -> float:
        """Air (the clip's lower end) after normalisation: what enters at the borders of augmented slices."""
        return air_value(self.intensity)

    @property
    def num_classes(self) -> int:
        return self.manifest.num_labels

    @property
    def autocast(self):
        use = self.device.type == "cuda" and self.cfg.train.bf16
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use)

    def model_config(self) -> dict:
        return {**self.cfg.model.architecture(), "in_channels": self.cfg.loader.context_slices,
                "num_classes": self.num_classes}


def build_trainer(cache: Path, cfg: Config, manifest: Manifest, distributed: Dist | None = None) -> Trainer:
    """With `distributed` (several ranks): this rank's share of train and val, the model in
    DistributedDataParallel and an augmentation RNG of its own. The model is initialised from the global torch RNG:
    seed it first for a reproducible run (`rng.seeded_rngs`, as `run_training` does)."""
    train, distributed = cfg.train, distributed or Dist()
    if distributed.enabled and train.device.startswith("cuda:"):
        raise CtsliceError(f"device {train.device} under torchrun: give cuda or auto, each process then takes the "
                           f"GPU of its LOCAL_RANK")
    device = resolve_device(train.device, distributed.local_rank)
    size = manifest.settings.size
    if size and cfg.model.size_problem(size):
        raise CtsliceError(f"{cache}: {cfg.model.size_problem(size)}; lower [model] depth or preprocess with "
                           f"another --size")
    if size:  # before anything is built: a width typed wrong must not fill the machine's memory
        cfg.model.check_memory(cfg.loader.context_slices, manifest.num_labels, size)
    intensity = resolve_intensity(train, manifest, cache)
    shards = dict(num_replicas=distributed.world_size, rank=distributed.rank)
    # the manifest's splits (a fold's with [train] fold), not the cache's on disk
    train_loader = build_loader(cache, "train", cfg.loader, shuffle=True, subjects=manifest.splits["train"], **shards)
    val_loader = build_loader(cache, "val", cfg.loader, shuffle=False, subjects=manifest.splits["val"], **shards)
    if train.steps_per_epoch is not None:  # an epoch of that many batches, more or fewer than one pass
        train_loader.sampler.num_samples = train.steps_per_epoch * cfg.loader.batch_size * distributed.world_size
    for loader in (train_loader, val_loader):
        loader.worker_init_fn = functools.partial(ignore_stop_signals, loader.worker_init_fn)
    model = build_model(cfg.model, cfg.loader.context_slices, manifest.num_labels).to(device)
    if device.type == "cuda" and train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = model
    if distributed.enabled:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(forward) if train.compile else forward
    subjects = train_loader.dataset.reader.subjects
    return Trainer(
        cfg=cfg, cache=cache, manifest=manifest, device=device, model=model, forward=forward,
        optimizer=build_optimizer(model, cfg), schedule=build_schedule(train), train_loader=train_loader,
        val_loader=val_loader, intensity=intensity, valid=build_valid_table(manifest, list(subjects), device),
        augment_rng=torch.Generator(device=device).manual_seed(train.seed + distributed.rank),
        names=manifest.labels, dist=distributed, val_examples=fixed_slices(val_loader.dataset.present,
                                                                          train.val_images),
        params=count_parameters(model))


def batches_per_epoch(loader_length: int, limit: int | None) -> int:
    return loader_length if limit is None else min(limit, loader_length)


def is_better(score: float, best: float | None) -> bool:
    """Val Dice improved (the first epoch always counts; NaN never does after it)."""
    return best is None or (not math.isnan(score) and (math.isnan(best) or score > best))
