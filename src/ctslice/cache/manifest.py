"""CACHE/manifest.json: the one contract between the preprocessing writer and every reader.

Readers take the label map, the split, each subject's geometry and the slice index location from here and never
declare them again. The file is replaced atomically, so it is always either the previous or the next version. It
carries a checksum of its own content, and every path in it is checked to stay inside the cache, so a damaged or
edited manifest is refused before anything is read or deleted through it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import CacheError, CacheFormatError, CtsliceError
from ..files import write_atomic
from . import layout
from .label_map import label_map_from_json, label_map_problem
from .layout import LABEL_MAP_NAME, MANIFEST_NAME, SPLITS_NAME, ZARR_JSON
from .names import check_name
from .settings import FORMAT_VERSION, SPLIT, CacheSettings

# FORMAT_VERSION (settings.py) 2: the manifest carries its own checksum; paths in it are checked to stay inside.


@dataclass
class SubjectRecord:
    """One cached subject, as written by preprocessing (also stored in the subject group's attributes)."""

    id: str
    path: str
    """The subject's zarr group, relative to the cache root."""
    key: str
    """Hash of the settings and the source files' contents: equal keys mean identical cached arrays."""
    files: dict[str, dict[str, Any]]
    """Source file (relative to the dataset root) -> {"size", "mtime_ns", "sha256"}."""
    slices: int
    shape: list[int]
    """Cached (slices, rows, columns)."""
    spacing: list[float]
    """Cached voxel size in mm: (slice thickness, row spacing, column spacing)."""
    geometry: dict[str, Any]
    """imaging.geometry.Geometry as JSON: maps cached slices back to the original grid."""
    label_voxels: list[int]
    """Voxels per label index in the cached volume (index 0 = background)."""
    overlap_voxels: int = 0
    """Voxels claimed by more than one structure mask (the later index won), each counted once, on the original
    grid."""
    original_label_voxels: int = 0
    """Labelled voxels on the original grid, each counted once: what overlap_voxels is a share of (0 in caches
    built before it was kept; their overlaps are shown without a share)."""
    cropped_label_voxels: int = 0
    """Labelled voxels that fell outside the cached slice size (lost to the crop)."""
    missing_structures: list[str] = field(default_factory=list)
    """Label-map names whose mask file this subject lacks: unknown there (not background), so training and
    evaluation leave them out of this subject's loss and metrics."""
    warnings: list[str] = field(default_factory=list)
    header: dict[str, Any] = field(default_factory=dict)
    """The CT's NIfTI header fields a prediction must carry to open over it (imaging.volume.header_fields:
    qform/sform and their codes, units, pixdim); empty in caches built before it was kept."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SubjectRecord:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Manifest:
    settings: CacheSettings
    """What the cache was built with: the settings that determine the cached arrays, their `hash`, the split's."""
    label_map: dict[str, str]
    """{"0": "background", "1": "spleen", ...}: index -> structure name; model channels follow it."""
    dataset: dict[str, Any] = field(default_factory=dict)
    """Where the data came from: {"root", "layout"}."""
    splits: dict[str, list[str]] = field(default_factory=lambda: {"train": [], "val": [], "test": []})
    subjects: dict[str, SubjectRecord] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    """Subject -> reason, from the latest run."""
    slice_index: str | None = None
    """Folder (relative to the cache) of the consolidated slice index, written with this manifest."""
    totals: dict[str, int] = field(default_factory=dict)
    statistics: dict[str, Any] = field(default_factory=dict)
    """Dataset statistics computed while preprocessing: {"structures": {name: {"subjects", "voxels", "ml"}},
    "intensity": {"mean", "std", "p00_5", "p99_5", "min", "max"} of foreground voxels in HU (nnU-Net's CT
    fingerprint), "spacing": {"slice_thickness": [min, max], "in_plane": [min, max]} of the originals}."""
    format_version: int = FORMAT_VERSION
    ctslice_version: str = __version__
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    @property
    def labels(self) -> dict[int, str]:
        return label_map_from_json(self.label_map)

    @property
    def num_labels(self) -> int:
        """Label-map entries including background: the number of model output channels."""
        return len(self.label_map)

    def split_of(self) -> dict[str, str]:
        return {sid: name for name, ids in self.splits.items() for sid in ids}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["settings"] = self.settings.to_json()
        data["subjects"] = {k: v.to_json() for k, v in sorted(self.subjects.items())}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["settings"] = CacheSettings.from_json(data.get("settings"))
        data["subjects"] = {k: SubjectRecord.from_json(v) for k, v in data.get("subjects", {}).items()}
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def manifest_path(cache: Path) -> Path:
    return Path(cache) / MANIFEST_NAME


# A manifest lists ~150 bytes per source file: 1,228 subjects x 118 files is ~22 MB. Anything far beyond is not one.
MAX_MANIFEST_BYTES = 1 << 30


def canonical_checksum(data: dict[str, Any]) -> str:
    """sha256 of the manifest's JSON without its `checksum` field, keys sorted: any change to any value shows."""
    body = {k: v for k, v in data.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def looks_like_ctslice(data: Any) -> bool:
    """A manifest written by some ctslice (any format): how a cache from before the marker file is recognised."""
    return isinstance(data, dict) and {"format_version", "ctslice_version", "label_map", "subjects"} <= set(data)


def load_manifest_json(cache: Path) -> Any:
    """The manifest file's JSON as is (no checks beyond being a readable regular file of JSON)."""
    path = manifest_path(cache)
    if not Path(cache).is_dir():
        raise CacheError(f"{cache}: no such cache folder (run `ctslice preprocess` first)")
    try:
        return json.loads(layout.read_regular(path, MAX_MANIFEST_BYTES, str(cache)))
    except FileNotFoundError:
        raise CacheError(f"{cache}: no {MANIFEST_NAME}, so not a ctslice cache (run `ctslice preprocess`)") from None
    except (OSError, ValueError) as e:
        raise CacheError(f"{path}: unreadable manifest ({e}); `ctslice preprocess --force` rebuilds the cache"
                         ) from None


def read_manifest(cache: Path) -> Manifest:
    """The cache's manifest, or a CacheError naming the cache and what is wrong with it. Checked before anything
    is used: format version, checksum, field types, and that every path it names lies inside the cache."""
    path = manifest_path(cache)
    data = load_manifest_json(cache)
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != FORMAT_VERSION:
        raise CacheFormatError(
            f"{cache}: cache format version {version!r}, this ctslice (version {__version__}) reads version "
            f"{FORMAT_VERSION}: run `ctslice preprocess` again to rebuild it"
        )
    damaged = f"{path}: damaged manifest"
    if data.get("checksum") != canonical_checksum(data):
        raise CacheError(f"{damaged} (its checksum does not match its content: changed or corrupted); "
                         "`ctslice preprocess --force` rebuilds the cache")
    try:
        manifest = Manifest.from_json(validate_schema(data))
    except (CacheError, TypeError, ValueError, AttributeError) as e:
        raise CacheError(f"{damaged} ({e}); `ctslice preprocess --force` rebuilds the cache") from None
    for record in manifest.subjects.values():
        layout.inside(cache, record.path)
    if manifest.slice_index is not None:
        layout.inside(cache, manifest.slice_index)
    return manifest


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise CacheError(what)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def validate_schema(data: dict[str, Any]) -> dict[str, Any]:
    """Types of the fields readers rely on, and the paths: a record's `path` and the `slice_index` may only be
    names the cache gives (no absolute paths, no '..'), before anything is read or deleted through them."""
    for name in ("settings", "label_map", "dataset", "splits", "subjects", "failed", "totals"):
        _check(isinstance(data.get(name, {}), dict), f"{name} is not an object")
    problem = label_map_problem(data["label_map"])
    _check(problem is None, problem or "")
    _check(all(_str_list(ids) for ids in data.get("splits", {}).values()), "splits are not lists of ids")
    if data.get("slice_index") is not None:
        layout.check_relative(data["slice_index"], layout.INDEX_DIR, "slice_index")
    for sid, r in data["subjects"].items():
        try:  # ids name folders and output files: the one check for names read from files
            check_name(sid, "subject id")
        except CtsliceError as e:
            raise CacheError(str(e)) from None
        _check(isinstance(r, dict) and r.get("id") == sid, f"subject {sid}: record without its id")
        layout.check_relative(r.get("path"), layout.SUBJECTS_DIR, f"subject {sid}")
        _check(isinstance(r.get("key"), str) and isinstance(r.get("files"), dict)
               and isinstance(r.get("geometry"), dict), f"subject {sid}: key, files or geometry missing")
        _check(all(isinstance(f, dict) and {"size", "mtime_ns", "sha256"} <= set(f) for f in r["files"].values()),
               f"subject {sid}: file fingerprints lack size, mtime_ns or sha256")
        shape = r.get("shape")
        _check(isinstance(shape, list) and len(shape) == 3 and all(_is_int(n) and n > 0 for n in shape)
               and r.get("slices") == shape[0], f"subject {sid}: bad shape or slice count")
        _check(isinstance(r.get("spacing"), list) and len(r["spacing"]) == 3, f"subject {sid}: bad spacing")
        _check(isinstance(r.get("label_voxels"), list) and all(_is_int(n) for n in r["label_voxels"]),
               f"subject {sid}: bad label_voxels")
    return data


def write_manifest(cache: Path, manifest: Manifest) -> None:
    """Write the manifest, then label_map.json and splits.csv from it, each atomically: to a temporary file,
    fsync, then renamed over the old one, so readers see old or new, never half. The manifest carries the
    checksum of its own content (`checksum`), checked by every read."""
    manifest.updated = time.time()
    data = manifest.to_json()
    data["checksum"] = canonical_checksum(data)
    write_atomic(manifest_path(cache), json.dumps(data, indent=1), durable=True)
    files = root_files(manifest)
    for name in (LABEL_MAP_NAME, SPLITS_NAME):
        write_atomic(Path(cache) / name, files[name], durable=True)
    # The root's zarr.json also keeps the settings, so that `preprocess --force` after a damaged manifest can
    # rebuild with the cache's own settings (recover_settings) instead of the defaults.
    root_group = json.loads(files[ZARR_JSON])
    root_group["attributes"][SETTINGS_COPY] = manifest.settings.values()
    for folder, document in ((Path(cache), json.dumps(root_group)), (Path(cache) / layout.SUBJECTS_DIR, files[ZARR_JSON])):
        folder.mkdir(exist_ok=True)
        # the temporary name in the root: subjects/ holds subject folders only
        write_atomic(folder / ZARR_JSON, document, durable=True, temp_dir=Path(cache))


def root_files(manifest: Manifest) -> dict[str, str]:
    """The files written beside the manifest, by name: what `cache clean` compares with before deleting them
    (zarr.json by its mark, since the root's copy also carries the settings).
    The cache root and subjects/ are zarr v3 groups, so plain zarr opens the cache: zarr.open_group(CACHE) and
    group["subjects/<folder>"]["image"]. A group's metadata is this fixed document (zarr v3 spec); written by
    hand so that it too is replaced atomically."""
    group = json.dumps({"zarr_format": 3, "node_type": "group",
                        "attributes": {"ctslice": f"a ctslice slice cache; its contract is {MANIFEST_NAME}"}})
    return {LABEL_MAP_NAME: json.dumps(manifest.label_map, indent=1) + "\n", SPLITS_NAME: splits_csv(manifest),
            ZARR_JSON: group}


SETTINGS_COPY = "settings"
"""Key of the settings' copy in the root zarr.json's attributes."""


def recover_settings(cache: Path) -> tuple[CacheSettings | None, str]:
    """For a cache whose manifest cannot be read: its settings from the damaged manifest's own `settings` if they
    still parse, else from the copy in the root zarr.json (flat, without the hash: a rebuild computes it again);
    (None, "none readable") when neither is. The text says where they came from. Both are untrusted: they are
    checked when they become a configuration (CacheSettings.config)."""
    for source, read in (("the damaged manifest's own settings", lambda: load_manifest_json(cache)["settings"]),
                         (f"the copy in {ZARR_JSON}", lambda: _from_copy(_root_attributes(cache)[SETTINGS_COPY]))):
        try:
            return CacheSettings.from_json(read()), source
        except (CacheError, KeyError, TypeError, ValueError, AttributeError, OSError):
            continue
    return None, "none readable"


def _from_copy(flat: Any) -> dict[str, Any]:
    """The flat copy in zarr.json ({"spacing", ..., "seed"}) in the manifest's form (no hash)."""
    split = {k: flat[k] for k in SPLIT if k in flat}
    return {**{k: v for k, v in flat.items() if k not in SPLIT}, "hash": "", "split": split}


def _root_attributes(cache: Path) -> dict[str, Any]:
    return json.loads(layout.read_regular(Path(cache) / ZARR_JSON, 1 << 20, str(cache)))["attributes"]


def splits_csv(manifest: Manifest) -> str:
    """`subject,split` rows in subject order."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["subject", "split"])
    writer.writerows(sorted(manifest.split_of().items()))
    return text.getvalue()
