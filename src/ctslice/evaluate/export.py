"""Predictions written so that the usual viewers open them on top of the original CT, with names and colours:

    write_prediction(labels, out / "s0001.nii.gz", header_of_ct, label_map)
    -> s0001.nii.gz             uint8 multi-label volume on the CT's grid, with the CT's header (qform/sform codes,
                                units, pixdim), so viewers place it exactly over the CT
       s0001.labels.json        the label map {"0": "background", "1": "spleen", ...}
       s0001.ctbl               3D Slicer colour table (index name R G B A)
       s0001.itksnap.txt        ITK-SNAP label description file (Segmentation > Import Label Descriptions)
    write_split_masks(labels, out / "s0001", header, label_map)
    -> s0001/segmentations/<name>.nii.gz, one binary mask per structure: TotalSegmentator's layout

A name ending in .nrrd or .mha writes that format instead (SimpleITK, LPS geometry equal to the CT's affine):
`predict` answers a NRRD or MetaImage CT in its own kind. DICOM SEG for a DICOM series: `dicom_seg`.

Colours come from `ctslice.colors`, the same as every figure. Each file is written under a temporary name and
renamed, so a crash never leaves a half-written file under the final name, and a failed write removes its
temporary file.

With `values` (index -> the dataset's own label value: an nnU-Net/MSD dataset's `dataset.json` values, recorded by
preprocessing in the manifest's `dataset["label_values"]`), voxels and sidecars carry those values instead of the
label-map indices, so a prediction reads like the dataset's own label files (spleen = 5, not 3).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ..colors import label_color
from ..cache.names import check_name
from ..errors import CtsliceError
from ..files import write_atomic
from .outputs import output_format, sidecars


def label_header(fields: Mapping[str, Any] | None, affine: np.ndarray, dtype=np.uint8) -> nib.Nifti1Header:
    """An unscaled integer (uint8 by default) NIfTI header carrying `fields` (from
    `imaging.volume.header_fields`); without them, `affine` as sform and qform with code 1 (scanner)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
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
    dtype = np.uint8 if labels.dtype.itemsize == 1 else np.uint16  # uint16 only for dataset label values > 255
    header = label_header(fields, affine, dtype)
    img = nib.Nifti1Image(labels.astype(dtype, copy=False), None, header=header)
    img.header.set_data_shape(labels.shape)
    return img


def check_label_names(label_map: Mapping[int, str], split_masks: bool) -> tuple[str, ...]:
    """Structure names come from a checkpoint or manifest, i.e. from files: each is written into the sidecars as
    one line of text (no control characters such as NUL or a newline, which would forge lines), and with
    --split-masks becomes a file name (`check_name`). Checked before any inference; returns the structures'."""
    names = tuple(name for index, name in sorted(label_map.items()) if index)
    for name in label_map.values():
        if not isinstance(name, str) or not name.isprintable():
            raise CtsliceError(f"structure name {name!r} holds control characters (NUL, newline, ...); refused")
    return tuple(check_name(name, "structure name") for name in names) if split_masks else names


def save_atomic(img: nib.Nifti1Image, path: Path) -> None:
    """Durable (a prediction is work): see files.write_atomic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"  # nibabel picks the format by the suffix
    write_atomic(path, lambda tmp: nib.save(img, tmp), durable=True, suffix=suffix)


def save_volume(labels: np.ndarray, path: Path, affine: np.ndarray, fields: Mapping[str, Any] | None) -> None:
    """A label volume in the format its name says: NIfTI with the CT's header fields, or .nrrd / .mha."""
    if output_format(path.name) in ("nrrd", "mha"):
        from ..imaging.itk_image import label_itk_image

        def write(tmp: Path) -> None:
            import SimpleITK as sitk

            sitk.WriteImage(label_itk_image(labels, affine), str(tmp), useCompression=True)

        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, write, durable=True, suffix=Path(path.name.lower()).suffix)
    else:
        save_atomic(label_image(labels, affine, fields), path)


def with_values(labels: np.ndarray, label_map: Mapping[int, str], values: Mapping[int, int] | None
                ) -> tuple[np.ndarray, dict[int, str]]:
    """(volume, {value: name}) with the dataset's label values in place of indices; unchanged without `values`."""
    if not values:
        return labels, dict(label_map)
    lut = np.zeros(max(label_map) + 1, np.uint8 if max(values.values()) < 256 else np.uint16)
    for index, value in values.items():
        lut[index] = value
    return lut[labels], {int(values[i]): name for i, name in label_map.items()}


def slicer_color_table(label_map: Mapping[int, str], colours: Mapping[int, int] | None = None) -> str:
    """3D Slicer .ctbl: '# Color table file', then 'value name R G B A' per label (background transparent).
    `colours`: value -> the label-map index whose colour it gets (default: the value itself)."""
    lines = ["# Color table file written by ctslice", f"# {len(label_map)} values"]
    for index, name in sorted(label_map.items()):
        r, g, b = label_color(colours[index] if colours else index)  # coloured by index, as every figure
        lines.append(f"{index} {name.replace(' ', '_')} {r} {g} {b} {0 if index == 0 else 255}")
    return "\n".join(lines) + "\n"


def itksnap_label_description(label_map: Mapping[int, str], colours: Mapping[int, int] | None = None) -> str:
    """ITK-SNAP label description file: IDX R G B A(0..1) VIS MSH "LABEL" per label; `colours` as above."""
    lines = ["################################################", "# ITK-SnAP Label Description File",
             "# File format:", "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL", "# written by ctslice",
             "################################################"]
    for index, name in sorted(label_map.items()):
        r, g, b = label_color(colours[index] if colours else index)  # coloured by index, as every figure
        visible = 0 if index == 0 else 1
        lines.append(f"{index:5d} {r:5d}{g:5d}{b:5d}{visible:9d}{visible:3d}{visible:3d}    \"{name}\"")
    return "\n".join(lines) + "\n"


def write_prediction(labels: np.ndarray, path: Path, affine: np.ndarray, fields: Mapping[str, Any] | None,
                     label_map: Mapping[int, str], values: Mapping[int, int] | None = None) -> list[Path]:
    """The label volume (NIfTI, or .nrrd / .mha by its name) and its three sidecars (label map JSON, Slicer .ctbl,
    ITK-SNAP .txt); returns the paths.
    `values`: index -> the dataset's label value, written instead of the index (voxels and sidecars agree)."""
    path = Path(path)
    volume, by_value = with_values(labels, label_map, values)
    colours = {value: index for index, value in (values or {i: i for i in label_map}).items()}
    save_volume(volume, path, affine, fields)
    files = sidecars(path)
    texts = {
        files["json"]: json.dumps({str(k): v for k, v in sorted(by_value.items())}, indent=1) + "\n",
        files["ctbl"]: slicer_color_table(by_value, colours),
        files["itksnap"]: itksnap_label_description(by_value, colours),
    }
    for sidecar, text in texts.items():
        write_atomic(sidecar, text, durable=True)
    return [path, *texts]


def write_split_masks(labels: np.ndarray, folder: Path, affine: np.ndarray, fields: Mapping[str, Any] | None,
                      label_map: Mapping[int, str], written=lambda path: None) -> Path:
    """One binary uint8 mask per structure in `folder/segmentations/<name>.nii.gz` (TotalSegmentator layout);
    `written(path)` after each file."""
    seg = Path(folder) / "segmentations"
    for index, name in sorted(label_map.items()):
        if index > 0:
            target = seg / f"{check_name(name, 'structure name')}.nii.gz"
            save_atomic(label_image((labels == index).astype(np.uint8), affine, fields), target)
            written(target)
    return seg
