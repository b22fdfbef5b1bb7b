"""`run_predict`: label volumes for CTs that are in no cache, on each CT's own grid, with its header.

    outcomes = run_predict("runs/x/checkpoint_best.pth", Path("ct.nii.gz"), None, EvaluateConfig())
    outcomes = run_predict(ckpt, Path("cts/"), Path("cts_seg/"), cfg)    # one output per CT; failures reported

The CT is transformed exactly as preprocessing transformed the training data, by the same functions with the
settings stored in the checkpoint (`preprocess`: spacing, size, HU clip; the orientation is the cache's fixed
one): reorientation, in-plane resampling, pad/crop and clip. The class probabilities then go back to the CT's
grid (`original_space`), and the output carries the CT's affine and header.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..config import EvaluateConfig
from ..errors import CtsliceError
from ..preprocess import volume
from ..preprocess.geometry import image_to_cache, plan_geometry
from ..preprocess.labels import label_map_from_json
from .checkpoint import load_model, resolve_device
from .export import NIFTI_SUFFIXES, stem, write_prediction, write_split_masks
from .inference import VolumeSlices, predict_volumes
from .original_space import PlaneMapper, to_original


@dataclass
class PredictOutcome:
    input: Path
    output: Path | None = None
    error: str | None = None
    files: list[Path] = field(default_factory=list)


def predict_volume(model: torch.nn.Module, ckpt: dict, path: Path, device: torch.device, batch_size: int):
    """(uint8 labels on the CT's grid, the CT image) for one NIfTI file; InputError naming the file if unusable."""
    s = ckpt["preprocess"]
    img = volume.load_header(path, str(path), None)  # errors read "<path>: <reason>"
    geometry = plan_geometry(img.shape, img.affine, s["spacing"], s["size"])
    cached = image_to_cache(volume.read_ct(img, str(path), None, s["hu_min"], s["hu_max"]), geometry,
                            fill=s["hu_min"])
    mapper = PlaneMapper(geometry, device)
    batches = DataLoader(VolumeSlices(cached, int(ckpt["context_slices"])), batch_size=batch_size)
    [(_, (planes,))] = predict_volumes(model, batches, {0: len(cached)}, ckpt["intensity"], device,
                                       lambda _, logits: (mapper(logits.softmax(1)),))
    return to_original(planes, geometry), img


def inputs_of(source: Path, out: Path | None) -> list[tuple[Path, Path]]:
    """(input file, output file) pairs: a file, or every .nii/.nii.gz file of a folder."""
    if source.is_file():
        if out is None:
            return [(source, source.with_name(f"{stem(source)}_seg.nii.gz"))]
        target = out if out.name.endswith(NIFTI_SUFFIXES) else out / f"{stem(source)}.nii.gz"
        return [(source, target)]
    if not source.is_dir():
        raise CtsliceError(f"{source}: no such file or folder")
    out = out if out is not None else source.with_name(f"{source.name}_seg")
    files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.name.endswith(NIFTI_SUFFIXES))
    if not files:
        raise CtsliceError(f"{source}: no .nii or .nii.gz files in this folder")
    return [(f, out / f"{stem(f)}.nii.gz") for f in files]


def run_predict(checkpoint: Path | str, source: Path, out: Path | None, cfg: EvaluateConfig, *,
                split_masks: bool = False, progress: Callable[[int, int, PredictOutcome], None] | None = None
                ) -> list[PredictOutcome]:
    """Predict every input; a file that fails (not NIfTI, not 3D, unreadable) is reported and the others go on."""
    cfg.validate()
    device = resolve_device(cfg.device)
    model, ckpt = load_model(checkpoint, device)
    labels = label_map_from_json(ckpt["label_map"])
    pairs = inputs_of(Path(source), None if out is None else Path(out))
    outcomes = []
    for done, (path, target) in enumerate(pairs, start=1):
        outcome = PredictOutcome(path)
        try:
            pred, img = predict_volume(model, ckpt, path, device, cfg.batch_size)
            fields = volume.header_fields(img.header)
            outcome.files = write_prediction(pred, target, img.affine, fields, labels)
            if split_masks:
                outcome.files.append(write_split_masks(pred, target.parent / stem(target), img.affine, fields,
                                                       labels))
            outcome.output = target
        except CtsliceError as e:
            outcome.error = str(e)
        outcomes.append(outcome)
        if progress:
            progress(done, len(pairs), outcome)
    return outcomes
