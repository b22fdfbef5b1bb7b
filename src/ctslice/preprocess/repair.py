"""`repair_cache`: compute again only the subjects `verify` found damaged, from the dataset; nothing else changes.

Subject folders are content-addressed (the name carries the key of settings and source bytes), so a damaged
folder would be found again and reused: repair asks the run to compute those subjects again into new folders
(`redo`). Every healthy subject keeps its folder and record, and the split, label map and settings stay as they
are: a repair is not an update. So it refuses, before touching anything, a dataset that lacks a cached subject (a
partial copy would otherwise drop the rest) or gives another label map (a new mask file would renumber the labels
that checkpoints were trained with). Nothing is taken out of the cache beforehand: the old manifest, damaged
subjects included, stays valid until the repaired subjects are in place, then one atomic swap replaces it. A
repair killed at any point leaves the cache as verify found it (plus leftovers), exactly as a killed preprocess
does.

`verify_and_repair` is the whole check: verify, repair what it found, verify again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..cache.label_map import label_map_to_json
from ..cache.manifest import Manifest, read_manifest
from ..cache.verify import VerifyReport, verify_cache
from ..config import PreprocessConfig
from ..errors import CacheError
from ..text import first_few
from .commit import PreprocessReport
from .execute import ProgressFn
from .plan import plan_repair
from .run import carry_out
from .sources import Dataset, discover
from .status import dataset_folder


@dataclass
class RepairReport:
    damaged: list[str]
    """Damaged subjects that were computed again."""
    preprocess: PreprocessReport


def repair_refusal(manifest: Manifest, dataset: Dataset) -> str | None:
    """Why `dataset` cannot repair the cache of `manifest` (None: it can): it must hold every cached subject and
    give the cache's label map."""
    present = {s.id for s in dataset.subjects}
    lacking = sorted(set(manifest.subjects) - present)
    if lacking:
        return (f"it lacks {len(lacking)} of the cache's {len(manifest.subjects)} subject(s) "
                f"({first_few(lacking, 10)}); "
                "pass the dataset the cache was built from")
    labels = label_map_to_json(dataset.label_map)
    if labels != manifest.label_map:
        old, new = set(manifest.label_map.values()), set(labels.values())
        change = " ".join([f"+{n}" for n in sorted(new - old)] + [f"-{n}" for n in sorted(old - new)])
        return (f"its label map differs from the cache's ({len(old) - 1} -> {len(new) - 1} structures"
                + (f": {change}" if change else ", other order") + "); run `ctslice preprocess` to rebuild instead")
    return None


def repair_cache(cache: Path, data: Path | None = None, workers: int = 0, report: VerifyReport | None = None,
                 progress: ProgressFn | None = None) -> RepairReport:
    """Compute again, from `data` (default: the dataset the cache was built from) and with the cache's own
    settings, the subjects `report` (default: a fresh verify) found damaged. Damage to the slice index alone is
    repaired by the same run, which writes a new index. Raises CacheError, changing nothing, when `data` lacks a
    cached subject or gives another label map."""
    cache = Path(cache)
    report = report if report is not None else verify_cache(cache)
    manifest = read_manifest(cache)
    data = dataset_folder(cache, manifest, data)
    refusal = repair_refusal(manifest, discover(data))
    if refusal:
        raise CacheError(f"cannot repair {cache} from {data}: {refusal}; nothing was changed")
    damaged = [sid for sid in report.damaged_subjects if sid in manifest.subjects]
    cfg = manifest.settings.config(PreprocessConfig(workers=workers))
    run = carry_out(data, cache, cfg, lambda folder, dataset: plan_repair(folder, dataset, cfg, damaged), progress)
    return RepairReport(damaged, run)


@dataclass
class CheckedCache:
    verified: VerifyReport
    """The first verify."""
    repair: RepairReport | None = None
    """None: nothing to repair, or no repair asked for."""
    verified_again: VerifyReport | None = None
    """The verify after the repair."""

    @property
    def ok(self) -> bool:
        """The cache is sound now: it verified, or it was repaired with no subject failing and verifies."""
        if self.repair is None:
            return self.verified.ok
        return self.verified_again is not None and self.verified_again.ok and not self.repair.preprocess.failed


VerifyProgress = Callable[[int, int, str], None]


def verify_and_repair(cache: Path, repair: bool = False, data: Path | None = None, workers: int = 4,
                      repair_workers: int = 0, progress: VerifyProgress | None = None,
                      checked: Callable[[VerifyReport], None] | None = None,
                      repair_progress: ProgressFn | None = None) -> CheckedCache:
    """Verify the cache (`workers` threads decoding chunks); with `repair`, when it found a problem, repair it from
    `data` (repair_cache, `repair_workers` dask workers) and verify again. `checked` gets the first verify's
    report as soon as it is done, so that the problems are known before the repair starts."""
    verified = verify_cache(cache, workers=workers, progress=progress)
    if checked:
        checked(verified)
    result = CheckedCache(verified)
    if verified.ok or not repair:
        return result
    result.repair = repair_cache(cache, data, workers=repair_workers, report=verified, progress=repair_progress)
    result.verified_again = verify_cache(cache, workers=workers, progress=progress)
    return result
