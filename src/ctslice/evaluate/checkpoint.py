"""A trained model from a checkpoint (the plain dict the trainer saves; see the README's checkpoint contract).

    model, ckpt = load_model("runs/x/checkpoint_best.pth", device)
    ckpt["label_map"], ckpt["intensity"], ckpt["preprocess"], ckpt["context_slices"]

Everything evaluation and prediction read from it is checked on loading (`check_contents`), so a damaged or
hand-edited checkpoint gives one error naming the file instead of a KeyError deep inside inference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import CtsliceError
from ..train.checkpoint import load_checkpoint
from ..model.unet import UNet, build_model

REQUIRED = ("model", "model_config", "context_slices", "intensity", "label_map", "preprocess")
_INT, _NUMBER = (int,), (int, float)
CONTENTS = {  # section -> key -> accepted types (None allowed where listed)
    "model_config": {"base_width": _INT, "depth": _INT, "in_channels": _INT, "num_classes": _INT},
    "intensity": {"clip": (list, tuple), "shift": _NUMBER, "scale": _NUMBER},
    "preprocess": {"spacing": (*_NUMBER, type(None)), "size": _INT, "hu_min": _NUMBER, "hu_max": _NUMBER},
}


def read_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, loaded with weights_only=True (no pickled code runs); a CtsliceError naming the file
    when it is missing, unreadable, not a ctslice checkpoint or lacks what evaluation needs."""
    ckpt = load_checkpoint(path, map_location)  # the trainer's reader: format, version, one-line errors
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CtsliceError(f"{path}: checkpoint lacks {', '.join(missing)}")
    problem = check_contents(ckpt)
    if problem:
        raise CtsliceError(f"{path}: not a usable checkpoint: {problem}")
    return ckpt


def check_contents(ckpt: dict[str, Any]) -> str | None:
    """What is wrong with the values evaluation and prediction use (types, ranges, agreement), or None."""
    for section, keys in CONTENTS.items():
        values = ckpt[section]
        if not isinstance(values, dict):
            return f"{section} is {type(values).__name__}, not a dict"
        for key, types in keys.items():
            if key not in values:
                return f"{section} lacks {key!r}"
            if isinstance(values[key], bool) or not isinstance(values[key], types):
                return f"{section}[{key!r}] is {values[key]!r} ({type(values[key]).__name__})"
    mc, intensity = ckpt["model_config"], ckpt["intensity"]
    if any(mc[k] < 1 for k in CONTENTS["model_config"]):
        return f"model_config has a value below 1: {mc}"
    k = ckpt["context_slices"]
    if isinstance(k, bool) or not isinstance(k, int) or k != mc["in_channels"]:
        return f"context_slices {k!r} differs from the model's in_channels {mc['in_channels']}"
    clip = intensity["clip"]
    if (len(clip) != 2 or not all(isinstance(v, _NUMBER) and not isinstance(v, bool) for v in clip)
            or not clip[1] > clip[0] or not intensity["scale"] > 0):
        return f"intensity needs clip [low, high] with high > low and scale > 0, got {intensity}"
    if not isinstance(ckpt["label_map"], dict) or "0" not in ckpt["label_map"]:
        return "label_map is not a dict with index '0' (background)"
    return None


def label_values(ckpt: dict[str, Any]) -> dict[int, int] | None:
    """Index -> the dataset's own label value (nnU-Net/MSD datasets, whose values preprocessing renumbers), from
    the checkpoint (`label_values`) or, when the checkpoint does not carry them, from the manifest of the cache it
    was trained on if that is still there with the same label map; None: write indices."""
    values = ckpt.get("label_values")
    if values is None and ckpt.get("cache"):
        from ..cache.manifest import read_manifest

        try:
            manifest = read_manifest(Path(ckpt["cache"]))
        except (CtsliceError, OSError):
            return None
        if manifest.label_map != ckpt["label_map"]:
            return None
        values = manifest.dataset.get("label_values")
    return parse_label_values(values, ckpt["label_map"])


def parse_label_values(values: Any, label_map: dict[str, str]) -> dict[int, int] | None:
    """{"0": 0, "1": 1, "2": 3} (JSON) -> {0: 0, 1: 1, 2: 3} when it covers the label map with distinct
    non-negative integers (values read from a file are checked); None otherwise."""
    if not isinstance(values, dict) or set(values) != set(label_map):
        return None
    parsed = {int(k): v for k, v in values.items()}
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**16 for v in parsed.values()) \
            or len(set(parsed.values())) != len(parsed) or parsed[0] != 0:
        return None
    return parsed


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
    if name == "mps" and not torch.backends.mps.is_available():
        raise CtsliceError("device mps asked for, but no Apple GPU (MPS) is available")
    return torch.device(name)
