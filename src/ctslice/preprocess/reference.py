"""What evaluation in the original space needs from the dataset a cache was built from: each subject's label
volume on its original grid, merged exactly as preprocessing merges it, and which subjects can no longer be scored
that way (their files changed since the cache was built, or they left the dataset).

Evaluation never imports this stage: the CLI opens the reference here and hands it over (evaluate/ sees only the
`OriginalReference` protocol in evaluate/original_space.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache.manifest import Manifest
from ..imaging import volume
from .fingerprint import compare
from .sources import SubjectSource, discover
from .subject import SubjectJob, _merge_masks, _read_label_file


@dataclass(frozen=True)
class DatasetReference:
    root: Path
    sources: dict[str, SubjectSource]
    label_map: dict[int, str]
    label_values: dict[int, int] | None
    """nnU-Net layout: value in the label file -> label-map index; None for TotalSegmentator's masks."""
    unusable: dict[str, str]
    """subject id -> why it cannot be scored against the dataset (changed or missing files)."""

    def skip_reason(self, subject: str) -> str | None:
        return self.unusable.get(subject) if subject in self.unusable else (
            None if subject in self.sources else "not found in the dataset folder")

    def labels(self, subject: str) -> tuple[np.ndarray, object]:
        """The subject's label volume on its original grid and its CT image (header only)."""
        source = self.sources[subject]
        job = SubjectJob(source, str(self.root), "", {}, "", self.label_map, self.label_values)
        ct_img = volume.load_header(self.root / source.image, source.id, source.image)
        if self.label_values is None:
            return _merge_masks(job, ct_img, self.root)[0], ct_img
        return _read_label_file(job, ct_img, self.root), ct_img


def open_reference(data: Path | str, manifest: Manifest) -> DatasetReference:
    """The dataset folder `data` as the reference of a cache (its manifest): subjects compared by file content,
    with the cache's label map (so that a structure keeps its index)."""
    dataset = discover(Path(data))
    sources = {s.id: s for s in dataset.subjects}
    changes = compare(dataset, manifest, manifest.settings.hash)
    # `modified` also names recorded subjects that discovery could not read (e.g. their CT was deleted): those are
    # not in `sources`, and skip_reason says they are not found
    unusable = {sid: "source files changed since the cache was built" for sid in changes.modified if sid in sources}
    return DatasetReference(dataset.root, sources, manifest.labels, dataset.label_values, unusable)
