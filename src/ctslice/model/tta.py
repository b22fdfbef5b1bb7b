"""Test-time augmentation: a model's probabilities averaged over transformed copies of its input, each mapped
back to the input's frame before averaging.

    model = with_tta(model, "shift", labels, fill=air, shift_px=4)   # identity + 4 in-plane shifts
    model(x)     # log of the mean probabilities, as `Ensemble` returns (argmax, softmax downstream unchanged)

What is offered, and why only this (the README says the same):
- "shift": the slice moved by `shift_px` pixels up, down, left and right (air entering at the border). Moving the
  patient in the scanner changes no anatomy, so it is safe for every structure; it only averages out the
  network's dependence on the pooling grid, a small gain.
- "flip-lr": the slice mirrored left-right (the cache's columns run from the patient's right to left), and the
  output mirrored back with the channels of left/right pairs swapped (names that differ only in a "left"/"right"
  word: kidney_left <-> kidney_right). Anatomy is not left-right symmetric (liver right, spleen and heart left),
  so a mirrored slice is an input the model has never seen unless it was trained with left-right mirroring
  (and the same pair swap): use it only then. A label map with a left/right structure whose counterpart is missing
  is refused, since its channel cannot be mirrored back.
- No anterior-posterior or superior-inferior flips: nothing in the body is symmetric that way (spine behind,
  sternum in front), so no model trained on real anatomy sees such inputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch

from ..errors import CtsliceError
from .ensemble import log_probabilities

TTA_CHOICES = ("shift", "flip-lr")
_SIDE = re.compile(r"(?<![a-z])(left|right)(?![a-z])", re.IGNORECASE)


def parse_tta(value: str) -> tuple[str, ...]:
    """'none' -> (), 'shift,flip-lr' -> ('shift', 'flip-lr'); CtsliceError for anything else."""
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    if names == ("none",):
        return ()
    unknown = [n for n in names if n not in TTA_CHOICES]
    if unknown or not names:
        raise CtsliceError(f"--tta {value!r}: give none or a comma-separated list of {', '.join(TTA_CHOICES)}")
    return names


def shifted(t: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """`t` (..., H, W) moved by (dy, dx) pixels: out[..., y, x] = t[..., y - dy, x - dx], `fill` where that lies
    outside."""
    h, w = t.shape[-2:]
    out = torch.full_like(t, fill)
    if abs(dy) < h and abs(dx) < w:
        out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            t[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def mirror_channels(labels: dict[int, str]) -> list[int]:
    """The channel order of a left-right mirrored prediction: each left/right pair swapped, others in place.
    CtsliceError for a left/right structure without its counterpart."""
    index = {name: i for i, name in labels.items()}
    order = list(range(len(labels)))
    for i, name in labels.items():
        if _SIDE.search(name):
            other = _SIDE.sub(lambda m: _swap_word(m.group(0)), name)
            if other not in index:
                raise CtsliceError(f"--tta flip-lr: structure {name!r} has no mirrored counterpart {other!r} in the "
                                   f"label map, so its channel cannot be mirrored back; leave flip-lr out")
            order[i] = index[other]
    return order


def _swap_word(word: str) -> str:
    swapped = "right" if word.lower() == "left" else "left"
    return swapped.upper() if word.isupper() else swapped.capitalize() if word[0].isupper() else swapped


View = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor],
             Callable[[torch.Tensor], torch.Tensor]]
"""(transform the input, map probabilities back, map a coverage mask back): pixels a view does not see (shifted
out of the slice) have coverage 0 and are averaged over the other views."""


def shift_view(dy: int, dx: int, fill: float) -> View:
    back = lambda t: shifted(t, -dy, -dx, 0.0)  # noqa: E731
    return (lambda x: shifted(x, dy, dx, fill)), back, back


def flip_view(channels: list[int]) -> View:
    order = torch.tensor(channels)
    return ((lambda x: x.flip(-1)), (lambda p: p.flip(-1)[:, order.to(p.device)]), (lambda c: c.flip(-1)))


class TestTimeAugmentation(torch.nn.Module):
    """The log of the mean softmax of `model` over the identity and `views`, each mapped back to the input's
    frame, weighted per pixel by whether the view saw it."""

    __test__ = False  # (pytest: not a test class)

    def __init__(self, model: torch.nn.Module, views: Sequence[View]):
        super().__init__()
        self.model, self.views = model, list(views)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.model(x).float().softmax(1)
        coverage = torch.ones_like(total[:, :1])
        for forward, back, seen in self.views:
            total = total + back(self.model(forward(x)).float().softmax(1))
            coverage = coverage + seen(torch.ones_like(coverage))
        return log_probabilities(total / coverage)


def with_tta(model: torch.nn.Module, tta: Sequence[str], labels: dict[int, str], fill: float, shift_px: int
             ) -> torch.nn.Module:
    """`model` itself without transforms, else wrapped in `TestTimeAugmentation` with the views `tta` names
    (TTA_CHOICES); `fill`: air in the model's normalised input, `shift_px`: the shift of "shift"."""
    views: list[View] = []
    if "shift" in tta:
        views += [shift_view(dy, dx, fill) for dy, dx in ((shift_px, 0), (-shift_px, 0), (0, shift_px),
                                                          (0, -shift_px))]
    if "flip-lr" in tta:
        views.append(flip_view(mirror_channels(labels)))
    return TestTimeAugmentation(model, views).eval() if views else model
