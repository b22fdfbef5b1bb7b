"""`repair_cache`: reprocess the subjects `verify` found damaged, from the dataset, as one preprocess run.

Subject folders are content-addressed (the name carries the key of settings and source bytes), so a damaged
folder would be found again and reused: repair asks the run to compute those subjects again into new folders
(`redo`). Nothing is taken out of the cache beforehand: the old manifest, damaged subjects included, stays valid
until the repaired subjects are in place, then one atomic swap replaces it. A repair killed at any point leaves
the cache as verify found it (plus leftovers), exactly as a killed preprocess does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..cache.manifest import read_manifest
from ..cache.verify import VerifyReport, verify_cache
from .run import PreprocessReport, ProgressFn, run_preprocess
from .status import dataset_folder, preprocess_config_of


@dataclass
class RepairReport:
    damaged: list[str]
    """Damaged subjects that were computed again."""
    preprocess: PreprocessReport


def repair_cache(cache: Path, data: Path | None = None, workers: int = 0, report: VerifyReport | None = None,
                 progress: ProgressFn | None = None) -> RepairReport:
    """Reprocess the subjects `report` (default: a fresh verify) found damaged, from `data` (default: the dataset
    the cache was built from), with the cache's own settings. Damage to the slice index alone is repaired by
    the same run, which always writes a new index. Subjects that are no longer in the dataset just leave."""
    cache = Path(cache)
    report = report if report is not None else verify_cache(cache)
    manifest = read_manifest(cache)
    data = dataset_folder(cache, manifest, data)
    damaged = [sid for sid in report.damaged_subjects if sid in manifest.subjects]
    cfg = preprocess_config_of(manifest, workers=workers)
    return RepairReport(damaged, run_preprocess(data, cache, cfg, progress=progress, redo=damaged))
