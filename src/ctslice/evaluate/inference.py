"""Slices in, label volumes out: batched inference whose results are stacked back into one volume per subject.

    loader = evaluation_loader(cache, "val", context_slices=3, loader=LoaderConfig(batch_size=16, workers=2))
    for subject, (volume,) in predict_volumes(model, loader, slice_counts, intensity, device, argmax_labels):
        ...   # volume: uint8 (slices, rows, cols), complete, in the order the loader finishes subjects

The loader runs in evaluation order (every slice once, subject after subject), so a subject is complete as soon as
its last slice has passed and only the subjects of the current batch are held in memory.
"""

from __future__ import annotations

import dataclasses
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


def predict_volumes(model: torch.nn.Module, batches: Iterable[dict], slice_counts: dict[int, int],
                    intensity: dict, device: torch.device, to_labels: LabelFn = argmax_labels
                    ) -> Iterator[tuple[int, np.ndarray]]:
    """Run `model` over loader batches ({"image": int16 (B, k, H, W), "subject", "slice"}) and yield
    (subject number, tuple of uint8 label volumes, one per output of `to_labels`) as each subject's
    `slice_counts[subject]` slices are done."""
    partial: dict[int, list] = {}  # subject -> [volumes, slices filled]
    model.eval()
    for batch in batches:
        done = []
        with torch.inference_mode():  # left before yielding: the caller's code must not run in inference mode
            logits = model(apply_intensity(batch["image"].to(device, non_blocking=True), intensity))
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
        yield from done
    if partial:
        raise RuntimeError(f"loader ended with subjects incomplete: {sorted(partial)}")
