"""Exact resume (cosine, plateau, nnU-Net's SGD + poly + deep supervision + augmentations), refusals, a real SIGTERM mid-epoch, kill -9 during checkpoint writes."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ctslice.cache.manifest import read_manifest, write_manifest
from ctslice.config import load_config
from ctslice.errors import CtsliceError
from ctslice.model.checkpoint import read_checkpoint_dict, save_checkpoint
from ctslice.train.checkpoint import remove_stale_temporaries
from ctslice.train.run import run_training

SRC = str(Path(__file__).resolve().parents[1] / "src")
TIMING = {"epoch_time", "samples_per_second", "perf/data_wait_fraction", "perf/step_time"}


def config(model=None, augment=None, **train):
    return load_config(None, {
        "train": {"epochs": 2, "wandb": "disabled", "log_every": 1, "val_images": 1, "keep_checkpoints": 0,
                  "cosine_t_max": 2, "plateau_patience": 0, **train},
        "model": {"base_width": 4, "depth": 3, **(model or {})}, "augment": augment or {},
        "loader": {"batch_size": 8, "workers": 0}})


# nnU-Net's recipe (configs/nnunet2d.toml): SGD + poly, deep supervision (depth 4: one extra head on 32 px
# slices) and every augmentation drawn, elastic and mirroring included, so their RNG draws are resumed too
NNUNET = dict(optimizer="sgd", scheduler="poly", model={"depth": 4, "deep_supervision": True},
              augment={f"{name}_probability": 0.5 for name in ("elastic", "mirror", "noise", "blur", "multiply",
                                                               "contrast", "lowres", "gamma", "gamma_invert")})


def weights(run: Path) -> dict:
    return torch.load(run / "checkpoint_last.pth", weights_only=True)["model"]


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ha, hb = (json.loads((r / "training_history.json").read_text()) for r in (a, b))
    strip = lambda records: [{k: v for k, v in r.items() if k not in TIMING} for r in records]  # noqa: E731
    assert strip(ha["epochs"]) == strip(hb["epochs"]) and ha["batches"] == hb["batches"]


@pytest.mark.parametrize("recipe", [dict(scheduler="cosine"), dict(scheduler="plateau"), NNUNET],
                         ids=["cosine", "plateau", "nnunet2d"])
def test_one_epoch_then_resume_is_bitwise_the_two_epoch_run(cache32, tmp_path, recipe):
    run_training(cache32, tmp_path / "whole", config(**recipe))
    run_training(cache32, tmp_path / "parts", config(**recipe, epochs=1))
    resumed = run_training(cache32, tmp_path / "parts", config(**recipe), resume=tmp_path / "parts")
    assert [r["epoch"] for r in resumed.history] == [1, 2]  # continued, nothing duplicated or lost
    assert_same_run(tmp_path / "whole", tmp_path / "parts")
    ckpt = read_checkpoint_dict(tmp_path / "parts" / "checkpoint_last.pth")
    assert ckpt["splits"] == read_manifest(cache32).splits and ckpt["state"]["batch"] == 0


def test_resume_refuses_another_model_or_cache_and_unreadable_checkpoints(cache32, tmp_path):
    run = tmp_path / "run"
    run_training(cache32, run, config(epochs=1))
    wider = load_config(None, {**config(epochs=2).to_dict(), "model": {"base_width": 8, "depth": 3}})
    with pytest.raises(CtsliceError, match=r"checkpoint_last.pth: cannot resume.*the model \(width 4"):
        run_training(cache32, run, wider, resume=run)
    other = tmp_path / "cache"
    import shutil

    shutil.copytree(cache32, other)
    manifest = read_manifest(other)
    manifest.settings = dataclasses.replace(manifest.settings, hu_max=manifest.settings.hu_max - 1)  # other arrays
    write_manifest(other, manifest)
    with pytest.raises(CtsliceError, match="the cache's content hash"):
        run_training(other, run, config(), resume=run)
    with pytest.raises(CtsliceError, match=r"the input intensity \(window_min None -> -200"):
        run_training(cache32, run, config(window_min=-200, window_max=300), resume=run)
    with pytest.raises(CtsliceError, match=r"already trained 1 epoch\(s\) and --epochs is 1; to train longer give "
                                           r"--epochs above 1"):
        run_training(cache32, run, config(epochs=1), resume=run)
    data = (run / "checkpoint_last.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:len(data) // 2])
    with pytest.raises(CtsliceError, match="cut.pth: not a readable checkpoint"):
        run_training(cache32, run, config(), resume=tmp_path / "cut.pth")
    ckpt = read_checkpoint_dict(run / "checkpoint_last.pth")
    ckpt["model"] = {k: v[..., :1] if v.dim() else v for k, v in ckpt["model"].items()}  # same config, weights of another shape
    save_checkpoint(tmp_path / "other.pth", ckpt)
    with pytest.raises(CtsliceError, match="other.pth: cannot resume from this checkpoint"):
        run_training(cache32, tmp_path / "branch", config(), resume=tmp_path / "other.pth")


CHILD = """
import sys
from ctslice.config import load_config
from ctslice.errors import CtsliceError
from ctslice.train.progress import NullProgress
from ctslice.train.run import run_training

