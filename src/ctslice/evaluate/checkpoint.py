"""A trained model from a checkpoint (the plain dict the trainer saves; see the README's checkpoint contract).

    model, ckpt = load_model("runs/x/checkpoint_best.pth", device)
    ckpt["label_map"], ckpt["intensity"], ckpt["preprocess"], ckpt["context_slices"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import CtsliceError
from ..train.model import UNet, build_model

REQUIRED = ("model", "model_config", "context_slices", "intensity", "label_map", "preprocess")


def read_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, loaded with weights_only=True (no pickled code runs); a CtsliceError naming the file
    when it is missing, unreadable or not a ctslice checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CtsliceError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for damaged files (RuntimeError, EOFError, UnpicklingError)
        raise CtsliceError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "ctslice-checkpoint":
        raise CtsliceError(f"{path}: not a ctslice checkpoint (no format 'ctslice-checkpoint')")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CtsliceError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return ckpt


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
    if mc["num_classes"] != len(ckpt["label_map"]):
        raise CtsliceError(f"{path}: {mc['num_classes']} outputs but {len(ckpt['label_map'])} labels in its label map")
    return model.to(device).eval(), ckpt


def resolve_device(name: str) -> torch.device:
    """'auto': the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CtsliceError(f"device {name} asked for, but no CUDA GPU is available")
    return torch.device(name)
