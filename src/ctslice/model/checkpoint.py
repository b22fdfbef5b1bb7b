"""The checkpoint contract, declared once: its file names, its format, its checksum, and `Checkpoint`, the typed
object the trainer writes and evaluate, predict and a resumed run read.

    save_checkpoint(run / LAST, checkpoint)          # format, version and checksum added; temp name + rename
    checkpoint = read_checkpoint(run / BEST)         # checked whole: CtsliceError naming the file, or a Checkpoint
    checkpoint.label_map, checkpoint.intensity, checkpoint.preprocess, checkpoint.context_slices

On disk a checkpoint is a plain dict (`Checkpoint.to_dict`) of tensors and Python values, no numpy or custom
classes, so `torch.load(weights_only=True)` reads it (RNG states become tensors and lists). Its keys are the
fields of `Checkpoint` plus `format`, `format_version` and `checksum`.

`checksum` (version 2) is a SHA-256 over every tensor's bytes and every other value: a flipped bit anywhere that
torch still loads changes a weight or a setting silently, so it is refused on load instead. Version 1 checkpoints
(before the checksum) are still read, with a warning on stderr that nothing could be verified.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import pickle
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..cache.label_map import label_map_from_json, label_map_problem, parse_label_values
from ..config import Config, PreprocessConfig, validate_settings
from ..errors import CtsliceError
from ..files import write_atomic

FORMAT = "ctslice-checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: written before checksums, read with a warning
LAST = "checkpoint_last.pth"  # the resumable state after the latest step saved
BEST = "checkpoint_best.pth"  # the epoch with the best val Dice so far
EPOCH_NAME = re.compile(r"^checkpoint_epoch(\d+)\.pth$")
TEMPORARY_NAME = re.compile(r"^\.checkpoint_\w+\.pth\.(\d+)\.tmp$")  # what save_checkpoint writes first


def epoch_checkpoint_name(epoch: int) -> str:
    return f"checkpoint_epoch{epoch}.pth"


def is_checkpoint_name(name: str) -> bool:
    """checkpoint_last.pth, checkpoint_best.pth, checkpoint_epoch{N}.pth (what makes a folder a run's)."""
    return name.startswith("checkpoint_") and name.endswith(".pth")


OLDER_MODEL = {"deep_supervision": False, "norm": "batch", "activation": "relu"}
"""model_config keys added after the first checkpoints, with the network those were written by."""
TRAINING_STATE = ("optimizer", "schedule", "state", "rng", "augment_rng")
"""What only a resumed run reads (a checkpoint without it can be evaluated, not continued)."""


@dataclass
class Checkpoint:
    """A trained model with everything evaluate and predict need on a machine that has no cache (its config,
    input intensity, label map and the dataset's own label values, the preprocessing settings) and everything a
    resumed run needs (optimizer, schedule, RNGs, counters; None in a checkpoint that cannot be resumed)."""

    model: dict[str, torch.Tensor]
    """The bare state_dict (no DDP or torch.compile prefixes): loads into a plain UNet."""
    model_config: dict[str, int]
    """base_width, depth, in_channels, num_classes, and deep_supervision, norm, activation (absent in checkpoints
    written before they existed: OLDER_MODEL's values)."""
    context_slices: int
    intensity: dict[str, Any]
    """clip [low, high], shift, scale: the input normalisation the weights were trained with."""
    label_map: dict[str, str]
    """{"0": "background", "1": ...}, the cache's label map JSON."""
    preprocess: dict[str, Any]
    """The cache's preprocessing settings (spacing, size, hu_min, hu_max, hash, ...)."""
    label_values: dict[str, int] | None = None
    """Label index -> the dataset's own value (nnU-Net/MSD datasets, renumbered by preprocessing); None: the
    indices are the values."""
    run_id: str | None = None
    splits: dict[str, list[str]] | None = None
    """The cache's splits it was trained with (evaluation names trained-on subjects; resume refuses others)."""
    subject_keys: dict[str, str] | None = None
    """Each trained-on subject's content key: a resume on a cache whose subjects changed is refused."""
    cache: str | None = None
    cache_hash: str | None = None
    config: dict[str, Any] | None = None
    """The run's resolved configuration (`Config.to_dict`): a resume's defaults."""
    epoch: int | None = None
    """Epochs completed."""
    metrics: dict[str, Any] | None = None
    world_size: int | None = None
    batch_size: int | None = None
    optimizer: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    """The run's counters (`TrainState.state_dict`)."""
    rng: dict[str, Any] | None = None
    augment_rng: torch.Tensor | None = None
    """(ranks, state): each rank's augmentation generator."""
    fold: int | None = None
    """The cross-validation fold it was trained on (0 .. folds-1; its subjects are `splits`); None: the cache's
    own train/val split."""
    folds: int | None = None
    """The number of cross-validation folds (with `fold`)."""

    def to_dict(self) -> dict[str, Any]:
        """The plain dict saved on disk (fields left None are left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        """A checkpoint dict as read from a file (untrusted): checked whole (`checkpoint_problem`); a CtsliceError
        saying what is wrong. Keys this version does not know (format, checksum, ...) are left out."""
        problem = checkpoint_problem(data)
        if problem:
            raise CtsliceError(problem)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def num_classes(self) -> int:
        return int(self.model_config["num_classes"])

    @property
    def labels(self) -> dict[int, str]:
        """{0: "background", 1: ...}."""
        return label_map_from_json(self.label_map)

    @property
    def dataset_label_values(self) -> dict[int, int] | None:
        """Index -> the dataset's own label value, from the checkpoint only (predict writes the same on a
        machine without the cache); None: write indices."""
        return parse_label_values(self.label_values, self.label_map)

    @property
    def resumable(self) -> bool:
        return all(getattr(self, name) is not None for name in TRAINING_STATE)

    def resume_problem(self) -> str | None:
        """Why a run cannot continue from it (parts of the training state missing), or None."""
        missing = [name for name in TRAINING_STATE if getattr(self, name) is None]
        if missing:
            return f"it holds no training state ({', '.join(missing)} missing)"
        if not isinstance(self.state, dict) or not isinstance(self.augment_rng, torch.Tensor):
            return "its training state is not a dict of counters and a tensor of RNG states"
        return None

    @property
    def epochs_done(self) -> int:
        """Epochs completed by the run's counters (0 for a checkpoint without them)."""
        return int((self.state or {}).get("epoch", 0))

    def settings(self) -> Config:
        """The configuration its settings describe, through the configuration's own rules
        (`validate_settings`): its preprocessing settings as a cache's, its model and context slices as a run's.
        ConfigError when a value is one a config file could not hold."""
        known = {f.name for f in dataclasses.fields(PreprocessConfig)}
        mc = self.model_config
        return validate_settings({"preprocess": {k: v for k, v in self.preprocess.items() if k in known},
                                  "model": {"base_width": mc["base_width"], "depth": mc["depth"],
                                            **{k: mc.get(k, v) for k, v in OLDER_MODEL.items()}},
                                  "loader": {"context_slices": self.context_slices}}, "the checkpoint's settings")


