"""Two processes with torchrun and gloo on CPU: the run completes, the ranks read disjoint training slices, and
the all-reduced val metrics equal a single-process evaluation of the saved weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ctslice.config import load_config
from ctslice.train.build import build_trainer, check_cache
from ctslice.train.loop import validate

SRC = str(Path(__file__).resolve().parents[1] / "src")

RANK_SCRIPT = """
import json, os, sys
from pathlib import Path
from ctslice.config import load_config
from ctslice.data.sampler import ClassAwareSampler
from ctslice.train.run import run_training

seen, original = [], ClassAwareSampler.__iter__
def recorded(self):  # the training items this rank's loader actually drew (0 workers: no read-ahead)
    for i in original(self):
        seen.append(i)
        yield i
ClassAwareSampler.__iter__ = recorded
run_training(sys.argv[1], sys.argv[2], load_config(None, json.loads(sys.argv[3])),
             resume=sys.argv[6] if len(sys.argv) > 6 else None)
Path(sys.argv[4], f"seen{os.environ['RANK']}.json").write_text(json.dumps(seen))
"""


def test_two_gloo_processes_share_the_epoch_and_reduce_val_metrics(cache32, tmp_path):
    settings = {"train": {"epochs": 1, "steps_per_epoch": 2, "device": "cpu", "wandb": "disabled", "log_every": 1,
                          "val_images": 1, "keep_checkpoints": 0},
                "model": {"base_width": 4, "depth": 3},
                "loader": {"batch_size": 4, "workers": 0, "oversample_fraction": 0.0}}
    (tmp_path / "rank.py").write_text(RANK_SCRIPT)
    run = tmp_path / "run"
    torchrun(tmp_path, cache32, run, settings)
    seen = [json.loads((tmp_path / f"seen{r}.json").read_text()) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 8 and not set(seen[0]) & set(seen[1])

    config = json.loads((run / "config.json").read_text())
    assert (config["world_size"], config["batch_size"], config["global_batch_size"]) == (2, 4, 8)
    record = json.loads((run / "training_history.json").read_text())["epochs"][0]
    ckpt = torch.load(run / "checkpoint_last.pth", weights_only=True)
    assert ckpt["state"]["step"] == 2 and ckpt["augment_rng"].shape[0] == 2  # both ranks' RNGs

    cfg = load_config(None, settings)
    t = build_trainer(cache32.resolve(), cfg, check_cache(cache32.resolve()))
    t.model.load_state_dict(ckpt["model"])
    alone = validate(t)  # one process, every val slice
    assert record["val/dice"] == pytest.approx(alone["dice"], abs=1e-12)
    assert list(record["val/dice_per_structure"].values()) == alone["dice_per_class"][1:]
    # (val/loss is not compared: its soft-Dice term is per batch, and the shards batch other slices together)

    settings["train"]["epochs"] = 2  # every rank resumes from the same checkpoint, its own augmentation RNG
    torchrun(tmp_path, cache32, run, settings, "--resume", str(run))
    history = json.loads((run / "training_history.json").read_text())["epochs"]
    assert [(r["epoch"], r["step"]) for r in history] == [(1, 2), (2, 4)]


def torchrun(tmp_path: Path, cache: Path, run: Path, settings: dict, *resume: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(tmp_path / "rank.py"), str(cache), str(run), json.dumps(settings), str(tmp_path), *resume],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
