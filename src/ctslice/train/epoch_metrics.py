"""What the trainer measures, as small functions: per-epoch counts accumulated on the device, the gradient norm,
and the per-epoch summary (comparison metrics, best and worst structures) under the names dashboards use.

Dice and IoU come from TP/FP/FN summed over the whole epoch (`ctslice.metrics`), not from averaging batches:
NaN for a structure absent from both reference and prediction, means over the foreground skipping NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from ..metrics import confusion_counts, dice_from_counts, iou_from_counts, nanmean


def gradient_norm(parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """Total L2 norm of all gradients (as clip_grad_norm_ computes it, before any clipping); 0 without grads."""
    norms = [p.grad.detach().float().norm() for p in parameters if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


class EpochCounts:
    """Sums over an epoch, kept on the device (no synchronisation per batch): loss, samples, TP/FP/FN per class."""

    def __init__(self, num_classes: int, device: torch.device):
        self.num_classes = num_classes
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.samples = 0
        self.tp, self.fp, self.fn = (torch.zeros(num_classes, dtype=torch.int64, device=device) for _ in range(3))

    def add(self, loss: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
            valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Add one batch (mean loss, predicted and reference labels (B, H, W), valid (B, C) or None); returns the
        batch's own counts."""
        n = target.shape[0]
        mask = None if valid is None else valid.t()[:, :, None, None]  # (C, B, 1, 1), as confusion_counts wants
        counts = confusion_counts(pred, target, self.num_classes, mask)
        self.loss += loss.detach().double() * n
        self.samples += n
        for total, c in zip((self.tp, self.fp, self.fn), counts):
            total += c
        return counts

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The sums so far, on the CPU (a checkpoint taken mid-epoch keeps them, so the resumed epoch's metrics are
        those of the whole epoch)."""
        return {"loss": self.loss.cpu(), "samples": torch.tensor(self.samples), "tp": self.tp.cpu(),
                "fp": self.fp.cpu(), "fn": self.fn.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        device = self.tp.device
        self.loss, self.tp, self.fp, self.fn = (state[k].to(device) for k in ("loss", "tp", "fp", "fn"))
        self.samples = int(state["samples"])

    def all_reduce(self, distributed) -> None:
        """Sum over the ranks of a distributed run (`distributed.Dist`): the whole epoch's metrics, not one
        rank's share."""
        if distributed.enabled:
            from .distributed import all_reduce_sum

            samples = torch.tensor([self.samples], dtype=torch.int64, device=self.tp.device)
            all_reduce_sum(distributed, self.loss, self.tp, self.fp, self.fn, samples)
            self.samples = int(samples.item())

    def summary(self) -> dict[str, object]:
        """{"loss", "dice", "iou" (foreground means), "dice_per_class" (list, NaN as None)}."""
        dice = dice_from_counts(self.tp, self.fp, self.fn).cpu()
        iou = iou_from_counts(self.tp, self.fp, self.fn).cpu()
        return {"loss": float(self.loss) / max(self.samples, 1), "dice": nanmean(dice[1:]), "iou": nanmean(iou[1:]),
                "dice_per_class": [None if math.isnan(d) else float(d) for d in dice.tolist()]}


def batch_dice(counts: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> float:
    """Mean foreground Dice of one batch's counts (for the batch/dice curve)."""
    return nanmean(dice_from_counts(*counts)[1:])


def comparison(train: dict, val: dict) -> dict[str, float]:
    """comparison/loss_gap (train - val loss), dice_gap (train - val Dice) and overfit_score: the Dice gap relative
    to the train Dice, 0 when val is as good or better."""
    gap = train["dice"] - val["dice"]
    overfit = max(gap, 0.0) / train["dice"] if train["dice"] > 0 else 0.0
    return {"comparison/loss_gap": train["loss"] - val["loss"], "comparison/dice_gap": gap,
            "comparison/overfit_score": 0.0 if math.isnan(overfit) else overfit}


def ranked_classes(dice_per_class: list[float | None], names: dict[int, str], n: int = 5) -> dict[str, float]:
    """The n best and n worst foreground structures by val Dice (NaN left out) as top_classes/rank_{i}_{name}
    and bottom_classes/rank_{i}_{name} (rank 1 = best, resp. worst)."""
    scored = sorted((d, i) for i, d in enumerate(dice_per_class) if i > 0 and d is not None)
    top = {f"top_classes/rank_{r}_{names[i]}": d for r, (d, i) in enumerate(reversed(scored[-n:]), 1)}
    bottom = {f"bottom_classes/rank_{r}_{names[i]}": d for r, (d, i) in enumerate(scored[:n], 1)}
    return {**top, **bottom}
