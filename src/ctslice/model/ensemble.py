"""Several trained models as one: the mean of their softmax probabilities (the folds of a cross-validation, or
runs with other seeds).

    model, checkpoint = load_ensemble(["runs/fold0/checkpoint_best.pth", "runs/fold1/checkpoint_best.pth"], device)
    model(x)      # log of the mean probabilities: argmax gives the averaged prediction, softmax the mean itself

The ensemble returns log-probabilities where a model returns logits, so that the code that runs a model (argmax,
softmax, resampling the probabilities to the original grid) runs an ensemble unchanged. Only models that read the
same input and predict the same labels are averaged: checkpoints whose label maps, label values, input channels
(context slices), input intensity or preprocessing (spacing, slice size, HU clip) differ are refused, naming the
difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import CtsliceError
from .checkpoint import Checkpoint
from .load import load_model

INPUT_PREPROCESS = ("spacing", "size", "hu_min", "hu_max")
"""The preprocessing settings that decide what a model's input slices are (predict applies the first model's)."""


class Ensemble(torch.nn.Module):
    """The log of the mean softmax over `members` (each returning logits (B, C, H, W)), in float32."""

    def __init__(self, members: Sequence[torch.nn.Module]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = sum(m(x).float().softmax(1) for m in self.members) / len(self.members)
        return log_probabilities(mean)


def log_probabilities(p: torch.Tensor) -> torch.Tensor:
    """log p with 0 raised to the smallest positive float first: no -inf, which would become NaN when the
    probabilities are interpolated (softmax of the result is p again, to within 1e-38)."""
    return p.clamp_min(torch.finfo(p.dtype).tiny).log()


def ensemble_problem(paths: Sequence[Path | str], checkpoints: Sequence[Checkpoint]) -> str | None:
    """Why these checkpoints cannot be averaged, naming the first that differs from the first checkpoint and
    what differs; None when they can."""
    first = checkpoints[0]
    seen = {Path(paths[0]).resolve()}
    for path, ckpt in zip(paths[1:], checkpoints[1:]):
        if Path(path).resolve() in seen:
            return f"{path}: given twice; each checkpoint of an ensemble counts once"
        seen.add(Path(path).resolve())
        for what, a, b in (
                ("label map", first.label_map, ckpt.label_map),
                ("dataset label values", first.label_values, ckpt.label_values),
                ("input channels (context slices)", first.context_slices, ckpt.context_slices),
                ("input intensity", first.intensity, ckpt.intensity),
                ("preprocessing", _input_preprocess(first), _input_preprocess(ckpt))):
            if a != b:
                return (f"{path}: its {what} differs from {paths[0]}'s ({_short(b)} against {_short(a)}); an "
                        f"ensemble averages models that read the same input and predict the same labels")
    return None


def _input_preprocess(ckpt: Checkpoint) -> dict:
    return {k: ckpt.preprocess.get(k) for k in INPUT_PREPROCESS}


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def load_ensemble(paths: Sequence[Path | str], device: torch.device | str = "cpu"
                  ) -> tuple[torch.nn.Module, list[Checkpoint]]:
    """One checkpoint: its model as it is. Several: their `Ensemble`, after checking that they may be averaged.
    Returns the model in eval mode and the checkpoints (the first one's settings apply to all)."""
    if not paths:
        raise CtsliceError("no checkpoint given")
    loaded = [load_model(p, device) for p in paths]
    checkpoints = [c for _, c in loaded]
    if len(loaded) == 1:
        return loaded[0][0], checkpoints
    problem = ensemble_problem(paths, checkpoints)
    if problem:
        raise CtsliceError(problem)
    return Ensemble([m for m, _ in loaded]).eval(), checkpoints
