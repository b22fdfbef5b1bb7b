"""`run_predict`: label volumes for CTs that are in no cache, on each CT's own grid, with its header.

    outcomes = run_predict("runs/x/checkpoint_best.pth", Path("ct.nii.gz"), None, EvaluateConfig())  # ct_seg.nii.gz
    outcomes = run_predict(ckpt, Path("cts/"), None, cfg)  # cts/predictions/<name>_seg.nii.gz; failures reported
    outcomes = run_predict(ckpt, Path("series/"), None, cfg, fmt="dicom-seg")  # series_seg.dcm (DICOM SEG)

Inputs may be NIfTI, NRRD, MetaImage or a DICOM series folder (`imaging.formats`); the output is in the input's
kind (NRRD for NRRD, .mha for MetaImage, NIfTI otherwise) unless `fmt` asks for nifti, nrrd, mha or dicom-seg.

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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import EvaluateConfig, LoaderConfig
from ..errors import CtsliceError
from ..imaging import formats, memory, volume
from ..imaging.geometry import Geometry, image_to_cache, in_plane_cache_coordinates, plan_geometry
from ..model.checkpoint import Checkpoint
from ..model.device import resolve_device
from ..model.predictor import load_predictor
from ..model.tta import parse_tta
from .dicom_seg import write_dicom_seg
from .export import check_label_names, write_prediction, write_split_masks
from .inference import Throughput, VolumeSlices, inference_batch_size, predict_volumes
from .original_space import PlaneMapper, to_original
from .outputs import output_format, plan_outputs, sidecars, split_folder, split_masks_problem
from .ownership import Ledger, ledger_of, name_problem, replace_problem


@dataclass
class PredictOutcome:
    input: Path
    output: Path | None = None
    error: str | None = None
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    slices: int = 0
    """Slices predicted (in the model's space) and the seconds inference took: `slices_per_s`."""
    seconds: float = 0.0

    @property
    def slices_per_s(self) -> float | None:
        return self.slices / self.seconds if self.seconds > 0 else None


@dataclass
class ReadInput:
    """A CT read and brought into the model's space (`read_input`), ready for inference."""

    cached: np.ndarray
    geometry: Geometry
    img: object
    warnings: list[str]


def read_input(ckpt: Checkpoint, path: Path, series: str | None = None) -> ReadInput:
    """Read one CT (any `formats` kind; `series`: the series UID to read from a DICOM folder holding several) and
    transform it as preprocessing did; InputError naming the file if unusable. Its warnings say when part of the
    CT lies outside the model's input (labelled background)."""
    s = ckpt.preprocess
    img = formats.load_image(path, str(path), None, series)  # errors read "<path>: <reason>"
    geometry = plan_geometry(img.shape, img.affine, s["spacing"], s["size"])
    memory.check_resampling_fits(geometry, img.header.get_zooms()[:3], str(path), None)
    cropped = field_of_view_cropped(geometry)
    cached = image_to_cache(volume.read_ct(img, str(path), None, s["hu_min"], s["hu_max"]), geometry,
                            fill=s["hu_min"])
    return ReadInput(cached, geometry, img, [f"{path}: {cropped}"] if cropped else [])


def predict_volume(model: torch.nn.Module, ckpt: Checkpoint, path: Path, device: torch.device, batch_size: int,
                   warn: Callable[[str], None] = lambda _: None, throughput: Throughput | None = None,
                   read: ReadInput | None = None):
    """(uint8 labels on the CT's grid, the CT image) for one CT (`read`: it, read already); InputError
    naming the file if unusable. `warn` gets a line when part of the CT lies outside the model's input (labelled
    background); `throughput` the slices and seconds of inference."""
    read = read if read is not None else read_input(ckpt, path)
    for warning in read.warnings:
        warn(warning)
    cached, geometry = read.cached, read.geometry
    mapper = PlaneMapper(geometry, device)
    batches = DataLoader(VolumeSlices(cached, ckpt.context_slices), batch_size=batch_size)
    [(_, (planes,))] = predict_volumes(model, batches, {0: len(cached)}, ckpt.intensity, device,
                                       lambda _, logits: (mapper(logits.softmax(1)),), throughput)
    return to_original(planes, geometry), read.img


def read_ahead(paths: list[Path | None], read: Callable[[Path], ReadInput]) -> Iterator[Future | None]:
    """A future of read(path) for each path (None for None), the next one already reading in a thread while the
    caller works on the current one: reading and resampling a CT overlaps the model's run on the previous one
    (numpy, zlib and torch release the GIL for their heavy parts). At most two CTs are in memory."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict-read") as pool:
        pending = [pool.submit(read, p) if p is not None else None for p in paths[:1]]
        for i in range(len(paths)):
            nxt = paths[i + 1] if i + 1 < len(paths) else None
            pending.append(pool.submit(read, nxt) if nxt is not None else None)
            yield pending.pop(0)


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
                split_masks: bool = False, overwrite: bool = False, fmt: str | None = None, series: str | None = None,
                progress: Callable[[int, int, PredictOutcome], None] | None = None) -> list[PredictOutcome]:
    """Predict every input; a file that fails (not a volume, not 3D, unreadable) is reported and the others go on.
    `overwrite`: replace earlier outputs of predict itself (never other files: `ownership`); of `loader`, only
    the batch size applies (the CT is in memory), lowered to what fits cfg.inference_memory_gib. The next input is
    read while the current one is predicted (`read_ahead`). `fmt`: nifti, nrrd, mha or dicom-seg (default: the
    input's kind, `outputs.resolve_format`); `series`: which series of a DICOM folder holding several. Several
    checkpoints: their ensemble (`model/ensemble.py`), with the first one's settings; [evaluate] tta: test-time
    augmentation (`model/tta.py`)."""
    cfg.validate()
    loader.validate()
    device = resolve_device(cfg.device)
    paths = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    model, (ckpt, *_) = load_predictor(paths, device, parse_tta(cfg.tta), cfg.tta_shift_px)
    labels = ckpt.labels
    names = check_label_names(labels, split_masks)  # the checkpoint's: sidecar lines, file names with split masks
    values = ckpt.dataset_label_values
    if series is not None and formats.kind(Path(source)) != "dicom":
        raise CtsliceError(f"--series {series}: {source} is not a DICOM series folder")
    pairs = plan_outputs(Path(source), None if out is None else Path(out), overwrite=overwrite,
                         split_masks=names if split_masks else (), fmt=fmt)
    size = ckpt.preprocess["size"]
    batch = min(loader.batch_size, inference_batch_size(ckpt.model_config, size, size, cfg.inference_memory_gib))
    reads = read_ahead([path if problem is None else None for path, _, problem in pairs],
                       lambda path: read_input(ckpt, path, series))
    outcomes, ledgers = [], {}
    for done, ((path, target, problem), read) in enumerate(zip(pairs, reads), start=1):
        outcome = PredictOutcome(path, error=problem)
        try:
            if problem is None:
                throughput = Throughput()
                pred, img = predict_volume(model, ckpt, path, device, batch, outcome.warnings.append, throughput,
                                           read.result())
                outcome.slices, outcome.seconds = throughput.slices, throughput.seconds
                fields = volume.header_fields(img.header)
                if output_format(target.name) == "dicom-seg":
                    write = lambda: [write_dicom_seg(pred, target, path, series, labels)]  # noqa: E731
                else:
                    write = lambda: write_prediction(pred, target, img.affine, fields, labels, values)  # noqa: E731
                outcome.files = write_owned(target, overwrite, write, ledger_of(target.parent, ledgers))
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
