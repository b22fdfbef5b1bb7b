"""Everything an evaluation needs, resolved and checked once before any inference runs: the checkpoint and its
model, the cache and its manifest, the label map and the dataset's own label values, the output folder (created
now, so that a bad path fails at once), the loader and the split's subjects, and what to warn about.

    ctx = open_evaluation("runs/x/checkpoint_best.pth", EvaluateConfig(), LoaderConfig(), cache=None, split="val",
                          out=None, save_predictions=False, split_masks=False)

Several checkpoints (a list) are evaluated as one ensemble (`model/ensemble.py`), and [evaluate] tta wraps the
model in test-time augmentation (`model/tta.py`); `ckpt` is then the first checkpoint, whose settings all share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..cache.label_map import label_map_from_json, parse_label_values
from ..cache.manifest import Manifest, SubjectRecord, read_manifest
from ..cache.names import check_name
from ..cache.owner import check_output_apart
from ..config import EvaluateConfig, LoaderConfig
from ..errors import CtsliceError
from ..imaging.geometry import Geometry
from ..model.checkpoint import Checkpoint
from ..model.device import resolve_device
from ..model.predictor import load_predictor
from ..model.tta import parse_tta
from ..text import first_few
from .export import check_label_names
from .inference import LOADER_FIELDS, evaluation_loader, inference_batch_size
from .outputs import output_folder


@dataclass(frozen=True)
class EvaluationContext:
    checkpoint: Path
    ckpt: Checkpoint
    model: torch.nn.Module
    device: torch.device
    cache: Path
    manifest: Manifest
    labels: dict[int, str]
    label_values: dict[int, int] | None
    """The dataset's own value of each label-map index (nnU-Net datasets), for saved predictions; None: the index."""
    split: str
    out: Path
    loader: DataLoader
    loader_config: LoaderConfig
    counts: dict[int, int]
    """Reader subject number -> its slices, for every subject of the split (in the loader's order)."""
    geometries: dict[int, Geometry]
    overlap: list[str] | None
    """Evaluated subjects that were in the checkpoint's train split; None when it records no splits."""
    warnings: list[str]
    notes: list[str]
    checkpoints: tuple[Path, ...] = field(default=())
    """Every checkpoint of an ensemble (just `checkpoint` for one model)."""

    def subject_id(self, s: int) -> str:
        return self.loader.dataset.reader.subjects[s]

    def record(self, s: int) -> SubjectRecord:
        return self.manifest.subjects[self.subject_id(s)]

    def subject_ids(self) -> list[str]:
        return [self.subject_id(s) for s in self.counts]

    def cached_reference(self, s: int) -> np.ndarray:
        reader = self.loader.dataset.reader
        return np.stack([reader.read_label(s, z) for z in range(self.counts[s])])

    def missing_indices(self, s: int) -> list[int]:
        """Label-map indices of the structures missing from this subject's reference (unknown there: not scored)."""
        missing = set(self.record(s).missing_structures or [])
        return [i for i, name in self.labels.items() if name in missing]

    def loader_settings(self) -> dict[str, Any]:
        """The [loader] settings this evaluation read with (for evaluation.json)."""
        return {name: getattr(self.loader_config, name) for name in LOADER_FIELDS}


