"""The training loop: per epoch train, validate, log, checkpoint. Everything it uses is built in `build.py`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..data.transforms import apply_intensity
from ..view.overlay import WINDOWS, window_gray
from .augment import augment_batch
from .build import Trainer, batches_per_epoch
from .distributed import broadcast_buffers
from .epoch_metrics import EpochCounts, batch_dice, comparison, gradient_norm, ranked_classes
from .interrupt import StopTraining, loader_stopped
from .loss import segmentation_loss, supervised_loss
from .progress import NullProgress
from .state import TrainState


def prepare_batch(trainer: Trainer, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """int16/uint8 host batch -> normalised float images, long labels and the (B, C) valid mask, on the device."""
    images = batch["image"].to(trainer.device, non_blocking=True)
    labels = batch["label"].to(trainer.device, non_blocking=True).long()
    valid = None if trainer.valid is None else trainer.valid[batch["subject"].to(trainer.device, non_blocking=True)]
    return apply_intensity(images, trainer.intensity), labels, valid


def model_input(trainer: Trainer, images: torch.Tensor) -> torch.Tensor:
    """channels_last on CUDA (after augmentation, whose grid_sample returns the default layout)."""
    if trainer.device.type == "cuda" and trainer.cfg.train.channels_last:
        return images.contiguous(memory_format=torch.channels_last)
    return images


def train_step(trainer: Trainer, images, labels, valid, lr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step at learning rate `lr`; returns (loss, predicted labels, gradient norm before clipping)."""
    for group in trainer.optimizer.param_groups:
        group["lr"] = lr
    with trainer.autocast:
        outputs = trainer.forward(model_input(trainer, images))  # (deep supervision: [full, 1/2, ...])
    loss = supervised_loss(outputs, labels, valid, ce_weight=trainer.cfg.train.ce_weight,
                           dice_weight=trainer.cfg.train.dice_weight)
    logits = outputs[0] if isinstance(outputs, list) else outputs
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if trainer.cfg.train.grad_clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.cfg.train.grad_clip)
    else:
        norm = gradient_norm(trainer.model.parameters())
    trainer.optimizer.step()
    return loss.detach(), logits.detach().argmax(1), norm.detach()


