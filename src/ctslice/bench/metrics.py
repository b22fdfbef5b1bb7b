"""How fast evaluation scores a subject, against the reference library: `score_subject` (counts, Dice, IoU,
volumes and the surfel-based surface Dice of every structure) and its surface Dice alone, next to MONAI's
`compute_surface_dice(..., use_subvoxels=True)` on the same arrays when MONAI is importable (it is not a
dependency of ctslice; without it, ours alone, with a note).

The subject: a demo subject (ctslice.synthetic) at CT-like size, or a label NIfTI (`labels`), against itself
moved one voxel along the first axis with structure 1 grown by a voxel, so that every structure has a surface
to score and some of it is off.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import CtsliceError
from ..evaluate.metrics import score_subject, surface_dice
from ..synthetic import DemoSpec, synthetic_subject


@dataclass(frozen=True)
class MetricsResult:
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    structures: int
    """Structures present in reference or prediction (each one surface Dice)."""
    ours_score_s: float
    """score_subject: every metric of every structure."""
    ours_nsd_s: float
    """surface_dice alone, per structure on the full volume (as MONAI is called)."""
    monai_nsd_s: float | None
    monai_version: str | None
    largest_difference: float | None
    """max |ours - MONAI| over the structures (MONAI computes in float32)."""

    @property
    def ratio(self) -> float | None:
        return None if self.monai_nsd_s is None else self.monai_nsd_s / self.ours_nsd_s


def subject_pair(labels: Path | None, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple]:
    """(prediction, reference, spacing) of the benchmark subject."""
    if labels is not None:
        import nibabel as nib

        try:
            image = nib.load(labels)
            ref = np.asarray(image.dataobj).astype(np.uint8)
        except Exception as e:  # missing, not NIfTI, truncated: one line naming the file
            raise CtsliceError(f"{labels}: cannot read a label volume ({type(e).__name__}: {e})") from None
        if ref.ndim != 3:
            raise CtsliceError(f"{labels}: a label volume must be 3D, got shape {ref.shape}")
        spacing = tuple(float(v) for v in image.header.get_zooms()[:3])
    else:
        spec = DemoSpec(subjects=1, size=size, slices=(96, 96), spacing_mm=(1.2, 1.5), slice_thickness_mm=(2.0, 3.0),
                        missing_mask_fraction=0.0, seed=seed)
        _, masks, affine = synthetic_subject(spec, 0)
        ref = np.zeros(next(iter(masks.values())).shape, np.uint8)
        for index, name in enumerate(spec.structures, start=1):
            ref[masks[name] > 0] = index  # later index wins, as preprocessing merges
        spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    pred = np.zeros_like(ref)
    pred[1:] = ref[:-1]
    pred[ndimage.binary_dilation(pred == 1) & (pred == 0)] = 1
    return pred, ref, spacing


def _monai_nsd(pred, ref, spacing, classes, tolerance):
    import monai
    import torch
    from monai.metrics import compute_surface_dice

    n = int(max(pred.max(), ref.max())) + 1

    def onehot(v):  # [1, C, ...] bool: a quarter of the memory of int64 at 512x512 (MONAI takes bool masks as such)
        hot = torch.nn.functional.one_hot(torch.from_numpy(v.astype(np.int64)), n)
        return hot.permute(3, 0, 1, 2)[None].bool()

    a, b = onehot(pred), onehot(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        nsd = compute_surface_dice(a, b, class_thresholds=[tolerance] * n, include_background=True,
                                   spacing=list(spacing), use_subvoxels=True)
        seconds = time.perf_counter() - start
    return seconds, {c: float(nsd[0, c]) for c in classes}, monai.__version__


def bench_metrics(labels: Path | None = None, size: int = 256, tolerance_mm: float = 2.0) -> MetricsResult:
    pred, ref, spacing = subject_pair(labels, size)
    num_classes = int(max(pred.max(), ref.max())) + 1
    start = time.perf_counter()
    score_subject(pred, ref, spacing, num_classes, tolerance_mm)
    ours_score = time.perf_counter() - start
    classes = [c for c in range(1, num_classes) if (pred == c).any() or (ref == c).any()]
    start = time.perf_counter()
    ours = {c: surface_dice(pred == c, ref == c, spacing, tolerance_mm) for c in classes}
    ours_nsd = time.perf_counter() - start
    try:
        monai_s, theirs, version = _monai_nsd(pred, ref, spacing, classes, tolerance_mm)
    except ImportError:
        monai_s, theirs, version = None, None, None
    diff = None if theirs is None else max(abs(ours[c] - theirs[c]) for c in classes)
    return MetricsResult(tuple(ref.shape), spacing, len(classes), ours_score, ours_nsd, monai_s, version, diff)
