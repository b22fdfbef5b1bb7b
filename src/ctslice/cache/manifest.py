"""CACHE/manifest.json: the one contract between the preprocessing writer and every reader.

Readers take the label map, the split, each subject's geometry and the slice index location from here and never
declare them again. The file is replaced atomically, so it is always either the previous or the next version. It
carries a checksum of its own content, and every path in it is checked to stay inside the cache, so a damaged or
edited manifest is refused before anything is read or deleted through it.

Format 3 keeps per subject only a compact table row (records.SubjectEntry); each subject's full record (input
file fingerprints, geometry, header) is its own write-once file under records/, named by its hash. Everything a
version consists of is written under new names first (subject folders, record files, slice index), then this one
small file is replaced: the single atomic step, which an object store's PUT gives as well. A format-2 manifest
(every record inline) is upgraded once by the next preprocess run (cache/upgrade.py); readers refuse it until then.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import CacheError, CacheFormatError
from ..files import write_atomic
from . import layout
from .label_map import label_map_from_json, label_map_problem
from .layout import LABEL_MAP_NAME, MANIFEST_NAME, SPLITS_NAME, ZARR_JSON
from .marks import same_text
from .records import Records, SubjectEntry, SubjectRecord, as_records, check_entry, check_record  # noqa: F401
from .settings import SPLIT, CacheSettings, settings_hash

FORMAT_VERSION = 3
"""The manifest's format. 2: the manifest carries its own checksum; paths in it are checked to stay inside.
3: per-subject records in their own files, a compact table in the manifest, per-subject statistics in the slice
index (the cached arrays are those of format 2: settings.ARRAY_FORMAT)."""
UPGRADABLE = 2
"""The older format a preprocess run upgrades in place (cache/upgrade.py)."""


class OldFormat(CacheFormatError):
    """A format-2 cache: preprocess upgrades it in place; readers refuse it until then."""


@dataclass
class Manifest:
    settings: CacheSettings
    """What the cache was built with: the settings that determine the cached arrays, their `hash`, the split's."""
    label_map: dict[str, str]
    """{"0": "background", "1": "spleen", ...}: index -> structure name; model channels follow it."""
    dataset: dict[str, Any] = field(default_factory=dict)
    """Where the data came from: {"root", "layout"}."""
    splits: dict[str, list[str]] = field(default_factory=lambda: {"train": [], "val": [], "test": []})
    subjects: Records = field(default_factory=Records)
    """id -> SubjectRecord, each record file read when first asked for; `subjects.table`: the rows, no reading."""
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

    def __post_init__(self) -> None:
        self.subjects = as_records(None, self.subjects)  # a caller may give a plain dict of records

    @property
    def labels(self) -> dict[int, str]:
        return label_map_from_json(self.label_map)

    @property
    def data_hash(self) -> str:
        """The hash of what a model reads from this cache: content settings and label map, whatever layout the
        arrays lie in (a checkpoint trained on a "slices" cache reads a "shards" copy of it unchanged). Equal to
        settings.hash for the "slices" layout, which the hash leaves out, so older checkpoints compare as before."""
        return settings_hash({**self.settings.content(), "layout": "slices"}, self.label_map)

    @property
    def num_labels(self) -> int:
        """Label-map entries including background: the number of model output channels."""
        return len(self.label_map)

    def split_of(self) -> dict[str, str]:
        return {sid: name for name, ids in self.splits.items() for sid in ids}

    def to_json(self, rows: dict[str, SubjectEntry]) -> dict[str, Any]:
        """The manifest's JSON with `rows` (Records.save's) as its subjects' table."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "subjects"}
        data["settings"] = self.settings.to_json()
        data["subjects"] = {k: rows[k].to_json() for k in sorted(rows)}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], cache: Path | None = None) -> Manifest:
        """A format-3 manifest's JSON (subjects: table rows; records read from `cache` when asked for)."""
        data = dict(data)
        data["settings"] = CacheSettings.from_json(data.get("settings"))
        rows = {k: SubjectEntry.from_json(k, v) for k, v in data.get("subjects", {}).items()}
        data["subjects"] = Records(cache, rows)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def manifest_path(cache: Path) -> Path:
    return Path(cache) / MANIFEST_NAME


# A format-3 manifest holds ~350 bytes a subject; a format-2 one ~150 bytes per source file: 1,228 subjects x 118
# files is ~22 MB. Anything far beyond is not one.
MAX_MANIFEST_BYTES = 1 << 30


