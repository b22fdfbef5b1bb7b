"""Finding the subjects of a dataset folder, whichever of the supported layouts it uses.

1. TotalSegmentator: DATA/<subject>/ct.nii.gz and DATA/<subject>/segmentations/<structure>.nii.gz (one binary
   mask per structure), optionally DATA/meta.csv (';'-separated, columns image_id and split).
2. nnU-Net / Medical Segmentation Decathlon: DATA/imagesTr/<case>_0000.nii.gz, DATA/labelsTr/<case>.nii.gz
   (one multi-label volume) and DATA/dataset.json whose "labels" maps names to values.

Every volume file may also be NRRD (.nrrd, .seg.nrrd) or MetaImage (.mha, .mhd with its data file), and a
TotalSegmentator subject's CT may be a DICOM series folder, DATA/<subject>/ct/ (`imaging.formats` reads them all).

Discovery only lists files; nothing is decoded here. Problems that concern one subject are collected per subject
(the rest of the dataset goes on); problems with the whole folder raise.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..cache.names import RULE, is_safe_name
from ..errors import CtsliceError, InputError
from ..imaging.formats import FILE_SUFFIXES
from ..imaging.itk_files import mhd_data_files
from ..text import first_few
from .labels import MAX_LABELS, build_label_map

DICOM_CT_FOLDER = "ct"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SubjectSource:
    """One subject's input files, as paths relative to the dataset root."""

    id: str
    image: str
    masks: tuple[tuple[str, str], ...] = ()
    """TotalSegmentator layout: (structure name, file) for each mask file present."""
    label: str | None = None
    """nnU-Net layout: the multi-label file."""
    image_files: tuple[str, ...] = ()
    """When `image` is a DICOM series folder: the files in it (what is fingerprinted in its place)."""
    data_files: tuple[str, ...] = ()
    """The data files that .mhd headers among the image and masks name: read with them, so fingerprinted too."""

    @property
    def files(self) -> tuple[str, ...]:
        return (*(self.image_files or (self.image,)), *(f for _, f in self.masks),
                *((self.label,) if self.label else ()), *self.data_files)


@dataclass(frozen=True)
class Dataset:
    root: Path
    layout: str
    subjects: tuple[SubjectSource, ...]
    label_map: dict[int, str]
    label_values: dict[int, int] | None = None
    """nnU-Net layout: value in the label files -> index in the label map."""
    official_split: dict[str, str] = field(default_factory=dict)
    problems: tuple[InputError, ...] = ()
    warnings: tuple[str, ...] = ()


def _strip_suffix(name: str) -> str | None:
    for suffix in FILE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _data_files(root: Path, files: list[str]) -> tuple[str, ...]:
    """The data files of the .mhd headers among `files` (relative to root), those that exist."""
    headers = [f for f in files if f[-4:].lower() == ".mhd"]
    if not headers:  # nearly always: nothing more per subject
        return ()
    found = (d for f in headers for d in mhd_data_files(root / f))
    return tuple(sorted({d.relative_to(root).as_posix() for d in found if d.is_file()}))


# Listing costs most of a run that finds nothing changed (10,000 subjects, ~15 files each): one scandir per folder,
# names kept as strings (no Path per file), file and folder tests from the listing's entry types (a link is
# followed, as Path.is_file does, with one stat), so the only stat of an input file is the planner's.

def _scan(folder: str) -> dict[str, os.DirEntry]:
    """The entries of `folder` by name, hidden ones (names starting with '.') included."""
    with os.scandir(folder) as entries:
        return {e.name: e for e in entries}


def _visible(names: Iterable[str]) -> list[str]:
    """`names` (a listing, or _scan's entries) without hidden ones, sorted."""
    return sorted(name for name in names if not name.startswith("."))


def _files_of(folder: str, entries: dict[str, os.DirEntry], names: list[str]) -> list[str]:
    """Those of `names` that are files in `folder`. When the listing has none of them, each is tested by its
    path as well, as before: a case-insensitive filesystem finds 'CT.nii.gz' as 'ct.nii.gz', a listing does not."""
    found = [n for n in names if n in entries and entries[n].is_file()]
    return found or [n for n in names if os.path.isfile(os.path.join(folder, n))]


