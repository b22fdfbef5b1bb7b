"""Does training wait for data? Training steps of the real model fed (a) by the ctslice DataLoader from a cache
and (b) by the same batches already on the device; their samples/s ratio is the share of compute speed the loader
sustains (target >= 0.95: the device never waits), and the loader run's data-wait fraction says where time went.

Both runs execute exactly the trainer's step (`train.loop.prepare_batch`, augmentation, `train_step`), so the
numbers are those of `ctslice train`. For the GPU check (`make bench-gpu`) the model can be given the real job's
118 outputs whatever the demo cache's labels (`classes`), the memory-fed step is also timed under torch.compile,
and the table adds peak GPU memory and the time one epoch of `epoch_slices` slices takes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import Config, PreprocessConfig
from ..errors import CtsliceError

Log = Callable[[str], None]


def ensure_demo_cache(out: Path, size: int, log: Log | None = None) -> Path:
    """The `make train` demo (12 subjects, 3 mm) cached at `size` px under `out`, built once and reused."""
    from ..preprocess.run import run_preprocess
    from ..synthetic import DemoSpec
    from .demo import ensure_demo_dataset

    data, cache = Path(out) / "demo-train", Path(out) / f"train-cache-{size}px"
    if log:
        log(f"demo data {data} and cache {cache} (built once) ...")
    ensure_demo_dataset(data, DemoSpec(subjects=12))
    report = run_preprocess(data, cache, PreprocessConfig(spacing=3.0, size=size, workers=0))
    if not report.ok:
        raise CtsliceError(f"{cache}: benchmark cache build failed: {report.failed}")
    return cache


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed_steps(t, batches, steps: int, warmup: int) -> tuple[float, float, int]:
    """Run warmup + steps training steps on batches from the iterator; (seconds, seconds waiting, samples) of the
    timed steps."""
    from ..train.augment import augment_batch
    from ..train.loop import prepare_batch, train_step

    t.model.train()
    wait = elapsed = 0.0
    samples = 0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(t.device)
            start, wait, samples = time.perf_counter(), 0.0, 0
        ready = time.perf_counter()
        batch = next(batches)
        wait += time.perf_counter() - ready
        images, labels, valid = prepare_batch(t, batch)
        images, labels = augment_batch(images, labels, t.cfg.augment, fill=t.fill, generator=t.augment_rng)
        train_step(t, images, labels, valid, t.cfg.train.learning_rate)
        samples += len(labels)
    _sync(t.device)
    elapsed = time.perf_counter() - start
    return elapsed, wait, samples


def _cycle(loader):
    while True:
        yield from loader


def with_outputs(t, classes: int) -> None:
    """Give trainer `t` a fresh model with `classes` outputs (the real job's 118 on a demo cache with fewer
    labels; the loss only needs labels below that)."""
    from ..train.build import build_optimizer
    from ..model.unet import build_model, count_parameters

    model = build_model(t.cfg.model, t.cfg.loader.context_slices, classes).to(t.device)
    if t.device.type == "cuda" and t.cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    t.model = t.forward = model
    t.optimizer, t.valid, t.params = build_optimizer(model, t.cfg), None, count_parameters(model)


def memory_batches(t, count: int) -> list[dict]:
    batches = []
    for batch in _cycle(t.train_loader):
        batches.append({k: v.to(t.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
        if len(batches) == count:
            return batches


def run_train_benchmark(cache: Path, cfg: Config, worker_counts: tuple[int, ...], steps: int, warmup: int = 3,
                        log: Log | None = None, classes: int | None = None, compiled: bool = False,
                        epoch_slices: int = 16_661) -> dict:
    """Samples/s of training fed by the loader with each worker count, and fed from device memory (also compiled
    with `compiled`)."""
    from ..train.build import build_trainer, check_cache
    from ..train.rng import seeded_rngs

    cache = Path(cache).resolve()
    manifest = check_cache(cache)
    rows = []
    for workers in worker_counts:
        # Each loader-fed run is followed at once by its memory-fed twin on the same batches, so that the ratio
        # compares neighbouring measurements (on a shared machine, speed drifts over minutes).
        run_cfg = dataclasses.replace(cfg, loader=dataclasses.replace(cfg.loader, workers=workers))
        with seeded_rngs(run_cfg.train.seed):  # the same initial weights for every worker count
            t = build_trainer(cache, run_cfg, manifest)
        if classes:
            with_outputs(t, classes)
        if log:
            log(f"{workers} worker(s): loader-fed, then memory-fed ...")
        elapsed, wait, samples = _timed_steps(t, _cycle(t.train_loader), steps, warmup)
        batches = memory_batches(t, min(warmup + steps, 64))
        m_elapsed, _, m_samples = _timed_steps(t, _cycle(batches), steps, warmup)
        loader, memory = samples / elapsed, m_samples / m_elapsed
        rows.append({"workers": workers, "samples_per_s": loader, "samples_per_s_memory": memory,
                     "ratio": loader / memory, "data_wait_fraction": wait / elapsed})
    default = next((r for r in rows if r["workers"] == cfg.loader.workers), rows[-1])
    compiled_rate = None
    if compiled:
        if log:
            log("memory-fed with torch.compile (compiles first) ...")
        t.forward = torch.compile(t.model)
        c_elapsed, _, c_samples = _timed_steps(t, _cycle(batches), steps, warmup)
        compiled_rate = c_samples / c_elapsed
    fastest = max(default["samples_per_s"], 1e-9)
    return {"classes": classes or manifest.num_labels, "samples_per_s_memory_compiled": compiled_rate,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if t.device.type == "cuda" else None,
            "epoch_slices": epoch_slices, "epoch_seconds": epoch_slices / fastest,"device": str(t.device) if t.device.type == "cpu" else torch.cuda.get_device_name(t.device),
            "size": manifest.settings.size, "batch_size": cfg.loader.batch_size, "steps": steps,
            "model": dataclasses.asdict(cfg.model), "params": t.params[0], "workers": default["workers"],
            "samples_per_s_loader": default["samples_per_s"], "samples_per_s_memory": default["samples_per_s_memory"],
            "ratio": default["ratio"], "data_wait_fraction": default["data_wait_fraction"], "rows": rows}


def format_table(result: dict) -> list[str]:
    lines = [f"device {result['device']}, {result['size']}x{result['size']} px, batch {result['batch_size']}, "
             f"U-Net {result['params']:,} parameters, {result['classes']} outputs, {result['steps']} timed steps",
             f"{'DataLoader workers':>18s} {'loader samples/s':>17s} {'memory samples/s':>17s} {'ratio':>7s} "
             f"{'data wait':>10s}"]
    for r in result["rows"]:
        lines.append(f"{r['workers']:18d} {r['samples_per_s']:17.1f} {r['samples_per_s_memory']:17.1f} "
                     f"{r['ratio']:7.3f} {100 * r['data_wait_fraction']:9.1f}%")
    lines.append(f"ratio with the default {result['workers']} worker(s): {result['ratio']:.3f} (target >= 0.95)")
    if result["samples_per_s_memory_compiled"] is not None:
        lines.append(f"memory-fed with torch.compile: {result['samples_per_s_memory_compiled']:.1f} samples/s")
    if result["peak_memory_gib"] is not None:
        lines.append(f"peak GPU memory: {result['peak_memory_gib']:.1f} GiB")
    lines.append(f"one epoch of {result['epoch_slices']:,} slices at the default workers' speed: "
                 f"{result['epoch_seconds']:.1f} s (target < 20 s on one H100-class GPU)")
    return lines