def train_one_epoch(trainer: Trainer, state: TrainState, log_batch: Callable[[dict, int], None],
                    progress: NullProgress, should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """One epoch from batch `state.batch` on (0, or where a stopped run left it). When `should_stop()` turns true
    after a step, the epoch's position and sums go into `state` and StopTraining is raised."""
    trainer.model.train()
    trainer.train_loader.sampler.set_epoch(state.epoch, start=state.batch * trainer.cfg.loader.batch_size)
    total = batches_per_epoch(len(trainer.train_loader), trainer.cfg.train.steps_per_epoch)
    counts, norms = EpochCounts(trainer.num_classes, trainer.device), []
    wait = lr = 0.0
    if state.partial:
        counts.load_state_dict(state.partial["counts"])
        norms = [n.to(trainer.device) for n in state.partial["norms"]]
        lr = float(state.partial.get("lr", 0.0))
    start = time.perf_counter()
    batches = iter(trainer.train_loader)

    def keep(done: int) -> None:  # the epoch's position and sums so far, for a checkpoint written mid-epoch
        state.batch, state.partial = done, {"counts": {k: v.clone() for k, v in counts.state_dict().items()},
                                            "norms": [n.cpu() for n in norms], "lr": lr}

    with released_on_stop(batches):
        for i in range(state.batch, total):
            ready = time.perf_counter()
            batch = next_batch(batches, lambda: keep(i))
            wait += time.perf_counter() - ready
            images, labels, valid = prepare_batch(trainer, batch)
            images, labels = augment_batch(images, labels, trainer.cfg.augment, fill=trainer.fill,
                                           generator=trainer.augment_rng)
            lr = trainer.schedule.lr(state.epoch, state.step)
            loss, pred, norm = train_step(trainer, images, labels, valid, lr)
            batch_counts = counts.add(loss, pred, labels, valid)
            norms.append(norm)
            state.step += 1
            if (i + 1) % trainer.cfg.train.log_every == 0 or i + 1 == total:
                record = {"epoch": state.epoch + 1, "batch/loss": float(loss),
                          "batch/dice": batch_dice(batch_counts), "batch/gradient_norm": float(norm)}
                if (i + 1) % trainer.cfg.train.log_every == 0:
                    log_batch(record, state.step)
                progress.update(i + 1, record["batch/loss"], record["batch/dice"],
                                counts.samples / (time.perf_counter() - start))
            if should_stop():  # (also after the epoch's last step: validation would need the loader's workers)
                keep(i + 1)
                raise StopTraining
    keep(total)  # until validated: a stop during validation resumes with the epoch's training done
    counts.all_reduce(trainer.dist)
    del batches  # (workers stay alive with persistent_workers; a shortened epoch's leftovers are dropped)
    elapsed = time.perf_counter() - start
    return {**counts.summary(), "gradient_norm": float(torch.stack(norms).mean()), "learning_rate": lr,
            "epoch_time": elapsed, "samples_per_second": counts.samples / elapsed,
            "perf/data_wait_fraction": wait / elapsed, "perf/step_time": (elapsed - wait) / max(total, 1)}


@contextmanager
def released_on_stop(batches) -> Iterator[None]:
    """Shut a loader iterator's worker processes down when the run stops in the block: workers that a group
    signal killed stay registered with torch otherwise, and its SIGCHLD handler would raise "worker killed by
    signal" at some later moment, for instance while the interpreter exits."""
    try:
        yield
    except StopTraining:
        shutdown = getattr(batches, "_shutdown_workers", None)  # (multi-process iterators only)
        if shutdown is not None:
            shutdown()
        raise


def release_loaders(*loaders) -> None:
    """Shut down the worker processes that persistent loaders keep between epochs (see `released_on_stop`)."""
    for loader in loaders:
        shutdown = getattr(getattr(loader, "_iterator", None), "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        loader._iterator = None


def next_batch(batches, keep: Callable[[], None] = lambda: None):
    """next(batches); a loader whose workers died of the stop this run received (a signal to the process group)
    is a stop: `keep()` records the position, then StopTraining."""
    try:
        return next(batches)
    except RuntimeError as e:
        if not loader_stopped(e):
            raise
        keep()
        raise StopTraining("the DataLoader workers were stopped by the same signal") from None


@torch.no_grad()
def validate(trainer: Trainer) -> dict[str, Any]:
    """This rank's share of the val split, summed over the ranks (every val slice counted once)."""
    broadcast_buffers(trainer.dist, trainer.model)
    trainer.model.eval()
    counts = EpochCounts(trainer.num_classes, trainer.device)
    batches = iter(trainer.val_loader)
    with released_on_stop(batches):
        for i in range(len(trainer.val_loader)):
            if trainer.cfg.train.val_batches is not None and i >= trainer.cfg.train.val_batches:
                break
            batch = next_batch(batches)
            images, labels, valid = prepare_batch(trainer, batch)
            with trainer.autocast:
                logits = trainer.forward(model_input(trainer, images))
            loss = segmentation_loss(logits, labels, valid, ce_weight=trainer.cfg.train.ce_weight,
                                     dice_weight=trainer.cfg.train.dice_weight)
            counts.add(loss, logits.argmax(1), labels, valid)
    counts.all_reduce(trainer.dist)
    return counts.summary()


@torch.no_grad()
def predict_examples(trainer: Trainer, dataset, indices: list[int], model: bool = True) -> list[dict]:
    """CT (centre slice, in [0, 1] in the soft-tissue window), reference and (with `model`) the
    prediction of some slices of `dataset`, as numpy, for figures and wandb."""
    if not indices:
        return []
    items = dataset.__getitems__(indices)
    batch = {"image": torch.stack([it["image"] for it in items]), "label": torch.stack([it["label"] for it in items]),
             "subject": torch.tensor([it["subject"] for it in items])}
    images, labels, _ = prepare_batch(trainer, batch)
    centre = batch["image"][:, batch["image"].shape[1] // 2].float()
    ct = window_gray(centre.numpy(), *WINDOWS["soft"])  # the window of `cache show` and the evaluation figures
    pred = None
    if model:
        trainer.model.eval()
        with trainer.autocast:
            # (the bare model: rank 0 alone calls this)
            pred = trainer.model(model_input(trainer, images)).argmax(1).cpu().numpy()
    subjects = dataset.reader.subjects
    return [{"ct": ct[j], "reference": labels[j].cpu().numpy(),
             "prediction": None if pred is None else pred[j],
             "caption": f"{subjects[it['subject']]} slice {it['slice']}"} for j, it in enumerate(items)]


def epoch_record(trainer: Trainer, epoch: int, train: dict, val: dict) -> dict[str, Any]:
    """The per-epoch metrics under their dashboard names, plus val Dice per structure (history only)."""
    per_class = {trainer.names[i]: d for i, d in enumerate(val["dice_per_class"]) if i > 0}
    return {
        "epoch": epoch, "train/loss": train["loss"], "train/dice": train["dice"], "val/loss": val["loss"],
        "val/dice": val["dice"], "val/iou": val["iou"], **comparison(train, val),
        **{k: train[k] for k in ("learning_rate", "gradient_norm", "epoch_time", "samples_per_second",
                                 "perf/data_wait_fraction", "perf/step_time")},
        **ranked_classes(val["dice_per_class"], trainer.names), "val/dice_per_structure": per_class,
    }


def fit(trainer: Trainer, state: TrainState, loggers: list, progress: NullProgress,
        end_of_epoch: Callable[[TrainState, dict], None], should_stop: Callable[[], bool] = lambda: False
        ) -> list[dict]:
    """Train from state.epoch to cfg.train.epochs; `end_of_epoch(state, record)` saves checkpoints and figures.
    `should_stop()` is asked after every step (StopTraining, see `train_one_epoch`) and before every epoch."""
    records = []
    class_labels = {i: name for i, name in trainer.names.items()}
    for epoch in range(state.epoch, trainer.cfg.train.epochs):
        progress.start_epoch(epoch + 1, trainer.cfg.train.epochs,
                             batches_per_epoch(len(trainer.train_loader), trainer.cfg.train.steps_per_epoch))
        if state.batch == 0 and should_stop():
            raise StopTraining
        log_batch = lambda record, step: [logger.log(record, step, "batch") for logger in loggers]  # noqa: E731
        train = train_one_epoch(trainer, state, log_batch, progress, should_stop)
        val = validate(trainer)
        trainer.schedule.end_epoch(val["dice"])
        state.epoch, state.batch, state.partial = epoch + 1, 0, None
        record = epoch_record(trainer, state.epoch, train, val)
        examples = (predict_examples(trainer, trainer.val_loader.dataset, trainer.val_examples)
                    if trainer.dist.main else [])
        for logger in loggers:
            logger.log(record, state.step, "epoch")
            logger.log_images(examples, class_labels, state.step)
        end_of_epoch(state, record)
        progress.end_epoch(
            f"epoch {state.epoch}/{trainer.cfg.train.epochs}: train loss {train['loss']:.4f} dice "
            f"{train['dice']:.3f} | "
            f"val loss {val['loss']:.4f} dice {val['dice']:.3f} iou {val['iou']:.3f} | lr {train['learning_rate']:.2e}"
            f" | {train['samples_per_second']:.1f} samples/s, data wait {100 * train['perf/data_wait_fraction']:.0f}%"
            f" | {train['epoch_time']:.1f} s")
        records.append(record)
    return records