def bare_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights without the "module." (DDP) or "_orig_mod." (torch.compile) prefixes, so any trainer
    and the evaluator load them into a plain UNet."""
    inner = model
    while hasattr(inner, "module") or hasattr(inner, "_orig_mod"):
        inner = getattr(inner, "module", None) or inner._orig_mod
    return {k: v.detach().cpu() for k, v in inner.state_dict().items()}


def checksum(ckpt: Mapping[str, Any]) -> str:
    """SHA-256 of everything in the checkpoint dict except its `checksum`: tensors by dtype, shape and bytes,
    other values by type and repr, dict entries in a fixed order (so it does not depend on insertion order)."""
    h = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, dict):
            keys = [k for k in value if value is not ckpt or k != "checksum"]
            h.update(f"D{len(keys)}".encode())
            for k in sorted(keys, key=lambda k: (type(k).__name__, repr(k))):
                feed(k)
                feed(value[k])
        elif isinstance(value, (list, tuple)):
            h.update(f"{type(value).__name__[0]}{len(value)}".encode())
            for v in value:
                feed(v)
        else:
            h.update(f"{type(value).__name__}:{value!r};".encode())

    feed(ckpt)
    return "sha256:" + h.hexdigest()


def save_checkpoint(path: Path, checkpoint: Checkpoint | Mapping[str, Any]) -> None:
    """torch.save through `files.write_atomic` (durable; its temporary `.<name>.<pid>.tmp` matches TEMPORARY_NAME,
    the pid telling a dead writer's leftover from a write in progress): never a half-written checkpoint. A write that fails (full disk, no permission) is a CtsliceError naming the file; the
    previous one stays. A plain dict is written as it is (tests write hand-edited ones, for the checks on reading
    to refuse)."""
    path = Path(path)
    data = checkpoint.to_dict() if isinstance(checkpoint, Checkpoint) else dict(checkpoint)
    ckpt = {**data, "format": FORMAT, "format_version": FORMAT_VERSION}
    ckpt["checksum"] = checksum(ckpt)

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            torch.save(ckpt, f)
    try:
        write_atomic(path, write, durable=True)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
        reason = e.strerror if isinstance(e, OSError) and e.strerror else (str(e).splitlines() or [""])[0]
        raise CtsliceError(f"{path}: cannot write checkpoint ({reason}); the previous {path.name}, if any, is "
                           f"intact") from None


def read_checkpoint_dict(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict a checkpoint file holds, loaded with weights_only=True (no pickled code runs), its format,
    version and checksum verified (not yet its contents: `read_checkpoint`); a CtsliceError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CtsliceError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's message advises weights_only=False, i.e. running code from the file: not advice to pass on
        raise CtsliceError(f"{path}: not a readable checkpoint: damaged, not a checkpoint file, or one holding "
                           f"objects that a safe (weights-only) load refuses") from None
    except Exception as e:  # torch raises pickle, zip, OS and runtime errors of many kinds for a damaged file
        first = (str(e).splitlines() or [""])[0]
        raise CtsliceError(f"{path}: not a readable checkpoint: truncated, damaged or not a checkpoint file "
                           f"({type(e).__name__}: {first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CtsliceError(f"{path}: not a ctslice checkpoint")
    version = ckpt.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise CtsliceError(f"{path}: checkpoint format version {version!r}, this ctslice reads versions "
                           f"{', '.join(map(str, READABLE_VERSIONS))}")
    if version == 1:
        print(f"warning: {path}: written by an older ctslice without a checksum, so damage to it cannot be "
              f"detected; a checkpoint saved by this version carries one", file=sys.stderr)
    elif ckpt.get("checksum") != checksum(ckpt):
        raise CtsliceError(f"{path}: checksum mismatch: the checkpoint was changed or damaged after it was written "
                           f"(a flipped bit or an edit); use another checkpoint of the run")
    return ckpt


def read_checkpoint(path: Path | str, map_location: str | torch.device = "cpu",
                    refusal: str = "not a usable checkpoint") -> Checkpoint:
    """The checkpoint in `path`, checked whole before anything is built from it: file, format and checksum
    (`read_checkpoint_dict`), then its contents (`checkpoint_problem`); a CtsliceError "<path>: <refusal>: <what
    is wrong>" otherwise, one line."""
    data = read_checkpoint_dict(path, map_location)
    try:
        return Checkpoint.from_dict(data)
    except CtsliceError as e:
        raise CtsliceError(f"{path}: {refusal}: {e}") from None


REQUIRED = ("model", "model_config", "context_slices", "intensity", "label_map", "preprocess")
_INT, _NUMBER = (int,), (int, float)
CONTENTS = {  # section -> key -> accepted types (None allowed where listed)
    "model_config": {"base_width": _INT, "depth": _INT, "in_channels": _INT, "num_classes": _INT},
    "intensity": {"clip": (list, tuple), "shift": _NUMBER, "scale": _NUMBER},
    "preprocess": {"spacing": (*_NUMBER, type(None)), "size": _INT, "hu_min": _NUMBER, "hu_max": _NUMBER},
}


def checkpoint_problem(ckpt: Mapping[str, Any]) -> str | None:
    """What is wrong with the values evaluation, prediction and a resume build from (types, ranges, agreement,
    the memory the model would take), or None. The settings go through the configuration's own rules
    (`validate_settings`), so a checkpoint cannot hold what a config file could not; the label map through the
    cache format's own check; everything before a model is built."""
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        return f"lacks {', '.join(missing)}"
    for section, keys in CONTENTS.items():
        values = ckpt[section]
        if not isinstance(values, dict):
            return f"{section} is {type(values).__name__}, not a dict"
        for key, types in keys.items():
            if key not in values:
                return f"{section} lacks {key!r}"
            if isinstance(values[key], bool) or not isinstance(values[key], types):
                return f"{section}[{key!r}] is {values[key]!r} ({type(values[key]).__name__})"
    mc, intensity, label_map = ckpt["model_config"], ckpt["intensity"], ckpt["label_map"]
    if not isinstance(mc.get("deep_supervision", False), bool):
        return f"model_config['deep_supervision'] is {mc['deep_supervision']!r}, not true or false"
    k = ckpt["context_slices"]
    if isinstance(k, bool) or not isinstance(k, int) or k != mc["in_channels"]:
        return f"context_slices {k!r} differs from the model's in_channels {mc['in_channels']}"
    try:
        cfg = Checkpoint(model={}, model_config=mc, context_slices=k, intensity=intensity, label_map={},
                         preprocess=ckpt["preprocess"]).settings()
    except CtsliceError as e:
        return str(e)
    clip = intensity["clip"]
    if (len(clip) != 2 or not all(isinstance(v, _NUMBER) and not isinstance(v, bool) and math.isfinite(v)
                                  for v in clip)
            or not clip[1] > clip[0] or not (math.isfinite(intensity["scale"]) and intensity["scale"] > 0)
            or not math.isfinite(intensity["shift"])):
        return f"intensity needs finite clip [low, high] with high > low and scale > 0, got {intensity}"
    problem = label_map_problem(label_map) or (None if len(label_map) >= 2 else "it has no structures")
    if problem or not all(v.strip() for v in label_map.values()):
        return ("label_map must map '0' (background), '1', ... '<n-1>' without gaps to non-empty names, got keys "
                f"{sorted(label_map, key=str)[:5] if isinstance(label_map, dict) else label_map!r}")
    if mc["num_classes"] != len(label_map):
        return f"{mc['num_classes']} model outputs but {len(label_map)} labels in its label map"
    if ckpt.get("label_values") is not None and parse_label_values(ckpt["label_values"], label_map) is None:
        return "label_values do not give each label index a distinct value (0 for background)"
    if cfg.model.size_problem(cfg.preprocess.size):
        return cfg.model.size_problem(cfg.preprocess.size)
    try:
        cfg.model.check_memory(mc["in_channels"], mc["num_classes"], cfg.preprocess.size)
    except CtsliceError as e:
        return str(e)
    expected = cfg.model.parameter_count(mc["in_channels"], mc["num_classes"])
    model = ckpt["model"]
    held = sum(t.numel() for t in model.values() if isinstance(t, torch.Tensor)) if isinstance(model, dict) else -1
    if held != expected:
        return (f"its weights hold {held:,} values but the model it describes (width {mc['base_width']}, depth "
                f"{mc['depth']}) has {expected:,}")
    return None
