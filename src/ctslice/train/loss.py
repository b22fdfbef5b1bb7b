"""The training loss: cross-entropy plus soft Dice over the foreground classes, aware of missing structures.

    loss = segmentation_loss(logits, target, valid, ce_weight=1.0, dice_weight=1.0)

`valid` (B, C) bool says which classes are known in each sample: a structure whose mask is missing for a subject
(`missing_structures` in its manifest record) is unknown there, not background. Its pixels are labelled 0 in the
cache, so the loss must not teach "this is background" there:
- cross-entropy is marginal (Shi et al. 2021, "Marginal loss and exclusion loss for partially supervised
  multi-organ segmentation"): for a background pixel, the model's probability of "background" is the sum of the
  probabilities of background and of every class missing in that sample;
- soft Dice leaves the class out for that sample (its terms are masked), as nnU-Net's ignore label does.

With deep supervision the model returns logits at full, 1/2, 1/4, ... size (`model/unet.py`): the loss is the
weighted sum of the same loss at each scale against the labels downsampled by nearest neighbour (every 2**k-th
pixel, which is what F.interpolate's nearest mode takes), with the same per-sample `valid` mask at every scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SMOOTH = 1e-5
"""Added to numerator and denominator of the soft Dice (nnU-Net's value)."""


def marginal_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                           valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of logits (B, C, H, W) against integer labels (B, H, W). With `valid` (B, C), background
    pixels (label 0) of a sample score log(p_background + sum of p_c over its missing classes c)."""
    if valid is None:  # (the trainer passes None when no subject misses a structure: the fast path)
        return F.cross_entropy(logits, target.long())
    log_p = torch.log_softmax(logits.float(), dim=1)
    target = target.long()
    picked = log_p.gather(1, target.unsqueeze(1)).squeeze(1)
    merged = ~valid.clone()
    merged[:, 0] = True  # background absorbs the missing classes
    background = torch.logsumexp(log_p.masked_fill(~merged[:, :, None, None], float("-inf")), dim=1)
    return -torch.where(target == 0, background, picked).mean()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """1 - mean soft Dice over the foreground classes present in the batch's reference, with sums over the whole
    batch (batch Dice: stable for small structures). Classes invalid in a sample contribute nothing from it.

    Classes absent from the batch are left out (as segmentation_models_pytorch's DiceLoss does): their soft Dice
    is ~0 until every pixel's probability for them is below ~1e-5, so with 14 structures and a few per batch they
    dominated the term and held it at 0.99 for hundreds of steps on the demo (measured); cross-entropy already
    punishes their false positives."""
    num_classes = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1)[:, 1:]
    onehot = F.one_hot(target.long(), num_classes).permute(0, 3, 1, 2)[:, 1:].to(probs.dtype)
    if valid is None:
        valid = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
    weight = valid[:, 1:, None, None].to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * onehot * weight).sum(dims)
    denominator = ((probs + onehot) * weight).sum(dims)
    dice = (2 * intersection + SMOOTH) / (denominator + SMOOTH)
    known = (onehot * weight).sum(dims).gt(0).to(dice.dtype)
    # (a masked mean without boolean indexing, which would synchronise with the GPU every step)
    return known.sum().clamp(max=1) - (dice * known).sum() / known.sum().clamp(min=1)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, *,
                      ce_weight: float = 1.0, dice_weight: float = 1.0) -> torch.Tensor:
    """ce_weight * marginal cross-entropy + dice_weight * soft Dice loss."""
    loss = logits.new_zeros((), dtype=torch.float32)
    if ce_weight:
        loss = loss + ce_weight * marginal_cross_entropy(logits, target, valid)
    if dice_weight:
        loss = loss + dice_weight * soft_dice_loss(logits, target, valid)
    return loss


def deep_supervision_weights(stages: int) -> list[float]:
    """nnU-Net's loss weights for the outputs of `stages` decoder stages, full resolution first: halving per
    scale (1, 1/2, 1/4, ...), the lowest stage's set to 0, normalised to sum 1. One stage: [1.0]."""
    weights = [0.5**i for i in range(stages)]
    if stages > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def downsample_labels(target: torch.Tensor, factor: int) -> torch.Tensor:
    """Labels (B, H, W) at 1/factor of their size by nearest neighbour: no label value is mixed or invented."""
    return target[:, ::factor, ::factor]


def supervised_loss(outputs: torch.Tensor | list[torch.Tensor], target: torch.Tensor,
                    valid: torch.Tensor | None = None, *, ce_weight: float = 1.0,
                    dice_weight: float = 1.0) -> torch.Tensor:
    """`segmentation_loss` of one logits tensor, or of a deep-supervision list [full, 1/2, 1/4, ...] (the lowest
    decoder stage has no head, its weight being 0) as the weighted sum over its scales."""
    if isinstance(outputs, torch.Tensor):
        return segmentation_loss(outputs, target, valid, ce_weight=ce_weight, dice_weight=dice_weight)
    weights = deep_supervision_weights(len(outputs) + 1)
    total = outputs[0].new_zeros((), dtype=torch.float32)
    for k, (logits, weight) in enumerate(zip(outputs, weights)):
        factor = target.shape[-1] // logits.shape[-1]
        assert factor == 2**k, f"deep supervision output {k} is 1/{factor} of the labels' size, not 1/{2**k}"
        total = total + weight * segmentation_loss(logits, downsample_labels(target, factor), valid,
                                                   ce_weight=ce_weight, dice_weight=dice_weight)
    return total
