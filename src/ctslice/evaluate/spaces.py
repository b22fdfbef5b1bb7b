"""The two spaces a subject's prediction is scored in, each a small scoring path with the same three answers:
whether a subject can be scored, the (prediction, reference, voxel spacing) that are scored, and which arrays
`--save-predictions` must add so that every score can be recomputed (`saved.py`).

    CacheSpace()               the cache's grid, against the cached reference (the default)
    OriginalSpace(reference)   each subject's original grid, against its original masks (`--original-space`)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..cache.manifest import SubjectRecord
from .original_space import OriginalReference


@dataclass(frozen=True)
class Predicted:
    """One subject after inference: its predictions and the cached reference."""

    subject: str
    record: SubjectRecord
    cached: np.ndarray
    """Prediction in the cache's space, label-map indices (slices, rows, columns)."""
    cached_reference: np.ndarray
    original: np.ndarray | None
    """Prediction on the subject's original grid (None when neither scoring nor saving needs it)."""


Scored = tuple[np.ndarray, np.ndarray, tuple[float, ...]]
"""(prediction, reference, voxel spacing in mm) of one subject, as `score_subject` takes them."""


class Space(Protocol):
    name: str
    """'cache' or 'original' (evaluation.json's `settings.space`)."""
    needs_original: bool
    """Whether scoring needs the prediction on the original grid."""

    def skip_reason(self, subject: str) -> str | None: ...

    def scored(self, p: Predicted) -> Scored: ...

    def scored_files(self, p: Predicted) -> tuple[np.ndarray, np.ndarray] | None: ...


class CacheSpace:
    name = "cache"
    needs_original = False

    def skip_reason(self, subject: str) -> str | None:
        return None  # every cached subject has its reference in the cache

    def scored(self, p: Predicted) -> Scored:
        return p.cached, p.cached_reference, tuple(p.record.spacing)

    def scored_files(self, p: Predicted) -> tuple[np.ndarray, np.ndarray] | None:
        """The scored arrays are not the saved original-grid prediction: save them too."""
        return p.cached, p.cached_reference


@dataclass(frozen=True)
class OriginalSpace:
    reference: OriginalReference
    name = "original"
    needs_original = True

    def skip_reason(self, subject: str) -> str | None:
        return self.reference.skip_reason(subject)

    def scored(self, p: Predicted) -> Scored:
        ref, ct_img = self.reference.labels(p.subject)
        spacing = tuple(float(v) for v in np.linalg.norm(ct_img.affine[:3, :3], axis=0))
        return p.original, ref, spacing

    def scored_files(self, p: Predicted) -> None:
        """The saved original-grid prediction is what was scored: nothing more to save."""
        return None
