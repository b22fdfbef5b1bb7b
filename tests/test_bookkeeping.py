"""Format-3 bookkeeping (issue 17): per-subject record files and a compact manifest table, so that a run's fixed
cost reads nothing per unchanged subject; the slice index and statistics updated from what changed; verify checks
every record file; a format-2 cache is upgraded once, in place; kills at each step of the commit leave a readable
cache."""

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY_SETTINGS

from ctslice.bench.incremental import modify_subject
from ctslice.cache import records, store
from ctslice.cache.info import cache_info
from ctslice.cache.manifest import OldFormat, canonical_checksum, read_manifest
from ctslice.cache.statistics import dataset_statistics
from ctslice.cache.verify import verify_cache
from ctslice.data.dataset import SliceDataset
from ctslice.errors import CacheError
from ctslice.preprocess.repair import repair_cache
from ctslice.preprocess.run import run_preprocess
from ctslice.preprocess.status import cache_status

SID = "demo0002"


def no_record_reads(monkeypatch):
    """Make reading any record file fail: what must not happen on the fixed-cost path."""
    def refuse(cache, entry):
        raise AssertionError(f"record file of {entry.id} read")
    monkeypatch.setattr(records, "read_record", refuse)


def count_subject_opens(monkeypatch) -> list[str]:
    opened: list[str] = []
    original = store.open_subject
    monkeypatch.setattr(store, "open_subject", lambda cache, folder: opened.append(folder) or original(cache, folder))
    return opened


def test_fixed_costs_read_no_record_file_and_open_no_subject(tiny_dataset, tiny_cache, monkeypatch):
    no_record_reads(monkeypatch)
    opened = count_subject_opens(monkeypatch)
    before = (tiny_cache / "manifest.json").read_bytes()
    report = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert report.ok and report.processed == [] and len(report.unchanged) == 5
    assert cache_status(tiny_cache).up_to_date
    assert cache_info(tiny_cache).subjects == 5
    assert len(SliceDataset(tiny_cache, "train")) > 0
    assert opened == []
    after = json.loads((tiny_cache / "manifest.json").read_text())
    assert after["slice_index"] == json.loads(before)["slice_index"]  # the same index, not written again


def test_one_changed_subject_reads_and_opens_only_that_subject(tiny_dataset, tiny_cache, monkeypatch):
    full_stats = read_manifest(tiny_cache).statistics
    modify_subject(tiny_dataset, SID)
    read: list[str] = []
    original = records.read_record
    monkeypatch.setattr(records, "read_record", lambda cache, entry: read.append(entry.id) or original(cache, entry))
    opened = count_subject_opens(monkeypatch)
    report = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert report.processed == [SID] and set(read) <= {SID} and len(opened) == 1 and SID in opened[0]
    monkeypatch.undo()
    manifest = read_manifest(tiny_cache)
    # the updated index equals one built from scratch, and so do the statistics computed from it
    rebuilt = store.build_slice_index(tiny_cache, {sid: r.path for sid, r in manifest.subjects.table.items()})
    index = store.read_slice_index(tiny_cache, manifest.slice_index)
    for name in store.INDEX_ARRAYS:
        assert np.array_equal(getattr(index, name), getattr(rebuilt, name)), name
    assert manifest.statistics["structures"] == full_stats["structures"]
    assert manifest.statistics["intensity"] != full_stats["intensity"]  # the changed CT's HU moved by +1
    shutil.rmtree(tiny_cache / manifest.slice_index)  # recomputed from every subject: the same numbers
    run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert read_manifest(tiny_cache).statistics == manifest.statistics
    assert verify_cache(tiny_cache).ok


def test_touched_files_get_a_new_record_and_later_runs_take_the_fast_path(tiny_dataset, tiny_cache, monkeypatch):
    ct = tiny_dataset / SID / "ct.nii.gz"
    ct.touch()  # same bytes, new time
    report = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert report.processed == [] and SID in report.unchanged
    assert read_manifest(tiny_cache).subjects[SID].files[f"{SID}/ct.nii.gz"]["mtime_ns"] == ct.stat().st_mtime_ns
    no_record_reads(monkeypatch)
    assert run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS).processed == []


