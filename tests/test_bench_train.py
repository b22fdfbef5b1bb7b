"""The GPU speed check's command also runs on CPU (`make bench-gpu` runs it with --device cuda at 512 px)."""

import json

from typer.testing import CliRunner

from ctslice.cli import app
from ctslice.config import LoaderConfig


def test_bench_train_cpu_mode_prints_the_table(tmp_path):
    result = CliRunner().invoke(app, ["bench", "train", "--device", "cpu", "--size", "64", "--steps", "3",
                                      "--out", str(tmp_path), "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "samples/s" in result.output and "one epoch of 16,661 slices" in result.output
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["device"] == "cpu" and r["size"] == 64 and r["rows"][0]["workers"] == LoaderConfig().workers
    assert r["samples_per_s_loader"] > 0 and r["epoch_seconds"] > 0 and r["peak_memory_gib"] is None