def open_evaluation(checkpoint: Path | str | Sequence[Path | str], cfg: EvaluateConfig, loader: LoaderConfig, *,
                    cache: Path | str | None, split: str, out: Path | str | None, save_predictions: bool,
                    split_masks: bool) -> EvaluationContext:
    """Load and check everything, in the order a user should hear about problems: the settings, the checkpoint(s),
    the cache against it, the label names (when saving), the output folder, then the split."""
    cfg.validate()
    loader.validate()
    device = resolve_device(cfg.device)
    paths = [Path(checkpoint)] if isinstance(checkpoint, (str, Path)) else [Path(p) for p in checkpoint]
    model, members = load_predictor(paths, device, parse_tta(cfg.tta), cfg.tta_shift_px)
    checkpoint, ckpt = paths[0], members[0]
    if cache is None and not ckpt.cache:
        raise CtsliceError(f"{checkpoint}: the checkpoint names no cache; give one with --cache")
    cache = Path(cache if cache is not None else ckpt.cache)
    manifest = read_manifest(cache)
    if manifest.label_map != ckpt.label_map:
        raise CtsliceError(f"{cache}: its label map differs from the one checkpoint {checkpoint} was trained with")
    labels = label_map_from_json(manifest.label_map)
    if save_predictions:  # names become sidecar lines and (split masks) file names: checked before inference
        check_label_names(labels, split_masks)
    warnings = []
    if ckpt.cache_hash and ckpt.cache_hash != manifest.data_hash:
        warnings.append(f"{cache} was built with other settings than the checkpoint's training cache (hash "
                        f"{manifest.data_hash} against {ckpt.cache_hash}): the model sees other input")
    out = Path(out) if out is not None else Path(checkpoint).parent / default_folder(split, len(paths), cfg.tta)
    check_output_apart(out, cache, manifest.dataset.get("root"), "the evaluation folder")  # as train's --out
    out = output_folder(out, "evaluation writes a folder of reports")  # now, not after all the inference
    size = manifest.settings.size  # batches of [loader] batch_size slices, fewer if they would not fit the budget
    loader = dataclasses.replace(loader, batch_size=min(loader.batch_size, inference_batch_size(
        ckpt.model_config, size, size, cfg.inference_memory_gib)))
    batches = evaluation_loader(cache, split, ckpt.context_slices, loader)
    reader = batches.dataset.reader
    wanted = set(manifest.splits.get(split, []))
    counts = {s: int(reader.shapes[s, 0]) for s, sid in enumerate(reader.subjects)
              if sid in wanted and check_name(sid, "subject id")}  # ids name output files
    if not counts:
        raise CtsliceError(f"{cache}: split {split!r} has no subjects")
    overlap, said = train_overlap(members, [reader.subjects[s] for s in counts])
    notes = [said] if said and overlap is None else []
    warnings += [said] if said and overlap else []
    values = parse_label_values(manifest.dataset.get("label_values"), manifest.label_map)
    geometries = {s: Geometry.from_json(manifest.subjects[reader.subjects[s]].geometry) for s in counts}
    return EvaluationContext(Path(checkpoint), ckpt, model, device, cache, manifest, labels, values, split, out,
                             batches, loader, counts, geometries, overlap, warnings, notes, tuple(paths))


def default_folder(split: str, members: int, tta: str) -> str:
    """eval-<split>, with -ensemble<N> and -tta when they apply: an ensemble's or a TTA evaluation (default: in the
    first checkpoint's run folder) never replaces that model's own."""
    return f"eval-{split}" + (f"-ensemble{members}" if members > 1 else "") + ("-tta" if tta != "none" else "")


def train_overlap(checkpoints: Checkpoint | Sequence[Checkpoint], evaluated: list[str]
                  ) -> tuple[list[str] | None, str | None]:
    """(evaluated subjects that were in the checkpoint's train split, or in any member's of an ensemble, a warning
    or note to print), from the training-time splits the trainer records (`ckpt.splits`; a fold's for a
    cross-validation run); (None, note) when a checkpoint has none."""
    trained: set[str] = set()
    for ckpt in [checkpoints] if isinstance(checkpoints, Checkpoint) else checkpoints:
        splits = ckpt.splits
        if not isinstance(splits, dict) or not isinstance(splits.get("train"), list):
            return None, ("the checkpoint does not record its training split (written before splits were "
                          "recorded): whether evaluated subjects were trained on cannot be checked")
        trained |= {str(s) for s in splits["train"]}
    overlap = sorted(set(evaluated) & trained)
    if not overlap:
        return [], None
    shown = first_few(overlap)
    return overlap, (f"{len(overlap)} of {len(evaluated)} evaluated subject(s) were in the model's training split "
                     f"({shown}): their scores are not a measure of generalisation")
