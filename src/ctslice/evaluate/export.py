"""Predictions written so that the usual viewers open them on top of the original CT, with names and colours:

    write_prediction(labels, out / "s0001.nii.gz", header_of_ct, label_map)
    -> s0001.nii.gz             uint8 multi-label volume on the CT's grid, with the CT's header (qform/sform codes,
                                units, pixdim), so viewers place it exactly over the CT
       s0001.labels.json        the label map {"0": "background", "1": "spleen", ...}
       s0001.ctbl               3D Slicer colour table (index name R G B A)
       s0001.itksnap.txt        ITK-SNAP label description file (Segmentation > Import Label Descriptions)
    write_split_masks(labels, out / "s0001", header, label_map)
    -> s0001/segmentations/<name>.nii.gz, one binary mask per structure: TotalSegmentator's layout

Colours come from `ctslice.colors`, the same as every figure. Each file is written under a temporary name and
renamed, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ..colors import label_color
from ..errors import CtsliceError
from ..preprocess.sources import SAFE_ID

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def label_header(fields: Mapping[str, Any] | None, affine: np.ndarray) -> nib.Nifti1Header:
    """A uint8, unscaled NIfTI header carrying `fields` (from `preprocess.volume.header_fields`); without them, `affine` as sform
    and qform with code 1 (scanner), nibabel's default."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    if not fields:
        header.set_sform(affine, code=1)
        header.set_qform(affine, code=1)
        return header
    header["pixdim"] = fields["pixdim"]  # pixdim[0] (qfac) is set again by set_qform below
    header["xyzt_units"] = fields["xyzt_units"]
    header.set_qform(None if fields["qform"] is None else np.asarray(fields["qform"]), code=fields["qform_code"])
    header.set_sform(None if fields["sform"] is None else np.asarray(fields["sform"]), code=fields["sform_code"])
    header.set_slope_inter(1.0, 0.0)
    return header


def label_image(labels: np.ndarray, affine: np.ndarray, fields: Mapping[str, Any] | None) -> nib.Nifti1Image:
    header = label_header(fields, affine)
    img = nib.Nifti1Image(labels.astype(np.uint8, copy=False), None, header=header)
    img.header.set_data_shape(labels.shape)
    return img


def safe_name(name: str, what: str) -> str:
    """`name` if it can be a file name inside our output folder; subject ids and structure names come from a
    manifest or checkpoint, i.e. from files, so one like '../x' must not choose where we write."""
    if not SAFE_ID.match(name):
        raise CtsliceError(f"{what} {name!r} is not a safe file name (letters, digits, '.', '_', '-'); not written")
    return name


def stem(path: Path) -> str:
    """File name without .nii.gz / .nii."""
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def save_atomic(img: nib.Nifti1Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"
    tmp = path.with_name(f".{stem(path)}.{os.getpid()}.tmp{suffix}")  # nibabel picks the format by suffix
    nib.save(img, tmp)
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def slicer_color_table(label_map: Mapping[int, str]) -> str:
    """3D Slicer .ctbl: '# Color table file', then 'index name R G B A' per label (background transparent)."""
    lines = ["# Color table file written by ctslice", f"# {len(label_map)} values"]
    for index, name in sorted(label_map.items()):
        r, g, b = label_color(index)
        lines.append(f"{index} {name.replace(' ', '_')} {r} {g} {b} {0 if index == 0 else 255}")
    return "\n".join(lines) + "\n"


def itksnap_label_description(label_map: Mapping[int, str]) -> str:
    """ITK-SNAP label description file: IDX R G B A(0..1) VIS MSH "LABEL" per label."""
    lines = ["################################################", "# ITK-SnAP Label Description File",
             "# File format:", "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL", "# written by ctslice",
             "################################################"]
    for index, name in sorted(label_map.items()):
        r, g, b = label_color(index)
        visible = 0 if index == 0 else 1
        lines.append(f"{index:5d} {r:5d}{g:5d}{b:5d}{visible:9d}{visible:3d}{visible:3d}    \"{name}\"")
    return "\n".join(lines) + "\n"


def write_prediction(labels: np.ndarray, path: Path, affine: np.ndarray, fields: Mapping[str, Any] | None,
                     label_map: Mapping[int, str]) -> list[Path]:
    """The label NIfTI and its three sidecars (label map JSON, Slicer .ctbl, ITK-SNAP .txt); returns the paths."""
    path = Path(path)
    save_atomic(label_image(labels, affine, fields), path)
    base = path.with_name(stem(path))
    sidecars = {
        base.with_name(base.name + ".labels.json"): json.dumps({str(k): v for k, v in sorted(label_map.items())},
                                                               indent=1) + "\n",
        base.with_name(base.name + ".ctbl"): slicer_color_table(label_map),
        base.with_name(base.name + ".itksnap.txt"): itksnap_label_description(label_map),
    }
    for sidecar, text in sidecars.items():
        write_text_atomic(sidecar, text)
    return [path, *sidecars]


def write_split_masks(labels: np.ndarray, folder: Path, affine: np.ndarray, fields: Mapping[str, Any] | None,
                      label_map: Mapping[int, str]) -> Path:
    """One binary uint8 mask per structure in `folder/segmentations/<name>.nii.gz` (TotalSegmentator layout)."""
    seg = Path(folder) / "segmentations"
    for index, name in sorted(label_map.items()):
        if index > 0:
            target = seg / f"{safe_name(name, 'structure name')}.nii.gz"
            save_atomic(label_image((labels == index).astype(np.uint8), affine, fields), target)
    return seg