def test_removed_and_added_subjects_update_the_index(tiny_dataset, tiny_cache):
    shutil.move(tiny_dataset / SID, tiny_dataset.parent / "aside")
    assert run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS).removed == [SID]
    assert SID not in read_manifest(tiny_cache).subjects and verify_cache(tiny_cache).ok
    shutil.move(tiny_dataset.parent / "aside", tiny_dataset / SID)
    report = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert report.processed + report.reused == [SID]
    final = verify_cache(tiny_cache)
    assert final.ok, final.problems


def flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_verify_catches_a_flipped_byte_in_a_record_file_and_readers_name_it(tiny_cache):
    path = tiny_cache / read_manifest(tiny_cache).subjects.table[SID].record
    flip(path)
    report = verify_cache(tiny_cache)
    assert report.damaged_subjects == [SID] and "hash to its name" in str(report.problems[0])
    with pytest.raises(CacheError, match=f"subject {SID}: record file .* damaged"):
        read_manifest(tiny_cache).subjects[SID]


def test_verify_catches_a_flipped_byte_in_the_index_statistics(tiny_cache):
    manifest = read_manifest(tiny_cache)
    chunk = tiny_cache / manifest.slice_index / "label_voxels" / "c" / "0" / "0"
    flip(chunk)
    report = verify_cache(tiny_cache)
    assert not report.ok and any("slice index" in str(p) for p in report.problems), report.problems


def test_verify_catches_index_statistics_that_disagree_with_the_records_and_repair_fixes_them(tiny_dataset,
                                                                                             tiny_cache):
    manifest = read_manifest(tiny_cache)
    index = store.read_slice_index(tiny_cache, manifest.slice_index)
    wrong = store.SliceIndex(index.subjects, index.subject, index.slice, index.foreground, index.present,
                             index.label_voxels + 1, index.volume_ml, index.original_spacing, index.histogram + 1)
    shutil.rmtree(tiny_cache / manifest.slice_index)
    folder = store.write_slice_index(tiny_cache, wrong)
    (tiny_cache / folder).rename(tiny_cache / manifest.slice_index)
    problems = [str(p) for p in verify_cache(tiny_cache).problems]
    assert any("label voxel counts" in p for p in problems) and any("histogram differs" in p for p in problems)
    repair_cache(tiny_cache, tiny_dataset)  # no subject damaged: the repair builds the index from every subject
    assert verify_cache(tiny_cache).ok


# --- Format 2 (every record inside manifest.json), as the ctslice before this one wrote it ----------------------

def make_format2(cache):
    """Turn a format-3 cache into what the previous ctslice wrote: records inline, no records/ folder, a slice
    index without the per-subject arrays."""
    manifest = read_manifest(cache)
    data = json.loads((cache / "manifest.json").read_text())
    data["subjects"] = {sid: manifest.subjects[sid].to_json() for sid in sorted(manifest.subjects)}
    data["format_version"] = 2
    index = store.read_slice_index(cache, manifest.slice_index)
    shutil.rmtree(cache / manifest.slice_index)
    data["slice_index"] = store.write_slice_index(cache, store.SliceIndex(
        index.subjects, index.subject, index.slice, index.foreground, index.present))
    data["checksum"] = canonical_checksum(data)
    (cache / "manifest.json").write_text(json.dumps(data, indent=1))
    shutil.rmtree(cache / "records")
    shutil.rmtree(cache / ".readers")
    return data


def test_a_format2_cache_is_refused_by_readers_and_upgraded_once_by_preprocess(tiny_dataset, tiny_cache):
    statistics = read_manifest(tiny_cache).statistics
    old = make_format2(tiny_cache)
    for read in (read_manifest, cache_info, verify_cache, lambda c: SliceDataset(c, "train")):
        with pytest.raises(OldFormat, match="run `ctslice preprocess` once to upgrade it in place"):
            read(tiny_cache)
    report = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert report.processed == [] and report.reused == [] and len(report.unchanged) == 5
    [note] = [n for n in report.notes if "upgraded" in n]
    assert note.startswith("upgraded the cache's bookkeeping from format 2 to 3 in place (5 subject(s)")
    manifest = read_manifest(tiny_cache)
    assert {sid: r.to_json() for sid, r in manifest.subjects.items()} == old["subjects"]  # nothing misread
    assert manifest.statistics == statistics and manifest.splits == old["splits"]
    assert verify_cache(tiny_cache).ok
    again = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert not [n for n in again.notes if "upgraded" in n]
    assert verify_cache(tiny_cache).leftovers == []


