"""The classic 2D U-Net (Ronneberger et al. 2015) with BatchNorm: the network the project exists to train.
`[model] norm = "instance"` and `activation = "leaky_relu"` give nnU-Net's choices instead.

    model = build_model(ModelConfig(), in_channels=1, num_classes=118)   # 7,769,270 parameters

Per stage two 3x3 convolutions + BatchNorm + ReLU; max-pool down, transposed convolution up, skip connections
by concatenation; a 1x1 head with one output channel per label-map entry, background included. Input height and
width must be divisible by 2**(depth-1) (512 and 128, the preprocessing sizes, are).

With deep supervision (nnU-Net's), the decoder stages at 1/2, 1/4, ... of the input size (the lowest left out)
get 1x1 heads too: in training mode the model returns [full, 1/2, 1/4, ...] logits, in eval mode only the full
resolution's, so evaluation, prediction and ensembles see one tensor either way.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import CtsliceError


LEAKY_SLOPE = 0.01
"""Negative slope of 'leaky_relu' (nnU-Net's, torch's default)."""


def norm_layer(kind: str, channels: int) -> nn.Module:
    """'batch': BatchNorm2d; 'instance': InstanceNorm2d with a learned scale and shift and no running statistics
    (every slice is normalised by its own, at inference too)."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)
    return nn.BatchNorm2d(channels)


def activation_layer(kind: str) -> nn.Module:
    return nn.LeakyReLU(LEAKY_SLOPE, inplace=True) if kind == "leaky_relu" else nn.ReLU(inplace=True)


def double_conv(c_in: int, c_out: int, norm: str = "batch", activation: str = "relu") -> nn.Sequential:
    # Convolutions keep their bias (redundant before BatchNorm, but the original network had it: 7,769,270
    # parameters at 1 input / 118 outputs, which existing comparisons and the count rely on).
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), norm_layer(norm, c_out), activation_layer(activation),
        nn.Conv2d(c_out, c_out, 3, padding=1), norm_layer(norm, c_out), activation_layer(activation),
    )


class UNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, base_width: int = 32, depth: int = 5,
                 deep_supervision: bool = False, norm: str = "batch", activation: str = "relu"):
        super().__init__()
        widths = [base_width * 2**i for i in range(depth)]
        self.down = nn.ModuleList([double_conv(c_in, c_out, norm, activation)
                                   for c_in, c_out in zip([in_channels, *widths], widths)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(w * 2, w, 2, stride=2) for w in reversed(widths[:-1])])
        self.merge = nn.ModuleList([double_conv(w * 2, w, norm, activation) for w in reversed(widths[:-1])])
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        supervised = ModelConfig(base_width, depth, deep_supervision).supervised_widths()  # [1/2, 1/4, ...]
        self.aux_heads = nn.ModuleList([nn.Conv2d(w, num_classes, 1) for w in reversed(supervised)])  # low first
        self.multiple = 2 ** (depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()  # the bottleneck's output is x itself
        supervise = self.training and len(self.aux_heads) > 0
        lower = len(self.up) - 1 - len(self.aux_heads)  # decoder stages before the first supervised one
        outputs = []
        for i, (up, merge) in enumerate(zip(self.up, self.merge)):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
            if supervise and lower <= i < len(self.up) - 1:
                outputs.append(self.aux_heads[i - lower](x))
        if not supervise:
            return self.head(x)
        return [self.head(x), *reversed(outputs)]  # full resolution first


def build_model(cfg: ModelConfig, in_channels: int, num_classes: int) -> UNet:
    """The U-Net for `in_channels` input slices (the loader's context_slices) and `num_classes` outputs (the
    cache's label map, background included)."""
    if in_channels < 1 or num_classes < 2:
        raise CtsliceError(f"a model needs >= 1 input channel and >= 2 classes, got {in_channels}, {num_classes}")
    return UNet(in_channels, num_classes, cfg.base_width, cfg.depth, cfg.deep_supervision, cfg.norm, cfg.activation)


def describe_heads(model: UNet) -> str:
    """The output heads, for the parameter count printed at the start of a run."""
    if not len(model.aux_heads):
        return "one output head"
    scales = ", ".join(f"1/{2 ** (i + 1)}" for i in range(len(model.aux_heads)))
    return f"output head at full size + deep supervision heads at {scales} (training only)"


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)
