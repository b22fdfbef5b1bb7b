"""Checkpoints for evaluation tests, written as the trainer writes them (the checkpoint contract), from a tiny
untrained U-Net: evaluation is tested for its plumbing with these and for exactness with oracle predictions."""

from __future__ import annotations

from pathlib import Path

import torch

from ctslice.cache.manifest import read_manifest
from ctslice.config import Config, ModelConfig
from ctslice.model.unet import build_model
from ctslice.model.checkpoint import Checkpoint, save_checkpoint


def make_checkpoint(cache: Path, path: Path, context_slices: int = 1, seed: int = 0) -> Path:
    manifest = read_manifest(cache)
    torch.manual_seed(seed)
    cfg = ModelConfig(base_width=4, depth=3)
    model = build_model(cfg, context_slices, manifest.num_labels)
    s = manifest.settings
    ckpt = Checkpoint(
        model=model.state_dict(),
        model_config={"base_width": 4, "depth": 3, "in_channels": context_slices, "num_classes": manifest.num_labels},
        context_slices=context_slices,
        intensity={"clip": [s.hu_min, s.hu_max], "shift": s.hu_min, "scale": s.hu_max - s.hu_min},
        label_map=dict(manifest.label_map), label_values=manifest.dataset.get("label_values"),
        preprocess=s.to_json(), cache=str(Path(cache).resolve()),
        cache_hash=s.hash, config=Config().to_dict(), epoch=2, metrics={},
    )  # no training state: evaluated and predicted from, not resumed
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, ckpt)  # format, version and checksum as the trainer writes them
    return path


def edit_checkpoint(path: Path, change) -> Path:
    """Load the plain dict, `change(ckpt)` in place, write back with a fresh checksum: a hand edit that the checksum does not
    catch, so that what refuses it is the validation of its contents."""
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    save_checkpoint(path, ckpt)
    return path