def _ct_of(folder: str, entries: dict[str, os.DirEntry], sid: str) -> tuple[str, tuple[str, ...]] | InputError:
    """The subject's CT (relative to the dataset root) and, for a DICOM folder, the files in it."""
    names = _files_of(folder, entries, [f"ct{s}" for s in FILE_SUFFIXES])
    dicom = entries.get(DICOM_CT_FOLDER)
    if dicom is not None and dicom.is_dir():
        names.append(f"{DICOM_CT_FOLDER}/")
    if not names:
        return InputError(sid, f"{sid}/ct.nii.gz", "subject folder has no CT (ct.nii.gz, ct.nrrd, ct.mha or a ct/ "
                                                   "DICOM series folder)")
    if len(names) > 1:
        return InputError(sid, f"{sid}/ct.nii.gz", f"several CTs ({' and '.join(names)}); keep one")
    if names[0] != f"{DICOM_CT_FOLDER}/":
        return f"{sid}/{names[0]}", ()
    series = _scan(dicom.path)
    files = tuple(f"{sid}/{DICOM_CT_FOLDER}/{name}" for name in _visible(series) if series[name].is_file())
    if not files:
        return InputError(sid, f"{sid}/{DICOM_CT_FOLDER}/", "the DICOM series folder ct/ holds no files")
    return f"{sid}/{DICOM_CT_FOLDER}", files


def _hidden_warning(entries: dict[str, os.DirEntry]) -> list[str]:
    """Folders starting with '.' are skipped (editor, OS and tool folders); say which, so none is lost silently."""
    hidden = sorted(name for name, e in entries.items() if name.startswith(".") and e.is_dir())
    if not hidden:
        return []
    return [f"{len(hidden)} hidden folder(s) skipped (names starting with '.'): {first_few(hidden)}"]


def detect_layout(root: Path) -> str:
    if not root.is_dir():
        raise CtsliceError(f"dataset folder {root} does not exist or is not a folder")
    if (root / "imagesTr").is_dir():
        return "nnunet"
    with os.scandir(root) as entries:  # stops at the first subject folder
        if any(e.is_dir() for e in entries if not e.name.startswith(".")):
            return "totalsegmentator"
    raise CtsliceError(
        f"no subjects found in {root}: expected <subject>/ct.nii.gz with <subject>/segmentations/*.nii.gz "
        "(TotalSegmentator) or imagesTr/, labelsTr/ and dataset.json (nnU-Net)"
    )


def discover(root: Path) -> Dataset:
    root = Path(root)
    layout = detect_layout(root)
    return _discover_totalsegmentator(root) if layout == "totalsegmentator" else _discover_nnunet(root)


def _check_ids(candidates: dict[str, SubjectSource | InputError]) -> tuple[list[SubjectSource], list[InputError]]:
    """Unsafe names and ids that collide (also case-insensitively, as they would on macOS or Windows)."""
    by_folded: dict[str, list[str]] = defaultdict(list)
    for sid in candidates:
        by_folded[sid.lower()].append(sid)
    good, bad = [], []
    for sid, item in sorted(candidates.items()):
        if isinstance(item, InputError):
            bad.append(item)
        elif not is_safe_name(sid):
            bad.append(InputError(sid, None, f"subject id is not a safe folder name ({RULE})"))
        elif len(by_folded[sid.lower()]) > 1:
            others = ", ".join(o for o in by_folded[sid.lower()] if o != sid)
            bad.append(InputError(sid, None, f"duplicate subject id (also: {others})"))
        else:
            good.append(item)
    return good, bad


