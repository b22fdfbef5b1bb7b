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
