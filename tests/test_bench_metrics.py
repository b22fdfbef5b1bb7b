"""`ctslice bench metrics`: the wiring (the numbers themselves are not asserted: no wall-clock assertions)."""

import importlib.util

from typer.testing import CliRunner

from ctslice.cli import app


def test_bench_metrics_prints_our_times_and_monai_or_a_note():
    result = CliRunner().invoke(app, ["bench", "metrics", "--size", "24"])
    assert result.exit_code == 0, result.output
    assert "ctslice score_subject (all metrics)" in result.output and "ctslice surface Dice" in result.output
    if importlib.util.find_spec("monai") is None:
        assert "MONAI not importable" in result.output
    else:
        assert "x ours" in result.output


def test_bench_metrics_names_an_unreadable_label_file_in_one_line(tmp_path):
    bad = tmp_path / "labels.nii.gz"
    bad.write_bytes(b"not a nifti")
    result = CliRunner().invoke(app, ["bench", "metrics", "--labels", str(bad)])
    assert result.exit_code == 2 and "labels.nii.gz: cannot read a label volume" in result.output
    assert "Traceback" not in result.output