class WaitAtStep(NullProgress):
    # with "wait": after the second step of epoch 2 say so, then block until the parent closes stdin
    def start_epoch(self, epoch, epochs, batches):
        self.epoch = epoch
    def update(self, done, loss, dice, samples_per_s):
        if sys.argv[3] == "wait" and self.epoch == 2 and done == 2:
            print("step", flush=True)
            sys.stdin.read()

cfg = load_config(None, {json_cfg})
try:
    run_training(sys.argv[1], sys.argv[2], cfg, resume=sys.argv[4] if len(sys.argv) > 4 else None,
                 progress=WaitAtStep())
except CtsliceError as e:
    print(f"error: {{e}}", file=sys.stderr)
    sys.exit(2)
"""


def test_sigterm_mid_epoch_writes_a_checkpoint_at_that_step_and_resume_matches(cache32, tmp_path):
    # Every run in a fresh process of its own, so that all three compute with the same process-wide settings
    # (threads, kernels), whatever earlier tests did in this one.
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(json_cfg=repr(config(epochs=3).to_dict())))
    run = tmp_path / "run"

    def start(*args):
        return subprocess.Popen([sys.executable, str(script), str(cache32), *map(str, args)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": SRC})

    child = start(run, "wait")
    assert child.stdout.readline() == "step\n"  # the child is inside step 2 of epoch 2
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate("", timeout=300)  # closing stdin lets it finish the step
    assert child.returncode == 2, err
    assert "SIGTERM: stopped after step" in err and f"--resume {run}" in err
    state = read_checkpoint_dict(run / "checkpoint_last.pth")["state"]
    assert state["epoch"] == 1 and state["batch"] == 2  # mid-epoch: at most one step of work lost

    for child in (start(run, "run", run), start(tmp_path / "whole", "run")):
        _, err = child.communicate("", timeout=300)
        assert child.returncode == 0, err
    history = json.loads((run / "training_history.json").read_text())["epochs"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert_same_run(tmp_path / "whole", run)


KILLED = """
import sys, torch
from ctslice.model.checkpoint import save_checkpoint
for i in range(100000):
    save_checkpoint(sys.argv[1], {"model": {"w": torch.full((1 << 18,), float(i))}, "i": i})
    if i == 0:
        print("saved", flush=True)