def _discover_totalsegmentator(root: Path) -> Dataset:
    candidates: dict[str, SubjectSource | InputError] = {}
    unmasked: set[str] = set()
    top = _scan(str(root))
    for sid in (name for name in _visible(top) if top[name].is_dir()):
        folder = top[sid].path
        entries = _scan(folder)
        ct = _ct_of(folder, entries, sid)
        if isinstance(ct, InputError):
            candidates[sid] = ct
            continue
        masks: dict[str, str] = {}
        seg = entries.get("segmentations")
        for f in _visible(os.listdir(seg.path)) if seg is not None and seg.is_dir() else []:  # names suffice
            name = _strip_suffix(f)
            if name is None:
                continue
            if name in masks:
                candidates[sid] = InputError(sid, f"{sid}/segmentations/{f}", f"two files for structure {name}")
                break
            masks[name] = f"{sid}/segmentations/{f}"
        else:
            if not masks:  # every structure unknown: nothing to learn or score, so fail it rather than guess
                unmasked.add(sid)
                candidates[sid] = InputError(sid, f"{sid}/segmentations/", "no mask file (segmentations/*.nii.gz): "
                                             "every structure would be unknown")
                continue
            candidates[sid] = SubjectSource(sid, ct[0], tuple(sorted(masks.items())), image_files=ct[1],
                                            data_files=_data_files(root, [ct[0], *masks.values()]))
    subjects, problems = _check_ids(candidates)
    if unmasked and not subjects and not [p for p in problems if p.subject not in unmasked]:
        raise CtsliceError(f"{root}: no subject has any mask in segmentations/*.nii.gz")
    names = {name for s in subjects for name, _ in s.masks}
    if len(names) > MAX_LABELS:
        raise CtsliceError(f"{root}: {len(names)} structures do not fit in uint8 labels (at most {MAX_LABELS})")
    split, warnings = _read_meta_csv(root / "meta.csv")
    unknown = sorted(set(split) - set(candidates))
    if unknown:  # a subset of the dataset, or ids spelt differently: either way, say that these splits go unused
        warnings.append(f"meta.csv: {len(unknown)} id(s) match no subject folder (their split is not used): "
                        f"{first_few(unknown)}")
    return Dataset(root, "totalsegmentator", tuple(subjects), build_label_map(names), None, split,
                   tuple(problems), tuple(_hidden_warning(top) + warnings))


def _read_meta_csv(path: Path) -> tuple[dict[str, str], list[str]]:
    """Official split from TotalSegmentator's meta.csv (';'-separated; UTF-8, with or without a byte-order mark,
    or UTF-16 with one). A meta.csv that cannot be read whole is an error, not a warning: ignoring it, or a part of
    it, would put its test subjects into train. So are a FIFO or device in its place (never read: it could hang or
    never end), a quote left open, and an id given two splits. Rows with an empty split are only a warning (those
    subjects get the rule's)."""
    from .fingerprint import NotRegularFile, _open_regular  # here: fingerprint imports this module

    if not os.path.lexists(path):
        return {}, []
    try:
        fd, _ = _open_regular(path)  # links are followed, as for the dataset's other files
        with open(fd, "rb", closefd=True) as f:
            raw = f.read()
        text = raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("utf-8-sig")
    except NotRegularFile:
        raise CtsliceError(f"{path}: not a regular file (a FIFO, device or folder), not read; replace it with the "
                           "file or remove it to split by the rule") from None
    except OSError as e:  # also a link to nothing
        raise CtsliceError(f"{path}: cannot read it ({e.strerror or e}); fix it or remove it to split by the "
                           "rule") from None
    except UnicodeDecodeError as e:
        raise CtsliceError(f"{path}: cannot read it ({e}); it must be UTF-8 text") from None
    rows = _meta_rows(path, text)
    if not rows or "image_id" not in rows[0][1] or "split" not in rows[0][1]:
        found = ", ".join(map(repr, list(rows[0][1])[:4])) if rows else "no rows"
        raise CtsliceError(f"{path}: needs ';'-separated columns image_id and split (found {found}); fix it or "
                           "remove it to split by the rule")
    split: dict[str, str] = {}
    line_of: dict[str, int] = {}
    empty, bad = 0, []
    for line, row in rows[1:]:
        sid, value = (row.get("image_id") or "").strip(), (row.get("split") or "").strip().lower()
        if value in SPLITS and sid:
            if sid in split and split[sid] != value:
                raise CtsliceError(f"{path}: {sid} has two splits, {split[sid]} on line {line_of[sid]} and {value} "
                                   f"on line {line}; keep one row")
            split[sid], line_of[sid] = value, line
        elif value:
            bad.append(f"{sid or '?'} (line {line}): {value!r}")
        else:
            empty += 1
    if bad:
        raise CtsliceError(f"{path}: {len(bad)} row(s) with a split other than train/val/test: {first_few(bad)}")
    warnings = [f"meta.csv: {empty} row(s) without a split (split by the rule instead)"] if empty else []
    return split, warnings


