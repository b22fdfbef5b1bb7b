"""How fast evaluate and predict run the model: slices/s of the real model size (the default U-Net, 118 outputs)
at 512 x 512, the way inference ran before (contiguous memory format) and the way it runs now
(`evaluate.inference.predict_volumes`: channels-last, inference mode, batch lowered to the memory budget), on the
same random slices, on the CPU and on CUDA when there is one.

`run_predict_benchmark` returns a plain dict (the `--json` output); `format_table` turns it into lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import ModelConfig
from ..data.transforms import apply_intensity
from ..evaluate.inference import Throughput, VolumeSlices, inference_batch_size, predict_volumes
from ..model.unet import build_model, count_parameters

Log = Callable[[str], None]
INTENSITY = {"clip": [-1000, 1000], "shift": -1000, "scale": 2000}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _plain(model: torch.nn.Module, volume: np.ndarray, batch: int, device: torch.device) -> tuple[np.ndarray, float]:
    """Labels and seconds the way inference ran before: contiguous model and input, fixed batches."""
    model.to(memory_format=torch.contiguous_format)
    loader = DataLoader(VolumeSlices(volume, 1), batch_size=batch)
    labels = []
    start = time.perf_counter()
    with torch.inference_mode():
        for b in loader:
            logits = model(apply_intensity(b["image"].to(device), INTENSITY))
            labels.append(logits.argmax(1).to(torch.uint8).cpu().numpy())
    _sync(device)
    return np.concatenate(labels), time.perf_counter() - start


def _ctslice(model: torch.nn.Module, volume: np.ndarray, batch: int, device: torch.device
             ) -> tuple[np.ndarray, float]:
    """Labels and seconds through `predict_volumes`, as evaluate and predict run it."""
    throughput = Throughput()
    loader = DataLoader(VolumeSlices(volume, 1), batch_size=batch)
    [(_, (labels,))] = predict_volumes(model, loader, {0: len(volume)}, INTENSITY, device, throughput=throughput)
    _sync(device)
    return labels, throughput.seconds


def run_predict_benchmark(devices: list[str], size: int = 512, classes: int = 118, slices: int = 4,
                          batch_size: int = 16, memory_gib: float = 4.0, seed: int = 0,
                          log: Log | None = None) -> dict:
    """Slices/s of both ways on each device, after one warm-up batch of each (kernel selection, allocation)."""
    cfg = ModelConfig()
    torch.manual_seed(seed)
    model = build_model(cfg, 1, classes).eval()
    volume = np.random.default_rng(seed).integers(-1000, 1000, (slices, size, size)).astype(np.int16)
    model_config = {"base_width": cfg.base_width, "in_channels": 1, "num_classes": classes}
    batch = min(batch_size, inference_batch_size(model_config, size, size, memory_gib), slices)
    result = {"size": size, "classes": classes, "slices": slices, "params": count_parameters(model)[0],
              "batch": batch, "memory_gib": memory_gib, "threads": torch.get_num_threads(), "rows": []}
    for name in devices:
        device = torch.device(name)
        model.to(device)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        row = {"device": label}
        for way, run in (("plain", _plain), ("ctslice", _ctslice)):
            if log:
                log(f"{label}: {way}, warm-up then {slices} slices in batches of {batch} ...")
            run(model, volume[:1], 1, device)
            labels, seconds = run(model, volume, batch, device)
            row[way] = {"seconds": seconds, "slices_per_s": slices / seconds}
            row[f"{way}_labels"] = labels
        row["labels_equal"] = bool(np.array_equal(row.pop("plain_labels"), row.pop("ctslice_labels")))
        row["ratio"] = row["ctslice"]["slices_per_s"] / row["plain"]["slices_per_s"]
        result["rows"].append(row)
    return result


def format_table(result: dict) -> list[str]:
    lines = [f"predict benchmark: U-Net {result['params']:,} parameters, {result['classes']} outputs, "
             f"{result['size']}x{result['size']} px, {result['slices']} slices in batches of {result['batch']} "
             f"(memory budget {result['memory_gib']:g} GiB), {result['threads']} CPU threads",
             f"{'device':28s} {'before: contiguous':>20s} {'now: channels-last':>20s} {'ratio':>7s} {'labels':>8s}"]
    for r in result["rows"]:
        lines.append(f"{r['device']:28s} {r['plain']['slices_per_s']:14.2f} sl/s {r['ctslice']['slices_per_s']:14.2f}"
                     f" sl/s {r['ratio']:7.2f} {'equal' if r['labels_equal'] else 'DIFFER':>8s}")
    return lines
