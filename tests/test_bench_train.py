"""The GPU speed check's command also runs on CPU (`make bench-gpu` runs it with --device cuda at 512 px).
The wiring is what is tested here, not the speed: a tiny U-Net from --config on 32 px slices, the default workers."""

import json

from typer.testing import CliRunner

from ctslice.cli import app
from ctslice.config import LoaderConfig


def test_bench_train_cpu_mode_prints_the_table(tmp_path):
    toml = tmp_path / "tiny.toml"
    toml.write_text("[model]\nbase_width = 4\ndepth = 3\n[loader]\nbatch_size = 4\n")  # (no workers: the default)
    result = CliRunner().invoke(app, ["bench", "train", "--device", "cpu", "--size", "32", "--steps", "3",
                                      "--config", str(toml), "--out", str(tmp_path),
                                      "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "samples/s" in result.output and "one epoch of 16,661 slices" in result.output
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["device"] == "cpu" and r["size"] == 32 and r["rows"][0]["workers"] == LoaderConfig().workers
    assert r["samples_per_s_loader"] > 0 and r["epoch_seconds"] > 0 and r["peak_memory_gib"] is None
    assert (r["model"]["base_width"], r["model"]["depth"], r["batch_size"]) == (4, 3, 4)  # --config reached it
