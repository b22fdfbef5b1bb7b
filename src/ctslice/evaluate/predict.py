"""`run_predict`: label volumes for CTs that are in no cache, on each CT's own grid, with its header.

    outcomes = run_predict("runs/x/checkpoint_best.pth", Path("ct.nii.gz"), None, EvaluateConfig())  # ct_seg.nii.gz
    outcomes = run_predict(ckpt, Path("cts/"), None, cfg)  # cts/predictions/<name>_seg.nii.gz; failures reported

The CT is transformed exactly as preprocessing transformed the training data, by the same functions with the
settings stored in the checkpoint (`preprocess`: spacing, size, HU clip; the orientation is the cache's fixed
one): reorientation, in-plane resampling, pad/crop and clip. The class probabilities then go back to the CT's
grid (`original_space`), and the output carries the CT's affine and header. Parts of the CT outside the model's
input (the checkpoint's slice size at its spacing) are labelled background, and the outcome's warnings say how much.
Output paths are planned and checked before the model runs (`outputs.plan_outputs`): no input is ever overwritten,
nothing is written into a dataset, and no file predict did not write is replaced (`ownership`).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import EvaluateConfig, LoaderConfig
from ..errors import CtsliceError
from ..imaging import memory, volume
from ..imaging.geometry import Geometry, image_to_cache, in_plane_cache_coordinates, plan_geometry
from ..model.checkpoint import Checkpoint
from ..model.device import resolve_device
from ..model.predictor import load_predictor
from ..model.tta import parse_tta
from .export import check_label_names, write_prediction, write_split_masks
from .inference import VolumeSlices, predict_volumes
from .original_space import PlaneMapper, to_original
from .outputs import plan_outputs, sidecars, split_folder, split_masks_problem
from .ownership import Ledger, ledger_of, name_problem, replace_problem


@dataclass
class PredictOutcome:
    input: Path
    output: Path | None = None
    error: str | None = None
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def predict_volume(model: torch.nn.Module, ckpt: Checkpoint, path: Path, device: torch.device, batch_size: int,
                   warn: Callable[[str], None] = lambda _: None):
    """(uint8 labels on the CT's grid, the CT image) for one NIfTI file; InputError naming the file if unusable.
    `warn` gets a line when part of the CT lies outside the model's input (labelled background)."""
    s = ckpt.preprocess
    img = volume.load_header(path, str(path), None)  # errors read "<path>: <reason>"
    geometry = plan_geometry(img.shape, img.affine, s["spacing"], s["size"])
    memory.check_resampling_fits(geometry, img.header.get_zooms()[:3], str(path), None)
    cropped = field_of_view_cropped(geometry)
    if cropped:
        warn(f"{path}: {cropped}")
    cached = image_to_cache(volume.read_ct(img, str(path), None, s["hu_min"], s["hu_max"]), geometry,
                            fill=s["hu_min"])
    mapper = PlaneMapper(geometry, device)
    batches = DataLoader(VolumeSlices(cached, ckpt.context_slices), batch_size=batch_size)
    [(_, (planes,))] = predict_volumes(model, batches, {0: len(cached)}, ckpt.intensity, device,
                                       lambda _, logits: (mapper(logits.softmax(1)),))
    return to_original(planes, geometry), img


def write_owned(target: Path, overwrite: bool, write: Callable[[], list[Path]], ledger: Ledger) -> list[Path]:
    """write() the prediction and its sidecars after checking again (just before) that each may be replaced, then
    record them in the folder's ledger as predict's own."""
    for path in (target, *sidecars(target).values()):
        problem = name_problem(path) or replace_problem(path, overwrite, ledger)
        if problem:
            raise CtsliceError(problem)
    files = write()
    ledger.record(files)
    return files


def write_split_owned(labels: np.ndarray, folder: Path, affine: np.ndarray, fields, label_map: dict[int, str],
                      overwrite: bool) -> Path:
    """--split-masks: a new folder, its ledger written first (the folder is predict's), then the masks, each
    recorded once written; with --overwrite, an earlier such folder whose masks are all predict's own."""
    problem = split_masks_problem(folder, tuple(name for i, name in label_map.items() if i), overwrite)
    if problem:
        raise CtsliceError(problem)
    ledger = Ledger(folder)
    seg = folder / "segmentations"
    folder.mkdir(exist_ok=overwrite)
    ledger.record([])
    write_split_masks(labels, folder, affine, fields, label_map,
                      written=lambda path: ledger.record([path]))
    return seg


def field_of_view_cropped(geometry: Geometry) -> str | None:
    """What of the CT's in-plane field of view lies outside the cached slice (the model's input), or None."""
    rows, cols = in_plane_cache_coordinates(geometry)
    h, w = geometry.shape[1:]
    out_rows = int(np.sum((rows < -0.5) | (rows > h - 0.5)))  # pixels whose centre is beyond the edge pixels
    out_cols = int(np.sum((cols < -0.5) | (cols > w - 0.5)))
    if not (out_rows or out_cols):
        return None
    spacing_row, spacing_col = (geometry.spacing[a] / float(np.linalg.norm(np.asarray(geometry.cache_to_original)
                                                                             [:3, a])) for a in (1, 2))
    outside = 1 - (len(rows) - out_rows) * (len(cols) - out_cols) / (len(rows) * len(cols))
    lost = " and ".join(f"{n} {what}(s) ({n * mm:g} mm)" for n, what, mm in
                        ((out_rows, "row", spacing_row), (out_cols, "column", spacing_col)) if n)
    return (f"field of view cropped: the model sees {h} x {w} px at {geometry.spacing[1]:g} mm "
            f"({h * geometry.spacing[1]:g} x {w * geometry.spacing[2]:g} mm), the CT's slices are "
            f"{len(rows) * spacing_row:g} x {len(cols) * spacing_col:g} mm; {lost} outside, left as background "
            f"({outside:.1%} of the voxels)")


def run_predict(checkpoint: Path | str | Sequence[Path | str], source: Path, out: Path | None, cfg: EvaluateConfig,
                loader: LoaderConfig = LoaderConfig(), *,
                split_masks: bool = False, overwrite: bool = False,
                progress: Callable[[int, int, PredictOutcome], None] | None = None) -> list[PredictOutcome]:
    """Predict every input; a file that fails (not NIfTI, not 3D, unreadable) is reported and the others go on.
    `overwrite`: replace earlier outputs of predict itself (never other files: `ownership`); of `loader`, only
    the batch size applies (the CT is in memory). Several checkpoints: their ensemble (`model/ensemble.py`), with the
    first one's settings; [evaluate] tta: test-time augmentation (`model/tta.py`)."""
    cfg.validate()
    loader.validate()
    device = resolve_device(cfg.device)
    paths = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    model, (ckpt, *_) = load_predictor(paths, device, parse_tta(cfg.tta), cfg.tta_shift_px)
    labels = ckpt.labels
    names = check_label_names(labels, split_masks)  # the checkpoint's: sidecar lines, file names with split masks
    values = ckpt.dataset_label_values
    pairs = plan_outputs(Path(source), None if out is None else Path(out), overwrite=overwrite,
                         split_masks=names if split_masks else ())
    outcomes, ledgers = [], {}
    for done, (path, target, problem) in enumerate(pairs, start=1):
        outcome = PredictOutcome(path, error=problem)
        try:
            if problem is None:
                pred, img = predict_volume(model, ckpt, path, device, loader.batch_size, outcome.warnings.append)
                fields = volume.header_fields(img.header)
                outcome.files = write_owned(target, overwrite, lambda: write_prediction(
                    pred, target, img.affine, fields, labels, values), ledger_of(target.parent, ledgers))
                if split_masks:
                    outcome.files.append(write_split_owned(pred, split_folder(target), img.affine, fields, labels,
                                                           overwrite))
                outcome.output = target
        except CtsliceError as e:
            outcome.error = str(e)
        except OSError as e:  # the output could not be written (full disk, no permission): this file fails
            outcome.error = f"{path}: cannot write {e.filename or target} ({e.strerror or e})"
        except MemoryError:
            outcome.error = f"{path}: out of memory while predicting it"
        except Exception as e:  # an unforeseen problem with this file: it fails alone, the others go on
            where = traceback.extract_tb(e.__traceback__)[-1]
            outcome.error = f"{path}: unexpected {type(e).__name__}: {e} (at {where.name}:{where.lineno})"
        outcomes.append(outcome)
        if progress:
            progress(done, len(pairs), outcome)
    return outcomes
