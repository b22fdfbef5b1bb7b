"""Where `predict` writes, decided and checked before any inference runs, so that a prediction never replaces an
input and two never share a path:

    pairs = plan_outputs(Path("cts/"), None)   # [(cts/a.nii.gz, cts/predictions/a_seg.nii.gz, None), ...]
    pairs = plan_outputs(Path("ct.nii.gz"), None)                  # [(ct.nii.gz, ct_seg.nii.gz, None)]

Every output is named `<name>_seg.nii.gz` (or .nrrd, .mha, .dcm: `OUTPUT_SUFFIXES`), never `ct.nii.gz`, and a
folder's outputs go into its `predictions/`
subfolder by default: `ctslice preprocess` reads `<subject>/ct.nii.gz` and `<subject>/segmentations/` only, so a
prediction can neither pass for a CT nor appear beside the dataset's subjects as a subject of its own.
Inputs are NIfTI, NRRD and MetaImage files, or one folder holding a DICOM series (`imaging.formats`); the output is
written in the input's kind (NRRD for NRRD, .mha for MetaImage, NIfTI otherwise) unless a format is asked for.
Problems with the whole run (an output folder that is a file, is the input folder or belongs to a dataset) raise
CtsliceError; one input whose output is unusable (it would replace an input, another input's output, a folder, or
a file predict did not write: `ownership`) gets its error in the third element and the others go on.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from ..errors import CtsliceError
from ..imaging import formats
from .ownership import Ledger, folder_problem, ledger_of, name_problem, replace_problem, split_folder_problem

OUTPUT_SUFFIXES = {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha", "dicom-seg": ".dcm"}
"""--format -> the suffix of the prediction file (the format of an --out file is read from its suffix)."""
_FORMAT_OF_SUFFIX = {".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "nrrd", ".mha": "mha", ".dcm": "dicom-seg"}
_DEFAULT_FORMAT = {"nrrd": "nrrd", "metaimage": "mha"}  # of the input's kind; NIfTI for NIfTI and DICOM
SEG_SUFFIX = "_seg"
DEFAULT_FOLDER = "predictions"
"""A folder's outputs by default: inside it, where preprocess (which reads <subject>/ct.nii.gz and
<subject>/segmentations/) never looks, and where predicting the folder again does not see them (not recursive)."""


def output_format(name: str) -> str | None:
    """The format an output file name asks for by its suffix (any case), or None."""
    lower = name.lower()
    return next((f for suffix, f in _FORMAT_OF_SUFFIX.items() if lower.endswith(suffix) and len(name) > len(suffix)),
                None)


def stem(path: Path) -> str:
    """File name without its volume or output suffix (.nii.gz, .nrrd, .mha, .dcm, ..., any case); a DICOM
    folder's name as it is."""
    parts = formats.split_suffix(path.name)
    if parts is not None:
        return parts[0]
    if path.name.lower().endswith(".dcm"):
        return path.name[:-4]
    return path.name if path.is_dir() else path.stem


def resolve_format(requested: str | None, out: Path | None, input_kind: str | None) -> str:
    """--format, else the --out file's suffix, else the input's own kind where that is a file format; refuses a
    --format that contradicts the --out name and DICOM SEG for input that is not a DICOM series."""
    by_name = output_format(out.name) if out is not None and not out.is_dir() else None
    if requested is not None and by_name is not None and requested != by_name:
        raise CtsliceError(f"--out {out} is a {by_name} name but --format is {requested}; make them agree")
    chosen = requested or by_name or _DEFAULT_FORMAT.get(input_kind or "", "nifti")
    if chosen == "dicom-seg" and input_kind != "dicom":
        raise CtsliceError("--format dicom-seg needs a DICOM series folder as input (a DICOM SEG references the "
                           "series it segments)")
    return chosen


def sidecars(target: Path) -> dict[str, Path]:
    """The files written beside a prediction `x.nii.gz`: label map JSON, Slicer colour table, ITK-SNAP labels."""
    base = stem(target)
    return {kind: target.with_name(f"{base}{ext}")
            for kind, ext in (("json", ".labels.json"), ("ctbl", ".ctbl"), ("itksnap", ".itksnap.txt"))}


def _seg_name(path: Path, fmt: str) -> str:
    return f"{stem(path)}{SEG_SUFFIX}{OUTPUT_SUFFIXES[fmt]}"