def canonical_checksum(data: dict[str, Any]) -> str:
    """sha256 of the manifest's JSON without its `checksum` field, keys sorted: any change to any value shows."""
    body = {k: v for k, v in data.items() if k != "checksum"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def canonical_json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


_CHECKSUM_HEAD = b'{"checksum":"'
_HEAD_BYTES = len(_CHECKSUM_HEAD) + 64 + 2  # the head, 64 hex digits, '",'


def manifest_bytes(body: dict[str, Any]) -> bytes:
    """The manifest file: `body` (no `checksum` key) in its canonical JSON with the checksum as its first member,
    `{"checksum":"<sha256>",<the canonical JSON after its '{'>`. So the checksum is also the sha256 of the file
    with `"checksum":"<sha256>",` cut out, checked without serialising the content again (`_checksum_ok`)."""
    canonical = canonical_json(body)
    return b"".join([_CHECKSUM_HEAD, hashlib.sha256(canonical).hexdigest().encode(), b'",', canonical[1:]])


def _checksum_ok(raw: bytes, data: dict[str, Any]) -> bool:
    """Does the manifest's `checksum` match its content? Files written as `manifest_bytes` writes them are checked
    on their bytes; others (ctslice before this layout, or content reformatted by hand) by serialising again."""
    checksum = data.get("checksum")
    if not isinstance(checksum, str):
        return False
    if raw[:_HEAD_BYTES] == b"".join([_CHECKSUM_HEAD, checksum.encode(), b'",']):
        if hashlib.sha256(b"{" + raw[_HEAD_BYTES:]).hexdigest() == checksum:
            return True
    return checksum == canonical_checksum(data)


def looks_like_ctslice(data: Any) -> bool:
    """A manifest written by some ctslice (any format): how a cache from before the marker file is recognised."""
    return isinstance(data, dict) and {"format_version", "ctslice_version", "label_map", "subjects"} <= set(data)


def load_manifest_json(cache: Path) -> Any:
    """The manifest file's JSON as is (no checks beyond being a readable regular file of JSON)."""
    return _load(cache)[1]


def _load(cache: Path) -> tuple[bytes, Any]:
    """(the manifest file's bytes, its JSON)."""
    path = manifest_path(cache)
    if not Path(cache).is_dir():
        raise CacheError(f"{cache}: no such cache folder (run `ctslice preprocess` first)")
    try:
        raw = layout.read_regular(path, MAX_MANIFEST_BYTES, str(cache))
        return raw, json.loads(raw)
    except FileNotFoundError:
        raise CacheError(f"{cache}: no {MANIFEST_NAME}, so not a ctslice cache (run `ctslice preprocess`)") from None
    except (OSError, ValueError) as e:
        raise CacheError(f"{path}: unreadable manifest ({e}); `ctslice preprocess --force` rebuilds the cache"
                         ) from None


def manifest_digest(cache: Path) -> bytes | None:
    """sha256 of the manifest file's bytes (None when it cannot be read): equal digests, the same version."""
    try:
        return hashlib.sha256(layout.read_regular(manifest_path(cache), MAX_MANIFEST_BYTES, str(cache))).digest()
    except (OSError, CacheError):
        return None


def read_manifest(cache: Path) -> Manifest:
    """The cache's manifest, or a CacheError naming the cache and what is wrong with it. Checked before anything
    is used: format version, checksum, field types, and that every path it names lies inside the cache. Reads no
    record file (Records reads each when first asked for it)."""
    raw, data = _load_current(cache)
    try:
        manifest = Manifest.from_json(_checked(cache, data, check_entry, raw), cache)
    except (CacheError, TypeError, ValueError, AttributeError) as e:
        raise CacheError(f"{manifest_path(cache)}: damaged manifest ({e}); `ctslice preprocess --force` rebuilds "
                         "the cache") from None
    layout.inside_all(cache, [e.path for e in manifest.subjects.table.values()]
                      + [e.record for e in manifest.subjects.table.values()])
    if manifest.slice_index is not None:
        layout.inside(cache, manifest.slice_index)
    return manifest


def read_settings(cache: Path) -> CacheSettings:
    """The settings of the cache's manifest, checked as `read_manifest` checks it (format, checksum) but without
    building its subject table: what an update's defaults need before its plan reads the whole manifest."""
    raw, data = _load_current(cache)
    try:
        if not _checksum_ok(raw, data):
            raise CacheError("its checksum does not match its content: changed or corrupted")
        return CacheSettings.from_json(data.get("settings"))
    except (CacheError, TypeError, ValueError, AttributeError, KeyError) as e:
        raise CacheError(f"{manifest_path(cache)}: damaged manifest ({e}); `ctslice preprocess --force` rebuilds "
                         "the cache") from None


def _load_current(cache: Path) -> tuple[bytes, Any]:
    """(bytes, JSON) of a manifest of this ctslice's format; OldFormat or CacheFormatError for others."""
    raw, data = _load(cache)
    version = data.get("format_version") if isinstance(data, dict) else None
    if version == UPGRADABLE:
        raise OldFormat(f"{cache}: cache bookkeeping of format {UPGRADABLE} (an older ctslice): run `ctslice "
                        f"preprocess` once to upgrade it in place (nothing is computed again), or `ctslice preprocess "
                        "--force` to rebuild it")
    if version != FORMAT_VERSION:
        raise CacheFormatError(
            f"{cache}: cache format version {version!r}, this ctslice (version {__version__}) reads version "
            f"{FORMAT_VERSION}: run `ctslice preprocess` again to rebuild it"
        )
    return raw, data


def read_format2(cache: Path) -> Manifest:
    """A format-2 manifest (every record inline), checked as that format was: for the upgrade only."""
    data = _checked(cache, load_manifest_json(cache), check_record)
    records = Records(cache, {k: SubjectRecord.from_json(v) for k, v in data["subjects"].items()})
    manifest = Manifest(**{**{k: v for k, v in data.items() if k in Manifest.__dataclass_fields__},
                           "settings": CacheSettings.from_json(data["settings"]), "subjects": records})
    for record in records.values():
        layout.inside(cache, record.path)
    return manifest


def _checked(cache: Path, data: dict[str, Any], check_subject, raw: bytes = b"") -> dict[str, Any]:
    """`data` (read from the bytes `raw`) after its checksum and schema checks (check_subject(id, value) for each
    subject)."""
    if not _checksum_ok(raw, data):
        raise CacheError(f"{manifest_path(cache)}: damaged manifest (its checksum does not match its content: "
                         "changed or corrupted); `ctslice preprocess --force` rebuilds the cache")
    try:
        return validate_schema(data, check_subject)
    except (CacheError, TypeError, ValueError, AttributeError) as e:
        raise CacheError(f"{manifest_path(cache)}: damaged manifest ({e}); `ctslice preprocess --force` rebuilds "
                         "the cache") from None


def validate_schema(data: dict[str, Any], check_subject=check_entry) -> dict[str, Any]:
    """Types of the fields readers rely on, and the paths: a subject's `path` (and record file) and the
    `slice_index` may only be names the cache gives (no absolute paths, no '..'), before anything is read or
    deleted through them."""
    for name in ("settings", "label_map", "dataset", "splits", "subjects", "failed", "totals"):
        if not isinstance(data.get(name, {}), dict):
            raise CacheError(f"{name} is not an object")
    problem = label_map_problem(data["label_map"])
    if problem is not None:
        raise CacheError(problem)
    splits = data.get("splits", {}).values()
    if not all(isinstance(ids, list) and all(isinstance(x, str) for x in ids) for ids in splits):
        raise CacheError("splits are not lists of ids")
    if data.get("slice_index") is not None:
        layout.check_relative(data["slice_index"], layout.INDEX_DIR, "slice_index")
    for sid, value in data["subjects"].items():
        check_subject(sid, value)
    return data


def write_manifest(cache: Path, manifest: Manifest) -> None:
    """Write the record files of new or changed subjects, sync the filesystem (subject folders, records and slice
    index on disk before the manifest names them), then the manifest, then label_map.json and splits.csv from it,
    each atomically: to a temporary file, fsync, then renamed over the old one, so readers see old or new, never
    half. The manifest carries the checksum of its own content (`checksum`), checked by every read."""
    from .store import sync_filesystem

    manifest.subjects = as_records(cache, manifest.subjects)
    rows = manifest.subjects.save(cache)
    manifest.updated = time.time()
    manifest.format_version = FORMAT_VERSION
    data = manifest.to_json(rows)
    sync_filesystem(cache)
    write_atomic(manifest_path(cache), manifest_bytes(data), durable=True)
    write_root_files(cache, manifest)


def write_root_files(cache: Path, manifest: Manifest, unless_same: bool = False) -> None:
    """label_map.json, splits.csv and the zarr.json of the root and of subjects/, from `manifest`, each
    atomically; with `unless_same`, only those that do not already hold exactly that (a run that changed
    nothing)."""
    files = root_files(manifest)
    # The root's zarr.json also keeps the settings, so that `preprocess --force` after a damaged manifest can
    # rebuild with the cache's own settings (recover_settings) instead of the defaults.
    root_group = json.loads(files[ZARR_JSON])
    root_group["attributes"][SETTINGS_COPY] = manifest.settings.values()
    cache = Path(cache)
    # every temporary name in the root (subjects/ holds subject folders only)
    for path, text in ((cache / LABEL_MAP_NAME, files[LABEL_MAP_NAME]), (cache / SPLITS_NAME, files[SPLITS_NAME]),
                       (cache / ZARR_JSON, json.dumps(root_group)),
                       (cache / layout.SUBJECTS_DIR / ZARR_JSON, files[ZARR_JSON])):
        if unless_same and same_text(path, text):
            continue
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, text, durable=True, temp_dir=cache)


def same_content(manifest: Manifest, previous: Manifest | None) -> bool:
    """Does `manifest` say exactly what `previous` (the cache's current one) says, apart from when it was
    written? Then a run has nothing to write."""
    if previous is None or manifest.subjects.table != previous.subjects.table:
        return False

    def content(m: Manifest) -> bytes:
        return canonical_json({k: v for k, v in m.to_json({}).items() if k != "updated"})

    return content(manifest) == content(previous)


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
