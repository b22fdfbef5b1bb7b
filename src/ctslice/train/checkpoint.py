"""Checkpoints: plain dicts of tensors and Python values, written atomically, loaded with weights_only=True. This
module is the checkpoint contract: its file names, its format, its checksum and the checks of its contents.

    save_checkpoint(run / LAST, state)                 # adds format, version and checksum; temp name + rename
    ckpt = load_checkpoint(run / BEST)                 # CtsliceError naming the file if unreadable or altered
    problem = check_contents(ckpt)                     # what evaluation/prediction could not use, or None

Format (`FORMAT`, `FORMAT_VERSION`): model (bare state_dict), model_config, context_slices, intensity, label_map,
label_values (the dataset's own value of each label index), preprocess (the cache's settings), cache, cache_hash,
config, run_id, epoch (epochs completed), metrics, and the training state: optimizer, schedule, rng, state. No
numpy or custom classes, so `torch.load(weights_only=True)` reads it (RNG states become tensors and lists).

`checksum` (version 2) is a SHA-256 over every tensor's bytes and every other value: a flipped bit anywhere that
torch still loads changes a weight or a setting silently, so it is refused on load instead. Version 1 checkpoints
(before the checksum) are still read, with a warning on stderr that nothing could be verified.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

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


def bare_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights without the "module." (DDP) or "_orig_mod." (torch.compile) prefixes, so any trainer
    and the evaluator load them into a plain UNet."""
    inner = model
    while hasattr(inner, "module") or hasattr(inner, "_orig_mod"):
        inner = getattr(inner, "module", None) or inner._orig_mod
    return {k: v.detach().cpu() for k, v in inner.state_dict().items()}


def checksum(ckpt: dict[str, Any]) -> str:
    """SHA-256 of everything in the checkpoint except its `checksum`: tensors by dtype, shape and bytes, other
    values by type and repr, dict entries in a fixed order (so it does not depend on insertion order)."""
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


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary name in the same folder, fsync, rename: never a half-written checkpoint. A write
    that fails (full disk, no permission) is a CtsliceError naming the file; the previous one stays."""
    path = Path(path)
    ckpt = {**state, "format": FORMAT, "format_version": FORMAT_VERSION}
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


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by `save_checkpoint`, or a CtsliceError naming the file and what is wrong."""
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


REQUIRED = ("model", "model_config", "context_slices", "intensity", "label_map", "preprocess")
_INT, _NUMBER = (int,), (int, float)
CONTENTS = {  # section -> key -> accepted types (None allowed where listed)
    "model_config": {"base_width": _INT, "depth": _INT, "in_channels": _INT, "num_classes": _INT},
    "intensity": {"clip": (list, tuple), "shift": _NUMBER, "scale": _NUMBER},
    "preprocess": {"spacing": (*_NUMBER, type(None)), "size": _INT, "hu_min": _NUMBER, "hu_max": _NUMBER},
}


def check_contents(ckpt: dict[str, Any]) -> str | None:
    """What is wrong with the values evaluation, prediction and a resume build from (types, ranges, agreement,
    the memory the model would take), or None. The settings go through the configuration's own rules
    (`load_config`), so a checkpoint cannot hold what a config file could not; everything is checked before a
    model is built."""
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
    k = ckpt["context_slices"]
    if isinstance(k, bool) or not isinstance(k, int) or k != mc["in_channels"]:
        return f"context_slices {k!r} differs from the model's in_channels {mc['in_channels']}"
    try:
        cfg = checkpoint_config(ckpt)
    except CtsliceError as e:
        return str(e)
    clip = intensity["clip"]
    if (len(clip) != 2 or not all(isinstance(v, _NUMBER) and not isinstance(v, bool) and math.isfinite(v)
                                  for v in clip)
            or not clip[1] > clip[0] or not (math.isfinite(intensity["scale"]) and intensity["scale"] > 0)
            or not math.isfinite(intensity["shift"])):
        return f"intensity needs finite clip [low, high] with high > low and scale > 0, got {intensity}"
    if (not isinstance(label_map, dict) or set(label_map) != {str(i) for i in range(len(label_map))}
            or not all(isinstance(v, str) and v.strip() for v in label_map.values()) or len(label_map) < 2):
        return ("label_map must map '0' (background), '1', ... '<n-1>' without gaps to non-empty names, got keys "
                f"{sorted(label_map, key=str)[:5] if isinstance(label_map, dict) else label_map!r}")
    if mc["num_classes"] != len(label_map):
        return f"{mc['num_classes']} model outputs but {len(label_map)} labels in its label map"
    if ckpt.get("label_values") is not None and label_values_of(ckpt) is None:
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


def checkpoint_config(ckpt: dict[str, Any]):
    """The configuration the checkpoint's settings describe, through the same resolution and rules as a config
    file (`load_config`): its preprocessing settings as a cache's, its model and context slices as a run's."""
    from ..config import load_config

    mc = ckpt["model_config"]
    return load_config(None, cache_settings={k: v for k, v in ckpt["preprocess"].items() if k != "hash"},
                       run_settings={"model": {"base_width": mc["base_width"], "depth": mc["depth"]},
                                     "loader": {"context_slices": ckpt["context_slices"]}})


def label_values_of(ckpt: dict[str, Any]) -> dict[int, int] | None:
    """Index -> the dataset's own label value (nnU-Net/MSD datasets, whose values preprocessing renumbers), as the
    checkpoint carries it (and nothing else: predict must write the same on a machine without the cache); None:
    the checkpoint has none, write indices."""
    return parse_label_values(ckpt.get("label_values"), ckpt.get("label_map"))


def parse_label_values(values: Any, label_map: Any) -> dict[int, int] | None:
    """{"0": 0, "1": 1, "2": 3} (JSON) -> {0: 0, 1: 1, 2: 3} when it covers the label map with distinct
    non-negative integers and 0 for background (values read from a file are checked); None otherwise."""
    if not isinstance(values, dict) or not isinstance(label_map, dict) or set(values) != set(label_map):
        return None
    try:
        parsed = {int(k): v for k, v in values.items()}
    except (TypeError, ValueError):
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**16 for v in parsed.values()) \
            or len(set(parsed.values())) != len(parsed) or parsed.get(0) != 0:
        return None
    return parsed


def prune_epoch_checkpoints(run: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` latest checkpoint_epoch{N}.pth in `run` (only files of exactly that name directly
    in the folder, never anything else); returns what was deleted."""
    found = sorted((int(m.group(1)), p) for p in Path(run).iterdir()
                   if (m := EPOCH_NAME.match(p.name)) and p.is_file() and not p.is_symlink())
    doomed = [p for _, p in found[:max(len(found) - keep, 0)]]
    for p in doomed:
        p.unlink()
    return doomed


def remove_stale_temporaries(run: Path) -> list[Path]:
    """Delete the half-written temporaries a killed save_checkpoint left directly in `run` (files of exactly that
    name whose writer process is gone); returns what was deleted."""
    doomed = [p for p in Path(run).iterdir() if (m := TEMPORARY_NAME.match(p.name)) and p.is_file()
              and not p.is_symlink() and not _alive(int(m.group(1)))]
    for p in doomed:
        p.unlink()
    return doomed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def rng_state() -> dict[str, Any]:
    """Every RNG the trainer draws from, as tensors and plain lists (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
