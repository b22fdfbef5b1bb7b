"""Slices in, label volumes out: batched inference whose results are stacked back into one volume per subject.

    loader = evaluation_loader(cache, "val", context_slices=3, loader=LoaderConfig(batch_size=16, workers=2))
    for subject, (volume,) in predict_volumes(model, loader, slice_counts, intensity, device, argmax_labels):
        ...   # volume: uint8 (slices, rows, cols), complete, in the order the loader finishes subjects

The loader runs in evaluation order (every slice once, subject after subject), so a subject is complete as soon as
its last slice has passed and only the subjects of the current batch are held in memory.

Speed. The model runs in inference mode, in channels-last memory format (the convolutions' fast layout on CPU and
on GPUs alike: 1.6-1.8x on the 2-core VM's CPU, `ctslice bench predict`), on batches of `[loader] batch_size`
slices, fewer when their activations and outputs would not fit `[evaluate] inference_memory_gib`
(`inference_batch_size`; evaluate and predict take the smaller). The logits are made
contiguous again before anything reads them, so what follows (softmax, argmax, resampling) runs as before; the
labels are equal to those of the plain layout (tests/test_inference_speed.py), the logits differ by float rounding
(~1e-7). `Throughput` counts the slices and the seconds spent in inference, for the slices/s that evaluate and
predict report.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import LoaderConfig
from ..data.dataset import context_window
from ..data.loader import build_loader
from ..data.transforms import apply_intensity

LabelFn = Callable[[int, torch.Tensor], tuple[torch.Tensor, ...]]
"""(subject number, logits (B, C, H, W)) -> one or more uint8 label batches (B, h, w) of those slices (e.g. in the
cache's space and on the original plane); `predict_volumes` stacks each into its own volume."""


def argmax_labels(subject: int, logits: torch.Tensor) -> tuple[torch.Tensor]:
    """Labels in the cache's space: the most likely class per pixel."""
    return (logits.argmax(1).to(torch.uint8),)


LOADER_FIELDS = ("batch_size", "workers", "pin_memory", "prefetch_factor")
"""What evaluation reads of the [loader] section; sampling settings do not apply (every slice once, in order) and
the context slices are the checkpoint's."""


def evaluation_loader(cache: Path | str, split: str, context_slices: int, loader: LoaderConfig) -> DataLoader:
    """Every slice of `split` once, in order (subjects sorted, then slices), with `loader`'s LOADER_FIELDS; workers
    are not kept alive (there is one pass)."""
    cfg = dataclasses.replace(loader, context_slices=context_slices, persistent_workers=False)
    return build_loader(cache, split, cfg, shuffle=False)


class VolumeSlices(Dataset):
    """A CT volume in memory (slices, H, W) as loader items, with the same 2.5D context as `SliceDataset`."""

    def __init__(self, volume: np.ndarray, context_slices: int, subject: int = 0):
        self.volume, self.k, self.subject = volume, context_slices, subject

    def __len__(self) -> int:
        return self.volume.shape[0]

    def __getitem__(self, z: int) -> dict:
        window = context_window(z, self.k, self.volume.shape[0])
        return {"image": torch.from_numpy(self.volume[window]), "subject": self.subject, "slice": z}


MAX_INFERENCE_BATCH = 256
"""No more slices per batch than this, whatever the budget: beyond it a batch is no faster per slice."""


def inference_bytes_per_slice(model_config: dict, rows: int, cols: int) -> int:
    """Memory one slice needs during inference, float32: its logits, their softmax and a contiguous copy (3 maps
    per class) and the widest decoder stage's feature maps (4 maps of base_width) at full resolution. Measured on
    the default U-Net at 512 x 512 with 118 classes: ~380 MB a slice; this gives ~500 MB (a margin)."""
    maps = 3 * model_config["num_classes"] + 4 * model_config["base_width"] + model_config["in_channels"]
    return 4 * rows * cols * maps


def inference_batch_size(model_config: dict, rows: int, cols: int, budget_gib: float) -> int:
    """The most slices of rows x cols whose inference fits `budget_gib` (at least 1, at most MAX_INFERENCE_BATCH)."""
    fits = int(budget_gib * 2**30) // inference_bytes_per_slice(model_config, rows, cols)
    return max(1, min(MAX_INFERENCE_BATCH, fits))


@dataclasses.dataclass
class Throughput:
    """Slices predicted and seconds spent on them (reading batches and running the model, not what the caller
    does between subjects)."""

    slices: int = 0
    seconds: float = 0.0

    @property
    def slices_per_s(self) -> float | None:
        return self.slices / self.seconds if self.seconds > 0 else None


def predict_volumes(model: torch.nn.Module, batches: Iterable[dict], slice_counts: dict[int, int],
                    intensity: dict, device: torch.device, to_labels: LabelFn = argmax_labels,
                    throughput: Throughput | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Run `model` over loader batches ({"image": int16 (B, k, H, W), "subject", "slice"}) and yield
    (subject number, tuple of uint8 label volumes, one per output of `to_labels`) as each subject's
    `slice_counts[subject]` slices are done. The model is put in eval mode and channels-last format (in place).
    `throughput`, when given, gets the slices and the seconds."""
    partial: dict[int, list] = {}  # subject -> [volumes, slices filled]
    model.eval().to(memory_format=torch.channels_last)
    throughput = throughput if throughput is not None else Throughput()
    batches = iter(batches)
    while True:
        start = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            break
        done = []
        with torch.inference_mode():  # left before yielding: the caller's code must not run in inference mode
            images = apply_intensity(batch["image"].to(device, non_blocking=True), intensity)
            logits = model(images.contiguous(memory_format=torch.channels_last)).contiguous()
            subjects = torch.as_tensor(batch["subject"])
            slices = torch.as_tensor(batch["slice"]).numpy()
            for s in dict.fromkeys(subjects.tolist()):  # the batch's subjects, in order
                rows = (subjects == s).numpy()
                outputs = [t.cpu().numpy() for t in to_labels(s, logits[torch.from_numpy(rows).to(logits.device)])]
                if s not in partial:
                    partial[s] = [[np.zeros((slice_counts[s], *o.shape[1:]), np.uint8) for o in outputs], 0]
                for volume, labels in zip(partial[s][0], outputs):
                    volume[slices[rows]] = labels
                partial[s][1] += int(rows.sum())
                if partial[s][1] == slice_counts[s]:
                    done.append((s, tuple(partial.pop(s)[0])))
        throughput.slices += len(slices)
        throughput.seconds += time.perf_counter() - start
        yield from done
    if partial:
        raise RuntimeError(f"loader ended with subjects incomplete: {sorted(partial)}")
