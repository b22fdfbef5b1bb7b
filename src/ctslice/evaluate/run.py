"""`run_evaluation`: a checkpoint scored on every subject of a cache split, in 3D, per structure.

    result = run_evaluation("runs/x/checkpoint_best.pth", EvaluateConfig(), split="val")
    result.summary["mean_dice"], result.out / "evaluation.json"

By default the scores are in the cache's space against the cached reference. With `data` (the dataset folder the
cache was built from) each prediction goes back to the subject's original grid (`original_space`) and is scored
against the original masks merged as preprocessing merges them, as nnU-Net evaluates; subjects whose source files
changed since the cache was built are reported in `skipped`, not scored.

Subjects the model was trained on are named in a warning (and in evaluation.json's `settings.train_overlap`) when
the checkpoint records its training split (`Checkpoint.splits`); checkpoints without it get a note that this could not
be checked. The output folder is checked (and created) before any inference runs.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..preprocess.fingerprint import compare
from ..cache.manifest import read_manifest
from ..cache.names import check_name
from ..cache.owner import check_output_apart
from ..config import EvaluateConfig
from ..data.loader import worker_errors
from ..errors import CtsliceError
from ..cache.label_map import label_map_from_json
from ..imaging.geometry import Geometry
from ..stopping import stop_signals
from ..text import first_few
from ..preprocess.sources import discover
from ..preprocess.subject import reference_labels
from ..cache.label_map import parse_label_values
from ..model.checkpoint import Checkpoint
from ..model.device import resolve_device
from ..model.load import load_model
from .export import check_label_names
from .inference import evaluation_loader, predict_volumes
from .metrics import score_subject
from .original_space import PlaneMapper, to_original
from .outputs import output_folder
from .report import aggregate, write_reports
from .saved import describe, save_subject

Progress = Callable[[int, int, str], None]


@dataclass
class EvaluationResult:
    out: Path
    summary: dict[str, Any]
    per_class: list[dict[str, Any]]
    subjects: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_evaluation(checkpoint: Path | str, cfg: EvaluateConfig, *, cache: Path | str | None = None,
                   split: str = "val", out: Path | str | None = None, data: Path | str | None = None,
                   save_predictions: bool = False, split_masks: bool = False,
                   progress: Progress | None = None) -> EvaluationResult:
    cfg.validate()
    device = resolve_device(cfg.device)
    model, ckpt = load_model(checkpoint, device)
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
    if ckpt.cache_hash and ckpt.cache_hash != manifest.settings.hash:
        warnings.append(f"{cache} was built with other settings than the checkpoint's training cache (hash "
                        f"{manifest.settings.hash} against {ckpt.cache_hash}): the model sees other input")
    out = Path(out) if out is not None else Path(checkpoint).parent / f"eval-{split}"
    check_output_apart(out, cache, manifest.dataset.get("root"), "the evaluation folder")  # as train's --out
    out = output_folder(out, "evaluation writes a folder of reports")  # now, not after all the inference
    loader = evaluation_loader(cache, split, ckpt.context_slices, cfg.batch_size, cfg.workers)
    reader = loader.dataset.reader
    wanted = set(manifest.splits.get(split, []))
    counts = {s: int(reader.shapes[s, 0]) for s, sid in enumerate(reader.subjects)
              if sid in wanted and check_name(sid, "subject id")}  # ids name output files
    if not counts:
        raise CtsliceError(f"{cache}: split {split!r} has no subjects")
    overlap, said = train_overlap(ckpt, [reader.subjects[s] for s in counts])
    notes = [said] if said and overlap is None else []
    warnings += [said] if said and overlap else []
    values = parse_label_values(manifest.dataset.get("label_values"), manifest.label_map)

    original = data is not None
    sources, label_values, skipped = {}, None, {}
    if original:
        dataset = discover(Path(data))
        sources, label_values = {s.id: s for s in dataset.subjects}, dataset.label_values
        changes = compare(dataset, manifest, manifest.settings.hash)
        for sid in (reader.subjects[s] for s in counts):
            if sid in changes.modified or sid not in sources:
                skipped[sid] = "source files changed since the cache was built" if sid in sources else \
                    "not found in the dataset folder"
    geometries = {s: Geometry.from_json(manifest.subjects[reader.subjects[s]].geometry) for s in counts}
    mappers: dict[int, PlaneMapper] = {}

    def to_labels(s: int, logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cached = logits.argmax(1).to(torch.uint8)
        if not (original or save_predictions):
            return (cached,)
        if s not in mappers:
            mappers.clear()  # subjects come one after another: keep one subject's sampling grid
            mappers[s] = PlaneMapper(geometries[s], logits.device)
        return cached, mappers[s](logits.softmax(1))

    names, rows, worst, files = [], [], [], []
    if save_predictions:
        notes.append(describe(original)["note"])
    with worker_errors(), stop_signals((signal.SIGTERM,)) as stop:  # a damaged chunk read in a worker: its one-line CacheError, not torch's traceback
        for done, (s, volumes) in enumerate(predict_volumes(model, loader, counts, ckpt.intensity, device,
                                                            to_labels)):
            sid, record = reader.subjects[s], manifest.subjects[reader.subjects[s]]
            if progress:
                progress(done + 1, len(counts), sid)
            if sid in skipped:
                continue
            geometry = geometries[s]
            cached_pred = volumes[0]
            cached_ref = np.stack([reader.read_label(s, z) for z in range(counts[s])])
            pred_original = to_original(volumes[1], geometry) if len(volumes) > 1 else None
            if original:
                ref, ct_img = reference_labels(sources[sid], data, labels, label_values)
                pred, spacing = pred_original, tuple(float(v) for v in np.linalg.norm(ct_img.affine[:3, :3], axis=0))
            else:
                pred, ref, spacing = cached_pred, cached_ref, tuple(record.spacing)
            skip = [i for i, name in labels.items() if name in set(record.missing_structures or [])]
            scores = score_subject(pred, ref, spacing, len(labels), cfg.surface_tolerance_mm, skip)
            names.append(sid)
            rows.append(scores)
            worst.append(_overlay_slice(reader, s, cached_pred, cached_ref, skip))
            if save_predictions:
                with output_errors(out):
                    files += save_subject(out, sid, record, geometry, labels, values, pred_original,
                                          None if original else (cached_pred, cached_ref), split_masks)
            if stop.requested:  # this subject is complete; the ones after it are not started
                raise EvaluationStopped(_stopped(stop.requested, names, counts, reader, out, save_predictions))
    if not rows:
        raise CtsliceError(f"no subject of split {split!r} could be scored ({len(skipped)} skipped: "
                           f"{'; '.join(f'{k}: {v}' for k, v in list(skipped.items())[:3])})")
    summary, per_class, per_subject = aggregate(names, rows, labels, cfg)
    settings = {
        "checkpoint": str(Path(checkpoint).resolve()), "epoch": ckpt.epoch, "cache": str(cache.resolve()),
        "cache_hash": manifest.settings.hash, "checkpoint_cache_hash": ckpt.cache_hash,
        "split": split, "space": "original" if original else "cache", "data": str(data) if original else None,
        "device": str(device), "evaluate": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "warnings": warnings, "notes": notes, "train_overlap": overlap,
        "saved_predictions": {k: v for k, v in describe(original).items() if k != "note"} if save_predictions else None,
    }
    with output_errors(out):
        files += write_reports(out, settings, summary, per_class, per_subject, skipped, worst, labels)
    return EvaluationResult(out, summary, per_class, names, skipped, files, warnings, notes)


class EvaluationStopped(CtsliceError):
    """A stop signal ended the evaluation after a complete subject; the message says what was not evaluated."""


def _stopped(signal_name: str, done: list[str], counts: dict[int, int], reader, out: Path, saved: bool) -> str:
    left = [reader.subjects[s] for s in counts if reader.subjects[s] not in done]
    shown = first_few(left)
    files = f"; the predictions of those {len(done)} are complete in {out}" if saved else ""
    return (f"stopped by {signal_name} after {len(done)} of {len(counts)} subject(s){files}; not evaluated: "
            f"{shown or 'none'}; no evaluation.json was written (its scores would cover part of the split): run "
            "the command again")


@contextmanager
def output_errors(out: Path) -> Iterator[None]:
    """A write that fails (full disk, no permission) ends the evaluation with one line naming the file."""
    try:
        yield
    except OSError as e:
        raise CtsliceError(f"{e.filename or out}: cannot write ({e.strerror or e}); the evaluation output in {out} "
                           "is incomplete") from None


def train_overlap(ckpt: Checkpoint, evaluated: list[str]) -> tuple[list[str] | None, str | None]:
    """(evaluated subjects that were in the checkpoint's train split, a warning or note to print), from the
    training-time splits the trainer records (`Checkpoint.splits`); (None, note) when the checkpoint has none."""
    splits = ckpt.splits
    if not isinstance(splits, dict) or not isinstance(splits.get("train"), list):
        return None, ("the checkpoint does not record its training split (written before splits were recorded): "
                      "whether evaluated subjects were trained on cannot be checked")
    overlap = sorted(set(evaluated) & {str(s) for s in splits["train"]})
    if not overlap:
        return [], None
    shown = first_few(overlap)
    return overlap, (f"{len(overlap)} of {len(evaluated)} evaluated subject(s) were in the model's training split "
                     f"({shown}): their scores are not a measure of generalisation")


def _overlay_slice(reader, s: int, pred: np.ndarray, ref: np.ndarray, missing: list[int]) -> dict[str, Any]:
    """The slice with the most wrong voxels (or, if none, the most reference voxels), kept for the worst-subject
    figures: CT, reference and prediction, a few hundred kB per subject, and the structures `missing` from this
    subject's reference (unknown there: predicting them is not counted wrong)."""
    wrong = ((pred != ref) & ~((ref == 0) & np.isin(pred, missing))).reshape(len(pred), -1).sum(1)
    z = int(np.argmax(wrong)) if wrong.any() else int(np.argmax((ref > 0).reshape(len(ref), -1).sum(1)))
    return {"slice": z, "image": reader.read_image(s, [z])[0], "ref": ref[z].copy(), "pred": pred[z].copy(),
            "missing": list(missing)}