def output_folder(out: Path, what: str) -> Path:
    """`out` usable as an output folder (created if needed), else a one-line CtsliceError ending in `what`.
    Called before any inference, so that a bad path costs nothing."""
    if out.exists() and not out.is_dir():
        raise CtsliceError(f"{out}: exists and is not a folder; {what}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CtsliceError(f"{out}: cannot create the output folder ({e.strerror or e})") from None
    return out


def plan_outputs(source: Path, out: Path | None, *, overwrite: bool = False, split_masks: tuple[str, ...] = (),
                 fmt: str | None = None) -> list[tuple[Path, Path, str | None]]:
    """(input, output, error or None) per CT; creates the output folder. See the module docstring; what may be
    written or replaced: `ownership`. `split_masks`: the structure names whose masks --split-masks writes. `fmt`:
    the output format asked for (`OUTPUT_SUFFIXES`), None for the input's own kind."""
    kind = formats.kind(source)
    if source.is_file() or kind == "dicom":
        fmt = resolve_format(fmt, out, kind)
        if out is None:
            target = source.with_name(_seg_name(source, fmt))
        elif output_format(out.name) and not out.is_dir():
            target = out
        else:
            _check_folder(out)
            target = output_folder(out, "--out is a folder unless it ends in .nii, .nii.gz, .nrrd, .mha or .dcm") \
                / _seg_name(source, fmt)
        _check_folder(target.parent)
        output_folder(target.parent, "it cannot hold the output")
        problem = _target_problem(target, {source}, overwrite, split_masks)
        if problem:
            raise CtsliceError(f"{source}: {problem}")
        return [(source, target, None)]
    if not source.is_dir():
        raise CtsliceError(f"{source}: no such file or folder")
    files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")
                   and formats.kind(p) is not None)
    if not files:
        raise CtsliceError(f"{source}: no .nii, .nii.gz, .nrrd, .mha or .mhd files and no DICOM files in this folder")
    if out is not None and output_format(out.name) and not out.is_dir():
        raise CtsliceError(f"--out {out}: a folder of CTs gives a folder of predictions; name a folder (a name that "
                           "does not end in .nii, .nii.gz, .nrrd, .mha or .dcm)")
    out = out if out is not None else source / DEFAULT_FOLDER
    if out.resolve() == source.resolve():
        raise CtsliceError(f"--out {out} is the input folder: predictions are not written among the CTs; name "
                           "another folder")
    _check_folder(out)
    output_folder(out, "--out must be a folder for a folder of CTs")
    pairs = [(f, out / _seg_name(f, resolve_format(fmt, None, formats.kind(f)))) for f in files]
    ledgers: dict[Path, Ledger] = {}  # the output folder's ledger, read once
    inputs = set(files)
    by_target: dict[str, list[Path]] = defaultdict(list)
    for f, target in pairs:
        by_target[target.name.lower()].append(f)  # case-insensitive: on macOS or Windows A.nii and a.nii collide
    planned = []
    for f, target in pairs:
        clash = [g for g in by_target[target.name.lower()] if g != f]
        problem = (f"{target.name} would also be the output of {', '.join(g.name for g in clash)}; not predicted, "
                   "rename one of them" if clash else
                   _target_problem(target, inputs, overwrite, split_masks, ledgers))
        planned.append((f, target, problem and f"{f}: {problem}"))  # per-file failures name the file
    return planned


def _check_folder(folder: Path) -> None:
    """The whole run is refused when its output folder belongs to a dataset (`ownership.folder_problem`)."""
    problem = folder_problem(folder)
    if problem:
        raise CtsliceError(problem)


def _target_problem(target: Path, inputs: set[Path], overwrite: bool = False, split_masks: tuple[str, ...] = (),
                    ledgers: dict[Path, Ledger] | None = None) -> str | None:
    """Why `target` (or one of its sidecars, or its split-mask folder) cannot be written: it is an input of this
    run, a folder, named or placed like a dataset's file, or an existing file predict may not replace."""
    paths = (target, *sidecars(target).values())
    for path in paths:
        if path.exists() and any(_same(path, i) for i in inputs):
            return f"the output {path} is an input of this run; not overwritten"
        if path.is_dir():
            return f"the output {path} is a folder; not written"
    ledger = ledger_of(target.parent, {} if ledgers is None else ledgers)
    problem = name_problem(target) or next(filter(None, (replace_problem(p, overwrite, ledger) for p in paths)),
                                              None)
    if problem:
        return problem
    return split_masks_problem(split_folder(target), split_masks, overwrite) if split_masks else None


def split_masks_problem(folder: Path, names: tuple[str, ...], overwrite: bool) -> str | None:
    """Why --split-masks may not write `folder/segmentations/<name>.nii.gz` for these names, or None."""
    problem = split_folder_problem(folder, overwrite)
    if problem or not os.path.lexists(folder):
        return problem
    ledger = Ledger(folder)
    return next(filter(None, (replace_problem(folder / "segmentations" / f"{name}.nii.gz", overwrite, ledger)
                              for name in names)), None)


def split_folder(target: Path) -> Path:
    """Where --split-masks puts `target`'s masks: `<stem>/segmentations/` beside it."""
    return target.parent / stem(target)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False