"""


def test_kill_9_while_writing_leaves_the_previous_checkpoint_readable(tmp_path):
    path = tmp_path / "checkpoint_last.pth"
    child = subprocess.Popen([sys.executable, "-c", KILLED, str(path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": SRC})
    assert child.stdout.readline() == "saved\n"  # now it is rewriting the file over and over
    child.kill()
    child.wait()
    ckpt = read_checkpoint_dict(path)
    assert bool((ckpt["model"]["w"] == ckpt["i"]).all())  # a whole checkpoint, never a mix or a truncation
    (tmp_path / ".checkpoint_best.pth.999999999.tmp").write_bytes(b"half")  # (no such process)
    (tmp_path / "notes.tmp").write_bytes(b"")
    remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.pth", "notes.tmp"]


def test_resumed_run_continues_the_same_offline_wandb_run(cache32, tmp_path, offline_wandb):
    run = tmp_path / "run"
    run_training(cache32, run, config(epochs=1, wandb="offline", steps_per_epoch=1))
    first = json.loads((run / "wandb_run.json").read_text())["id"]
    run_training(cache32, run, config(epochs=2, wandb="offline", steps_per_epoch=1), resume=run)
    assert json.loads((run / "wandb_run.json").read_text())["id"] == first
    assert list((run / "wandb").glob(f"offline-run-*-{first}"))  # (one folder per session, named by the second)


def test_a_cache_error_in_a_loader_worker_is_one_error_line(cache32, tmp_path, monkeypatch):
    from torch.utils.data import get_worker_info
    from typer.testing import CliRunner

    from ctslice.cli import app
    from ctslice.data.dataset import SliceDataset
    from ctslice.errors import CacheError

    original = SliceDataset.__getitems__

    def damaged(self, indices):  # (forked workers inherit the patch; the trainer's own reads stay fine)
        if get_worker_info() is not None:
            raise CacheError("cache: chunk file subjects/x/image/c/3/0/0 is missing, the cache is damaged")
        return original(self, indices)

    monkeypatch.setattr(SliceDataset, "__getitems__", damaged)
    result = CliRunner().invoke(app, ["train", "--cache", str(cache32), "--out", str(tmp_path / "run"),
                                      "--epochs", "1", "--workers", "1", "--wandb", "disabled", "--device", "cpu"])
    assert result.exit_code == 2
    assert "error: cache: chunk file subjects/x/image/c/3/0/0 is missing" in result.output
    assert "Traceback" not in result.output and "worker process" not in result.output


def test_resume_refuses_a_cache_whose_train_or_val_subjects_changed(cache32, tmp_path):
    """Same settings and label map (same content hash) but re-split: resuming would train on val subjects."""
    run = tmp_path / "run"
    run_training(cache32, run, config(epochs=1))
    other = tmp_path / "cache"
    import shutil

    shutil.copytree(cache32, other)
    manifest = read_manifest(other)
    moved = manifest.splits["train"][0]
    manifest.splits["train"].remove(moved)
    manifest.splits["val"].append(moved)
    write_manifest(other, manifest)
    with pytest.raises(CtsliceError, match=rf"the train subjects \(-{moved}.*the val subjects \(\+{moved}"):
        run_training(other, run, config(), resume=run)
    manifest = read_manifest(cache32)
    manifest.subjects[moved].key = "0" * 16  # as after its mask was corrected and preprocess ran again
    write_manifest(other, manifest)
    with pytest.raises(CtsliceError, match=rf"the content of 1 subject\(s\) \({moved}: their source files"):
        run_training(other, run, config(), resume=run)


def test_a_full_disk_while_writing_a_checkpoint_is_one_error_and_keeps_the_previous(tmp_path, monkeypatch):
    import errno

    from ctslice.train.loggers import write_json_atomic

    path = tmp_path / "checkpoint_last.pth"
    save_checkpoint(path, {"epoch": 1})

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CtsliceError, match="checkpoint_last.pth: cannot write checkpoint \\(No space left on device"):
        save_checkpoint(path, {"epoch": 2})
    assert read_checkpoint_dict(path)["epoch"] == 1 and [p.name for p in tmp_path.iterdir()] == [path.name]
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(CtsliceError, match="history.json: cannot write \\(No space left"):
        write_json_atomic(tmp_path / "history.json", {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_a_file_that_is_no_checkpoint_gets_no_advice_to_load_it_unsafely(tmp_path):
    (tmp_path / "config.json").write_text('{"epochs": 2}')  # e.g. --resume RUN/config.json by mistake
    with pytest.raises(CtsliceError) as err:
        read_checkpoint_dict(tmp_path / "config.json")
    assert "config.json: not a readable checkpoint" in str(err.value) and "weights_only" not in str(err.value)
