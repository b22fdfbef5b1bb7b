"""`run_evaluation`: a checkpoint scored on every subject of a cache split, in 3D, per structure.

    result = run_evaluation("runs/x/checkpoint_best.pth", EvaluateConfig(), split="val")
    result.summary["mean_dice"], result.out / "evaluation.json"

Three steps: everything is resolved and checked once (`context.open_evaluation`: checkpoint, cache, output folder,
split), each subject is predicted and scored in one of two spaces (`spaces.py`), then the reports are written.
By default the scores are in the cache's space against the cached reference. With `reference` (what the CLI opens
from the dataset folder the cache was built from: `ctslice.preprocess.reference.open_reference`) each prediction
goes back to the subject's original grid (`original_space`) and is scored against the original masks merged as
preprocessing merges them, as nnU-Net evaluates; subjects whose source files changed since the cache was built are
reported in `skipped`, not scored.

Subjects the model was trained on are named in a warning (and in evaluation.json's `settings.train_overlap`) when
the checkpoint records its training split (`Checkpoint.splits`); checkpoints without it get a note that this could not
be checked. The output folder is checked (and created) before any inference runs.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..cache.location import shown as cache_name
from ..cache.manifest import Manifest
from ..config import EvaluateConfig, LoaderConfig
from ..data.loader import worker_errors
from ..errors import CtsliceError
from ..stopping import stop_signals
from ..text import first_few
from .context import EvaluationContext, open_evaluation
from .inference import Throughput, argmax_labels, predict_volumes
from .metrics import score_subject
from .nnunet_summary import build_summary, case_counts, summary_keys, write_summary
from .original_space import OriginalPlanes, OriginalReference, to_original
from .report import aggregate, write_reports
from .saved import PREDICTIONS, describe, save_subject
from .spaces import CacheSpace, OriginalSpace, Predicted, Space

Progress = Callable[[int, int, str], None]
ReferenceOpener = Callable[[Manifest], OriginalReference]
"""The cache's manifest -> the original masks to score against (`open_reference(data, manifest)`, partially
applied): opened once the checkpoint has named the cache."""


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


def run_evaluation(checkpoint: Path | str | Sequence[Path | str], cfg: EvaluateConfig,
                   loader: LoaderConfig = LoaderConfig(), *,
                   cache: Path | str | None = None, split: str = "val", out: Path | str | None = None,
                   reference: ReferenceOpener | None = None, save_predictions: bool = False,
                   split_masks: bool = False, progress: Progress | None = None) -> EvaluationResult:
    """Score `checkpoint` (several: their ensemble, the first one's cache and settings) on `split` of `cache`
    (default: the checkpoint's); `loader`: the [loader] settings it reads with (batch size, lowered to what fits
    cfg.inference_memory_gib; workers, pinned memory, prefetch); `reference`: score on the original grid."""
    ctx = open_evaluation(checkpoint, cfg, loader, cache=cache, split=split, out=out,
                          save_predictions=save_predictions, split_masks=split_masks)
    space = CacheSpace() if reference is None else OriginalSpace(reference(ctx.manifest))
    skipped = {sid: why for sid in ctx.subject_ids() if (why := space.skip_reason(sid))}
    notes = ctx.notes + ([describe(isinstance(space, OriginalSpace))["note"]] if save_predictions else [])
    to_labels = OriginalPlanes(ctx.geometries) if space.needs_original or save_predictions else argmax_labels
    names, rows, worst, files, cases = [], [], [], [], []
    throughput = Throughput()
    # worker_errors: a damaged chunk read in a worker ends with its one-line CacheError, not torch's traceback
    with worker_errors(), stop_signals((signal.SIGTERM,)) as stop:
        for done, (s, volumes) in enumerate(predict_volumes(ctx.model, ctx.loader, ctx.counts, ctx.ckpt.intensity,
                                                            ctx.device, to_labels, throughput)):
            sid = ctx.subject_id(s)
            if progress:
                progress(done + 1, len(ctx.counts), sid)
            if sid in skipped:
                continue
            predicted, scores, overlay, counts = _score(ctx, cfg, space, s, volumes)
            names.append(sid)
            rows.append(scores)
            worst.append(overlay)
            cases.append((sid, str(ctx.out / PREDICTIONS / f"{sid}.nii.gz") if save_predictions else sid, counts))
            if save_predictions:
                with output_errors(ctx.out):
                    files += save_subject(ctx.out, sid, predicted.record, ctx.geometries[s], ctx.labels,
                                          ctx.label_values, predicted.original, space.scored_files(predicted),
                                          split_masks)
            if stop.requested:  # this subject is complete; the ones after it are not started
                raise EvaluationStopped(_stopped(stop.requested, names, ctx, save_predictions))
    if not rows:
        raise CtsliceError(f"no subject of split {split!r} could be scored ({len(skipped)} skipped: "
                           f"{'; '.join(f'{k}: {v}' for k, v in list(skipped.items())[:3])})")
    summary, per_class, per_subject = aggregate(names, rows, ctx.labels, cfg)
    summary["inference"] = {"slices": throughput.slices, "seconds": round(throughput.seconds, 3),
                            "slices_per_s": throughput.slices_per_s, "batch_size": ctx.loader_config.batch_size,
                            "device": str(ctx.device)}
    with output_errors(ctx.out):
        files += write_reports(ctx.out, _settings(ctx, cfg, space, save_predictions, notes), summary, per_class,
                               per_subject, skipped, worst, ctx.labels)
        files.append(write_summary(ctx.out, build_summary(cases, summary_keys(ctx.labels, ctx.label_values))))
    return EvaluationResult(ctx.out, summary, per_class, names, skipped, files, ctx.warnings, notes)


def _score(ctx: EvaluationContext, cfg: EvaluateConfig, space: Space, s: int, volumes: tuple[np.ndarray, ...]
           ) -> tuple[Predicted, dict[str, np.ndarray], dict[str, Any], np.ndarray]:
    """One subject's predictions (`volumes` from `predict_volumes`), its scores in `space`, its worst slice and
    its counts as nnU-Net counts them (`nnunet_summary.case_counts`)."""
    original = to_original(volumes[1], ctx.geometries[s]) if len(volumes) > 1 else None
    predicted = Predicted(ctx.subject_id(s), ctx.record(s), volumes[0], ctx.cached_reference(s), original)
    skip = ctx.missing_indices(s)
    pred, ref, spacing = space.scored(predicted)
    scores = score_subject(pred, ref, spacing, len(ctx.labels), cfg.surface_tolerance_mm, skip)
    return predicted, scores, _overlay_slice(ctx.loader.dataset.reader, s, predicted.cached,
                                             predicted.cached_reference, skip), case_counts(scores, pred, skip)


def _settings(ctx: EvaluationContext, cfg: EvaluateConfig, space: Space, saved: bool,
              notes: list[str]) -> dict[str, Any]:
    """evaluation.json's `settings`: what was evaluated, how, and what the user was told."""
    original = isinstance(space, OriginalSpace)
    return {
        "checkpoint": str(ctx.checkpoint.resolve()), "epoch": ctx.ckpt.epoch,
        "ensemble": [str(p.resolve()) for p in ctx.checkpoints] if len(ctx.checkpoints) > 1 else None,
        "cache": cache_name(ctx.cache.resolve()),  # a cache on object storage: its URL
        "cache_hash": ctx.manifest.data_hash, "checkpoint_cache_hash": ctx.ckpt.cache_hash,
        "split": ctx.split, "space": space.name, "data": str(space.reference.root) if original else None,
        "device": str(ctx.device), "evaluate": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "loader": ctx.loader_settings(), "warnings": ctx.warnings, "notes": notes, "train_overlap": ctx.overlap,
        "saved_predictions": {k: v for k, v in describe(original).items() if k != "note"} if saved else None,
    }


class EvaluationStopped(CtsliceError):
    """A stop signal ended the evaluation after a complete subject; the message says what was not evaluated."""


def _stopped(signal_name: str, done: list[str], ctx: EvaluationContext, saved: bool) -> str:
    left = [sid for sid in ctx.subject_ids() if sid not in done]
    shown = first_few(left)
    files = f"; the predictions of those {len(done)} are complete in {ctx.out}" if saved else ""
    return (f"stopped by {signal_name} after {len(done)} of {len(ctx.counts)} subject(s){files}; not evaluated: "
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


def _overlay_slice(reader, s: int, pred: np.ndarray, ref: np.ndarray, missing: list[int]) -> dict[str, Any]:
    """The slice with the most wrong voxels (or, if none, the most reference voxels), kept for the worst-subject
    figures: CT, reference and prediction, a few hundred kB per subject, and the structures `missing` from this
    subject's reference (unknown there: predicting them is not counted wrong)."""
    wrong = ((pred != ref) & ~((ref == 0) & np.isin(pred, missing))).reshape(len(pred), -1).sum(1)
    z = int(np.argmax(wrong)) if wrong.any() else int(np.argmax((ref > 0).reshape(len(ref), -1).sum(1)))
    return {"slice": z, "image": reader.read_image(s, [z])[0], "ref": ref[z].copy(), "pred": pred[z].copy(),
            "missing": list(missing)}
