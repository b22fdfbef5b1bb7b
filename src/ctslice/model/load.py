"""A trained model from a checkpoint (the plain dict the trainer saves; see the README's checkpoint contract).

    model, ckpt = load_model("runs/x/checkpoint_best.pth", device)
    ckpt["label_map"], ckpt["intensity"], ckpt["preprocess"], ckpt["context_slices"]

Everything evaluation and prediction read from it is checked on loading (`train/checkpoint.py`: checksum, then
`check_contents`), so a damaged or hand-edited checkpoint gives one error naming the file instead of a KeyError,
a traceback or a model that fills the machine's memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import CtsliceError
from ..model.unet import UNet, build_model
from ..train.checkpoint import check_contents, label_values_of, load_checkpoint
from ..train.checkpoint import parse_label_values  # noqa: F401  (evaluate/run.py reads a manifest's with it)


def read_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, loaded with weights_only=True (no pickled code runs) and its checksum verified; a
    CtsliceError naming the file when it is missing, unreadable, altered, not a ctslice checkpoint, or holds
    settings the configuration's rules refuse or a model too large to build (`checkpoint.check_contents`)."""
    ckpt = load_checkpoint(path, map_location)  # the trainer's reader: format, version, checksum, one-line errors
    problem = check_contents(ckpt)
    if problem:
        raise CtsliceError(f"{path}: not a usable checkpoint: {problem}")
    return ckpt


def label_values(ckpt: dict[str, Any]) -> dict[int, int] | None:
    """Index -> the dataset's own label value, from the checkpoint only (see `checkpoint.label_values_of`)."""
    return label_values_of(ckpt)


def load_model(path: Path | str, device: torch.device | str = "cpu") -> tuple[UNet, dict[str, Any]]:
    """The model in eval mode on `device`, and the checkpoint dict it came from."""
    ckpt = read_checkpoint(path)
    mc = ckpt["model_config"]
    model = build_model(ModelConfig(base_width=mc["base_width"], depth=mc["depth"]), mc["in_channels"],
                        mc["num_classes"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CtsliceError(f"{path}: weights do not fit the model it describes ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), ckpt


def resolve_device(name: str) -> torch.device:
    """'auto': the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CtsliceError(f"device {name} asked for, but no CUDA GPU is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise CtsliceError("device mps asked for, but no Apple GPU (MPS) is available")
    return torch.device(name)
