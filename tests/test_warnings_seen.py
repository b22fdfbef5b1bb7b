"""Crops, missing masks and overlaps are summed up at the end of preprocess and by `cache info`."""

import json

import numpy as np
from typer.testing import CliRunner

from builders import box_mask, ts_subject

SHAPE = (24, 24, 4)
from ctslice.cache.manifest import read_manifest
from ctslice.cache.warnings import summary_lines, warning_summary
from ctslice.cli import app


def dataset(root):
    """a: liver and spleen overlap; b: no spleen file, its liver fills a whole slice (cropped at size 16)."""
    ts_subject(root, "a", shape=SHAPE, masks={"liver": box_mask(SHAPE, (5, 5, 1), (12, 12, 4)),
                                                "spleen": box_mask(SHAPE, (10, 10, 1), (14, 14, 4))})
    wide = np.zeros(SHAPE, np.uint8)
    wide[:, :, 2] = 1
    ts_subject(root, "b", shape=SHAPE, masks={"liver": wide}, seed=1)
    return root


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_preprocess_and_info_summarise_crop_missing_and_overlap(tmp_path):
    data, cache = dataset(tmp_path / "d"), tmp_path / "c"
    result = run("preprocess", data, "--cache", cache, "--workers", "0", "--spacing", "native", "--size", "16")
    assert result.exit_code == 0, result.output
    m = read_manifest(cache)
    b = m.subjects["b"]
    assert b.missing_structures == ["spleen"] and m.subjects["a"].missing_structures == []
    assert b.cropped_label_voxels == 24 * 24 - 16 * 16  # one slice of 24x24 cropped to 16x16
    summary = warning_summary(m)
    assert summary["missing_masks"]["worst"][0] == {"subject": "b", "masks": 1, "share": 0.5}
    assert summary["cropped"]["worst"][0]["subject"] == "b" and summary["cropped"]["voxels"] == 320
    assert summary["overlaps"]["subjects"] == 1 and summary["overlaps"]["worst"][0]["subject"] == "a"
    output = " ".join(result.output.split())
    for line in summary_lines(summary):
        assert line in output
    info = run("cache", "info", cache)
    assert info.exit_code == 0 and "warning" in info.output and "b (320, 55.6%)" in info.output
    as_json = json.loads(run("cache", "info", cache, "--json").output)
    assert as_json["warnings"]["missing_masks"]["subjects"] == 1


def test_a_clean_cache_has_no_warnings(tiny_cache):
    m = read_manifest(tiny_cache)
    summary = warning_summary(m)
    assert "cropped" not in summary and summary_lines({}) == []


def test_overlap_share_is_of_the_labelled_voxels_counted_once_and_never_above_100_percent(tmp_path):
    # Three masks on the same box (each voxel in three masks), cached at a coarser spacing than the original:
    # counting takeovers (2 per voxel) against the cached grid's voxels gave shares far above 100%.
    shape = (24, 24, 6)
    box = box_mask(shape, (4, 4, 1), (16, 16, 5))
    ts_subject(tmp_path / "d", "a", shape=shape, masks={"liver": box, "spleen": box, "kidney_left": box})
    cache = tmp_path / "c"
    result = run("preprocess", tmp_path / "d", "--cache", cache, "--workers", "0", "--spacing", "4", "--size", "16")
    assert result.exit_code == 0, result.output
    [worst] = warning_summary(read_manifest(cache))["overlaps"]["worst"]
    assert worst == {"subject": "a", "voxels": int(box.sum()), "share": 1.0}
    record = read_manifest(cache).subjects["a"]
    assert record.overlap_voxels == record.original_label_voxels == int(box.sum())
    assert f"a ({int(box.sum()):,}, 100.0%)" in " ".join(result.output.split())


def test_overlaps_of_an_older_record_are_shown_without_a_share(tmp_path):
    from ctslice.cache.manifest import Manifest, SubjectRecord
    from ctslice.cache.settings import CacheSettings
    from ctslice.config import PreprocessConfig

    record = SubjectRecord(id="old", path="subjects/old-0123456789abcdef", key="k", files={}, slices=1,
                           shape=[1, 2, 2], spacing=[1, 1, 1], geometry={}, label_voxels=[3, 1],
                           overlap_voxels=5)
    labels = {"0": "background", "1": "liver"}
    summary = warning_summary(Manifest(settings=CacheSettings.from_config(PreprocessConfig(), labels),
                                       label_map=labels, subjects={"old": record}))
    assert summary["overlaps"]["worst"] == [{"subject": "old", "voxels": 5, "share": None}]
    assert "most: old (5)" in summary_lines(summary)[0]
