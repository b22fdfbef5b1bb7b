"""A prediction of a DICOM CT series as one DICOM Segmentation object (highdicom), which PACS viewers and 3D Slicer
(with its QuantitativeReporting / DCMQI extension) open on top of the series it references:

    write_dicom_seg(labels, Path("series_seg.dcm"), Path("series/"), None, label_map)

- frames reference the source slices (SOP instance UIDs) and lie on their grid: `labels` is the prediction on the
  CT's own (i, j, k) grid as `imaging.dicom_series` reads it (i = column, j = row, k = slice by position);
- one segment per structure present in the prediction, named by the label map, coloured from `ctslice.colors`
  (the same colour as every figure and the Slicer colour table), coded with the SNOMED CT concept that pydicom's
  code dictionary has for the structure (kidney_left -> Kidney: laterality stays in the label), else the generic
  "Tissue";
- BINARY segmentation, only frames where a segment is present (highdicom's omit_empty_frames).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .. import __version__
from ..colors import label_color
from ..errors import CtsliceError
from ..files import write_atomic
from ..imaging import dicom_series

_SIDES = {"left", "right"}


def property_code(name: str):
    """(category, type) codes of a structure: the anatomical structure's SNOMED CT code when pydicom's code
    dictionary has one for its name without side or number (liver, kidney_left, rib_left_3), else Tissue."""
    from pydicom.sr.codedict import codes

    words = [w for w in name.replace("-", "_").split("_") if w and w.lower() not in _SIDES and not w.isdigit()]
    for candidate in ("".join(w.capitalize() for w in words), "".join(w.capitalize() for w in words).rstrip("s")):
        code = getattr(codes.SCT, candidate, None) if candidate else None
        if code is not None:
            return codes.SCT.AnatomicalStructure, code
    return codes.SCT.Tissue, codes.SCT.Tissue


def segment_descriptions(present: list[int], label_map: Mapping[int, str]):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(name="ctslice", family=codes.DCM.ArtificialIntelligence,
                                                   version=__version__)
    out = []
    for number, index in enumerate(present, start=1):
        category, kind = property_code(label_map[index])
        out.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=label_map[index][:64], segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, display_color=hd.color.CIELabColor.from_rgb(*label_color(index))))
    return out


def source_slices(folder: Path, series_uid: str | None) -> list:
    """The series' datasets in the order of the volume's k axis (by position along the normal)."""
    import pydicom

    name = folder.name
    found = dicom_series.find_series(folder, str(folder), name)
    series, headers = dicom_series.choose_series(found, series_uid, str(folder), name)
    slices, _ = dicom_series.check_and_order(series, headers, str(folder), name)
    return [pydicom.dcmread(s.path) for s in slices]


def write_dicom_seg(labels: np.ndarray, path: Path, folder: Path, series_uid: str | None,
                    label_map: Mapping[int, str]) -> Path:
    """`labels` (label-map indices on the series' (i, j, k) grid) as a DICOM SEG at `path` (atomic)."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    sources = source_slices(folder, series_uid)
    if labels.shape[2] != len(sources):
        raise ValueError(f"prediction has {labels.shape[2]} slices, the series {len(sources)}")
    present = [int(i) for i in np.unique(labels) if i != 0 and int(i) in label_map]
    if not present:  # a SEG without segments is not valid DICOM
        raise CtsliceError(f"{folder}: no structure predicted, so no DICOM SEG written (it needs a segment)")
    lut = np.zeros(max(label_map) + 1, dtype=np.uint8 if len(present) < 256 else np.uint16)
    for number, index in enumerate(present, start=1):
        lut[index] = number
    frames = lut[labels].transpose(2, 1, 0)  # (slice, row, column): frame f is source slice f
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=np.ascontiguousarray(frames),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(present, label_map), series_instance_uid=generate_uid(),
        series_number=900, sop_instance_uid=generate_uid(), instance_number=1, manufacturer="ctslice",
        manufacturer_model_name="ctslice 2D U-Net", software_versions=__version__, device_serial_number="0",
        series_description="ctslice segmentation", omit_empty_frames=True)
    write_atomic(path, lambda tmp: seg.save_as(tmp), durable=True, suffix=".dcm")
    return path