def test_a_damaged_format2_manifest_is_refused_not_upgraded(tiny_dataset, tiny_cache):
    make_format2(tiny_cache)
    path = tiny_cache / "manifest.json"
    path.write_text(path.read_text().replace('"sha256"', '"sha257"', 1))
    before = path.read_bytes()
    with pytest.raises(CacheError, match="checksum"):
        run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert path.read_bytes() == before


def test_statistics_of_the_index_match_the_records(tiny_cache):
    manifest = read_manifest(tiny_cache)
    index = store.read_slice_index(tiny_cache, manifest.slice_index)
    stats = dataset_statistics(index, [r.slices for r in manifest.subjects.values()], manifest.labels)
    for i, name in sorted(manifest.labels.items())[1:]:
        voxels = [r.label_voxels[i] for r in manifest.subjects.values()]
        ml = sum(v * float(np.prod(r.spacing)) / 1000 for v, r in zip(voxels, manifest.subjects.values()))
        assert stats["structures"][name] == {"subjects": sum(v > 0 for v in voxels), "voxels": sum(voxels),
                                             "ml": pytest.approx(round(ml, 3), abs=1e-3)}


# --- Kills at each step of the commit and of the upgrade ----------------------------------------------------------

CHILD = """
import sys
from pathlib import Path

def pause(*_, **__):
    print("paused", flush=True)
    sys.stdin.readline()

point, data, cache = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
from ctslice.config import PreprocessConfig
from ctslice.preprocess import commit
from ctslice.cache import manifest, upgrade, store
if point == "before-swap":  # records, index and lease file written and synced; the manifest not yet replaced
    original = manifest.write_atomic
    def write_atomic(path, *a, **k):
        if Path(path).name == "manifest.json":
            pause()
        return original(path, *a, **k)
    manifest.write_atomic = write_atomic
elif point == "after-swap":  # the new manifest in place; leftovers not yet removed
    original_remove = commit.remove_leftovers
    commit.remove_leftovers = lambda *a, **k: (pause(), original_remove(*a, **k))[1]
elif point == "upgrade":  # format-2 cache: records and index written, the format-3 manifest not yet
    original_write = upgrade.write_manifest
    upgrade.write_manifest = lambda *a, **k: (pause(), original_write(*a, **k))[1]
from ctslice.preprocess.repair import repair_cache
from ctslice.preprocess.run import run_preprocess
run_preprocess(data, cache, PreprocessConfig(spacing=None, size=40, workers=0))
"""


def start_paused(point, data, cache):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, point, str(data), str(cache)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.stdout.readline().strip() != b"paused":
        pytest.fail(f"ended before {point}: {proc.communicate()[1].decode()[-2000:]}")
    return proc


def kill(proc):
    assert proc.poll() is None
    proc.kill()
    proc.communicate()


@pytest.mark.parametrize("point", ["before-swap", "after-swap"])
def test_a_run_killed_in_its_commit_leaves_the_old_or_new_version(tiny_dataset, tiny_cache, point):
    old = {sid: r.key for sid, r in read_manifest(tiny_cache).subjects.items()}
    modify_subject(tiny_dataset, SID)
    reader = SliceDataset(tiny_cache, "train")  # a reader of the old version, open across the kill
    kill(start_paused(point, tiny_dataset, tiny_cache))
    report = verify_cache(tiny_cache)
    assert report.ok, report.problems
    at_kill = {sid: r.key for sid, r in read_manifest(tiny_cache).subjects.items()}
    if point == "before-swap":
        assert at_kill == old
    else:
        assert at_kill[SID] != old[SID] and {k: v for k, v in at_kill.items() if k != SID} == \
            {k: v for k, v in old.items() if k != SID}
    assert all(reader[i]["image"].shape for i in range(len(reader)))  # still reads its version
    rerun = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert rerun.ok and rerun.processed == [] and (rerun.reused == [SID]) == (point == "before-swap")
    assert read_manifest(tiny_cache).subjects.table[SID].key != old[SID]
    reader.reader.close()
    run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)  # the previous version's files go one run later
    final = verify_cache(tiny_cache)
    assert final.ok and final.leftovers == [], final.leftovers


