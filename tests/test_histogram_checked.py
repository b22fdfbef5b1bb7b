"""The foreground HU histograms (issue 15): verify checks them like every other array, and a preprocess run that
has to sum them over a damaged one counts it again from the subject's slices with one line, never a traceback or
skewed statistics. (A run that changes nothing reads no subject's histogram: the summed one is kept in the slice
index, cache/slice_index.py; these tests remove that index so that the run sums them all again.)"""

import shutil

import pytest
from typer.testing import CliRunner

from conftest import TINY_SETTINGS

from ctslice.cache import layout, store
from ctslice.cache.manifest import read_manifest
from ctslice.cache.verify import verify_cache
from ctslice.cli import app
from ctslice.preprocess.repair import repair_cache
from ctslice.preprocess.run import run_preprocess

SID = "demo0001"


def histogram_chunk(cache):
    return cache / read_manifest(cache).subjects[SID].path / layout.chunk_key(store.HISTOGRAM, 0)


def without_index(cache):
    """Remove the slice index, so that the next run builds it again from every subject (histograms summed)."""
    shutil.rmtree(cache / read_manifest(cache).slice_index)
    return cache


def flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


DAMAGE = {"missing": lambda p: p.unlink(), "flipped byte": flip}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_verify_finds_a_damaged_histogram_and_repair_fixes_it(tiny_dataset, tiny_cache, damage):
    DAMAGE[damage](histogram_chunk(tiny_cache))
    report = verify_cache(tiny_cache)
    assert report.damaged_subjects == [SID] and store.HISTOGRAM in str(report.problems[0]), report.problems
    repair_cache(tiny_cache, tiny_dataset)
    assert verify_cache(tiny_cache).ok


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_preprocess_over_a_damaged_histogram_says_so_and_keeps_the_statistics_right(tiny_dataset, tiny_cache,
                                                                                    damage):
    intensity = read_manifest(tiny_cache).statistics["intensity"]
    DAMAGE[damage](histogram_chunk(tiny_cache))
    quiet = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)  # nothing changed: no histogram is read
    assert quiet.ok and not [n for n in quiet.notes if "intensity histogram" in n]
    assert read_manifest(tiny_cache).statistics["intensity"] == intensity
    report = run_preprocess(tiny_dataset, without_index(tiny_cache), TINY_SETTINGS)
    assert report.ok and report.processed == []
    assert read_manifest(tiny_cache).statistics["intensity"] == intensity  # not skewed by a missing subject
    [note] = [n for n in report.notes if "intensity histogram" in n]
    assert note.startswith(f"{SID}: ") and "verify --repair" in note


def test_cli_preprocess_over_a_flipped_histogram_byte_gives_one_line(tiny_dataset, tiny_cache):
    flip(histogram_chunk(tiny_cache))
    without_index(tiny_cache)
    result = CliRunner().invoke(app, ["preprocess", str(tiny_dataset), "--cache", str(tiny_cache), "--workers", "0"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert f"{SID}: its stored intensity histogram is damaged" in result.output