def _meta_rows(path: Path, text: str) -> list[tuple[int, dict[str, str]]]:
    """(line number, {column: value}) for the header and each non-empty row. Quoting is parsed strictly, and a row
    must fit on its line: a quote left open would otherwise swallow the rows after it, whose subjects would then
    silently get the rule's split."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";", strict=True)
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    start = 1
    try:
        for row in reader:
            if reader.line_num != start:
                raise CtsliceError(f"{path}: line {start}: a quoted field runs on to line {reader.line_num} (a quote "
                                   "left open?); each row must be one line")
            if row:
                header = header or row
                rows.append((start, dict(zip(header, row))))
            start = reader.line_num + 1
    except csv.Error as e:
        raise CtsliceError(f"{path}: line {start}: bad quoting ({e}; a quote left open?)") from None
    return rows


def _dataset_labels(root: Path) -> dict[int, str]:
    """dataset.json "labels" as value -> name; accepts nnU-Net v2 ({"liver": 1}) and MSD ({"1": "liver"})."""
    path = root / "dataset.json"
    if not path.is_file():  # also refuses a FIFO, which read_text would wait on forever
        raise CtsliceError(f"{path}: missing or not a regular file (the nnU-Net layout needs dataset.json with "
                           "'labels')")
    try:
        labels = json.loads(path.read_text())["labels"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CtsliceError(f"{path}: cannot read 'labels' ({type(e).__name__}: {e})") from None
    expected = "'labels' must map names to integer values ({\"liver\": 1}) or values to names ({\"1\": \"liver\"})"
    if not isinstance(labels, dict) or not labels:
        raise CtsliceError(f"{path}: {expected}, got {type(labels).__name__}")
    values = list(labels.values())
    if all(isinstance(v, str) for v in values) and all(k.strip().isdigit() for k in labels):  # MSD: value -> name
        by_value = {int(k): v for k, v in labels.items()}
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        by_value = {v: k for k, v in labels.items()}
    else:
        raise CtsliceError(f"{path}: {expected} (region-based labels are not supported)")
    if 0 not in by_value:
        raise CtsliceError(f"{path}: 'labels' has no background (value 0)")
    return dict(sorted(by_value.items()))


def _discover_nnunet(root: Path) -> Dataset:
    by_value = _dataset_labels(root)
    label_values = {value: index for index, value in enumerate(by_value)}
    label_map = {index: ("background" if value == 0 else by_value[value]) for value, index in label_values.items()}
    if len(label_map) - 1 > MAX_LABELS:
        raise CtsliceError(f"{root}: {len(label_map) - 1} labels do not fit in uint8 (at most {MAX_LABELS})")
    images: dict[str, list[str]] = defaultdict(list)
    for f in _visible(_scan(str(root / "imagesTr"))):
        stem = _strip_suffix(f)
        if stem is not None:
            images[stem].append(f"imagesTr/{f}")
    labels_dir = str(root / "labelsTr")
    labels = _scan(labels_dir) if os.path.isdir(labels_dir) else {}
    candidates: dict[str, SubjectSource | InputError] = {}
    for stem, files in images.items():
        case, _, channel = stem.rpartition("_")
        if not case or not channel.isdigit():
            candidates[stem] = InputError(stem, files[0], "image name must end in _0000 (nnU-Net channel suffix)")
        elif channel != "0000":
            candidates.setdefault(case, InputError(case, files[0], "multi-channel input is not supported"))
        elif len(files) > 1:
            candidates[case] = InputError(case, files[0], f"duplicate subject id ({' and '.join(files)})")
        else:
            found = [f"labelsTr/{n}" for n in _files_of(labels_dir, labels, [f"{case}{s}" for s in FILE_SUFFIXES])]
            if len(found) != 1:
                reason = "no label file" if not found else f"several label files ({' and '.join(found)})"
                candidates[case] = InputError(case, f"labelsTr/{case}.nii.gz", reason)
            elif not isinstance(candidates.get(case), InputError):
                candidates[case] = SubjectSource(case, files[0], label=found[0],
                                                 data_files=_data_files(root, [files[0], found[0]]))
    if not candidates:
        raise CtsliceError(f"no subjects found in {root / 'imagesTr'}")
    subjects, problems = _check_ids(candidates)
    return Dataset(root, "nnunet", tuple(subjects), label_map, label_values, {}, tuple(problems))