def test_an_upgrade_killed_midway_leaves_the_format2_cache_and_the_next_run_upgrades(tiny_dataset, tiny_cache):
    make_format2(tiny_cache)
    before = (tiny_cache / "manifest.json").read_bytes()
    kill(start_paused("upgrade", tiny_dataset, tiny_cache))
    assert (tiny_cache / "manifest.json").read_bytes() == before
    with pytest.raises(OldFormat):
        read_manifest(tiny_cache)
    report = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert report.ok and report.processed == [] and any("upgraded" in n for n in report.notes)
    run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    final = verify_cache(tiny_cache)
    assert final.ok and final.leftovers == [], final.leftovers


def test_bench_scale_measures_every_operation_and_cleans_up(tmp_path):
    from ctslice.bench.scale import OPERATIONS, bench_scale

    results = bench_scale([4, 6], workdir=tmp_path)
    assert [r.subjects for r in results] == [4, 6]
    assert all(set(r.seconds) == set(OPERATIONS) and r.bookkeeping_bytes > 0 for r in results)
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_changes_nothing_leaves_the_manifest_as_it_was(tiny_dataset, tiny_cache):
    """Not even written again (bytes and time stay), while status and info say the same as before; a root file
    the user deleted is put back."""
    path = tiny_cache / "manifest.json"
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    info, status = cache_info(tiny_cache).to_json(), cache_status(tiny_cache).to_json()
    (tiny_cache / "label_map.json").unlink()
    report = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert report.ok and not report.written and len(report.unchanged) == 5
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert cache_info(tiny_cache).to_json() == info and cache_status(tiny_cache).to_json() == status
    assert json.loads((tiny_cache / "label_map.json").read_text()) == read_manifest(tiny_cache).label_map
    modify_subject(tiny_dataset, SID)
    changed = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert changed.written and changed.processed == [SID] and path.read_bytes() != before[0]


def test_the_manifest_checksum_is_checked_on_its_bytes_and_older_layouts_still_read(tiny_cache):
    """The checksum is the file's first member and the sha256 of the file without it (checkable with sha256sum
    alone); a manifest laid out as ctslice wrote it before (checksum last) reads the same; a flipped byte in
    either is refused."""
    path = tiny_cache / "manifest.json"
    raw = path.read_bytes()
    data = json.loads(raw)
    member = f'"checksum":"{data["checksum"]}",'.encode()
    assert raw.startswith(b"{" + member)
    assert hashlib.sha256(raw.replace(member, b"", 1)).hexdigest() == data["checksum"] == canonical_checksum(data)
    table = read_manifest(tiny_cache).subjects.table
    older = json.dumps({**{k: v for k, v in data.items() if k != "checksum"}, "checksum": data["checksum"]})
    for text in (older.encode(), raw):
        path.write_bytes(text)
        assert read_manifest(tiny_cache).subjects.table == table
        flipped = text.replace(b'"totalsegmentator"', b'"totalsegmentatoR"')  # the layout's value
        assert flipped != text
        path.write_bytes(flipped)
        with pytest.raises(CacheError, match="checksum does not match"):
            read_manifest(tiny_cache)


def test_cache_stats_takes_the_summed_histogram_from_the_index(tiny_cache, monkeypatch, tmp_path):
    from ctslice.cache.statistics import summed_histogram
    from ctslice.view.stats import dataset_histogram, write_figures

    manifest = read_manifest(tiny_cache)
    expected = summed_histogram(tiny_cache, manifest.subjects.table.values())
    assert expected.sum() > 0
    no_record_reads(monkeypatch)

    def refuse(cache, folder):
        raise AssertionError(f"histogram of {folder} read")

    monkeypatch.setattr(store, "read_histogram", refuse)
    assert np.array_equal(dataset_histogram(tiny_cache, manifest), expected)
    assert [p.name for p in write_figures(tiny_cache, tmp_path / "stats", manifest)] == ["structures.png",
                                                                                          "dataset.png"]
