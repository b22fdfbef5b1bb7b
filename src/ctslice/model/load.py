"""A trained model from a checkpoint, for evaluation and prediction.

    model, checkpoint = load_model("runs/x/checkpoint_best.pth", resolve_device("auto"))
    checkpoint.label_map, checkpoint.intensity, checkpoint.preprocess, checkpoint.context_slices

Everything evaluation and prediction read from it is checked on loading (`checkpoint.read_checkpoint`: checksum,
then its contents), so a damaged or hand-edited checkpoint gives one error naming the file instead of a KeyError,
a traceback or a model that fills the machine's memory.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CtsliceError
from .checkpoint import Checkpoint, read_checkpoint
from .unet import UNet, build_model


def load_model(path: Path | str, device: torch.device | str = "cpu") -> tuple[UNet, Checkpoint]:
    """The model in eval mode on `device` (so a deep-supervision model returns its full-resolution logits only),
    and the checkpoint it came from."""
    checkpoint = read_checkpoint(path)
    mc = checkpoint.model_config
    model = build_model(checkpoint.settings().model, mc["in_channels"], mc["num_classes"])
    try:
        model.load_state_dict(checkpoint.model)
    except RuntimeError as e:
        raise CtsliceError(f"{path}: weights do not fit the model it describes ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), checkpoint
