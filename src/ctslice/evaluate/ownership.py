"""Which files `predict` may write: never into a dataset, never over a file it did not write itself.

    problem = folder_problem(folder)             # a subject's folder, its segmentations/, a dataset folder
    problem = name_problem(target)               # named like a dataset's CT
    problem = replace_problem(target, overwrite) # exists: refused, or with --overwrite only if predict wrote it
    Ledger(folder).record([paths])               # after writing: these files are predict's own

Rules (issue 15: `predict --out DATA/s/...` replaced ground-truth masks and a CT):
- A dataset is recognised by its layout, as `preprocess` discovers it: a *subject folder* holds `ct.nii(.gz)` and
  `segmentations/`; a *dataset root* holds subject folders or nnU-Net's `imagesTr/`. Predictions are never written
  into a subject folder, its `segmentations/`, a dataset root or nnU-Net's images/labels folders, and never under
  a CT's name (`ct.nii.gz`). A subfolder of a subject (`DATA/s/predictions/`) is not read by preprocess: allowed.
- A file that exists is replaced only with `--overwrite`, and only when the folder's ledger
  (`.ctslice-predictions.json`, written by predict beside its outputs) lists it with the same size and
  modification time: the proof that predict wrote it and nobody changed it since. Anything else is kept.
- `--split-masks` writes into a folder it creates; an existing one only with `--overwrite` and its ledger.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..cache.layout import is_regular, read_regular
from ..errors import CacheError
from ..files import write_atomic
from ..imaging.formats import FILE_SUFFIXES

LEDGER = ".ctslice-predictions.json"
CT_NAMES = tuple(f"ct{suffix}" for suffix in FILE_SUFFIXES)  # ct.nii.gz, ct.nii, ct.nrrd, ct.mha, ...
DATASET_FOLDERS = ("segmentations", "imagesTr", "labelsTr", "imagesTs", "labelsTs")
_LEDGER_LIMIT = 16 << 20


def is_subject_folder(folder: Path) -> bool:
    """A TotalSegmentator subject: a CT and a segmentations/ folder (what `preprocess` reads)."""
    has_ct = any(is_regular(folder / n) for n in CT_NAMES) or (folder / "ct").is_dir()  # ct/: a DICOM series
    return has_ct and (folder / "segmentations").is_dir()


def is_dataset_root(folder: Path) -> bool:
    """A dataset folder preprocess would read: nnU-Net's imagesTr/, or subject folders."""
    if (folder / "imagesTr").is_dir():
        return True
    try:
        return any(p.is_dir() and is_subject_folder(p) for p in folder.iterdir())
    except OSError:
        return False


def folder_problem(folder: Path) -> str | None:
    """Why predictions may not be written into `folder` (a dataset's own folder), or None."""
    if folder.name in DATASET_FOLDERS:
        return f"{folder} is a dataset's {folder.name}/ folder; predictions are not written into a dataset"
    if not folder.is_dir():
        return None
    if is_subject_folder(folder):
        return (f"{folder} is a dataset subject's folder (ct.nii.gz and segmentations/); predictions are not "
                "written into a dataset, give --out elsewhere")
    if is_dataset_root(folder):
        return (f"{folder} is a dataset folder (it holds subjects); predictions are not written into a dataset "
                "(the next preprocess would take them for subjects), give --out elsewhere")
    return None


def name_problem(target: Path) -> str | None:
    """Why `target` may not be a prediction file's name (its folder is checked once, by `folder_problem`)."""
    if target.name.lower() in CT_NAMES:
        return f"the output {target} is named like a dataset's CT; predictions are named <name>_seg.nii.gz"
    return None


def _fingerprint(path: Path) -> dict[str, int]:
    st = os.lstat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


class Ledger:
    """The files predict wrote in one folder, with their size and modification time (`LEDGER` in the folder).
    A missing or unreadable ledger proves nothing: no file is then predict's own."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.files: dict[str, dict[str, int]] = {}
        try:
            data = json.loads(read_regular(self.folder / LEDGER, _LEDGER_LIMIT, str(self.folder)))
            if isinstance(data, dict) and isinstance(data.get("files"), dict):
                self.files = {k: v for k, v in data["files"].items() if isinstance(v, dict)}
        except (OSError, ValueError, CacheError):
            pass

    def _key(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.folder)).as_posix()

    def owns(self, path: Path) -> bool:
        try:
            return is_regular(path) and self.files.get(self._key(path)) == _fingerprint(path)
        except OSError:
            return False

    def record(self, paths: list[Path]) -> None:
        """Add `paths` (just written) and save the ledger atomically."""
        for path in paths:
            self.files[self._key(path)] = _fingerprint(path)
        write_atomic(self.folder / LEDGER, json.dumps({"written_by": "ctslice predict", "files": self.files},
                                                      indent=1, sort_keys=True) + "\n", durable=True)


def ledger_of(folder: Path, ledgers: dict[Path, Ledger]) -> Ledger:
    """The ledger of `folder`, read once per run (`ledgers` keeps them)."""
    if folder not in ledgers:
        ledgers[folder] = Ledger(folder)
    return ledgers[folder]


def replace_problem(path: Path, overwrite: bool, ledger: Ledger | None = None) -> str | None:
    """Why an existing `path` may not be replaced, or None (absent, or --overwrite and predict's own)."""
    if not os.path.lexists(path):
        return None
    if not overwrite:
        return f"{path} exists; not replaced (--overwrite replaces earlier predictions of ctslice predict)"
    if not (ledger or Ledger(path.parent)).owns(path):
        return (f"{path} exists and was not written by ctslice predict (or was changed since: it is not in "
                f"{LEDGER} as it is now); not replaced, even with --overwrite")
    return None


def split_folder_problem(folder: Path, overwrite: bool) -> str | None:
    """--split-masks writes into a folder it creates: an existing one only with --overwrite and its ledger."""
    if not os.path.lexists(folder):
        return None
    if not overwrite:
        return f"{folder} exists; --split-masks writes into a new folder (--overwrite replaces predict's own)"
    if not is_regular(folder / LEDGER):
        return (f"{folder} exists and was not created by ctslice predict (no {LEDGER}); not written, even with "
                "--overwrite")
    return None
