"""Issue 15's write paths of `ctslice train` and issue 14's "what travels with a checkpoint": one writer per run
folder, the best checkpoint never lost, checksums, hand-edited checkpoints, foreign or truncated run files, a full
disk while drawing a figure, a stop signal to the whole process group, the dataset's label values."""

import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from builders import box_mask, ct_volume, nnunet_dataset, save
from checkpoints import edit_checkpoint
from ctslice.config import EvaluateConfig, PreprocessConfig
from ctslice.errors import CtsliceError
from ctslice.evaluate.predict import run_predict
from ctslice.preprocess.run import run_preprocess
from ctslice.train import run as train_run
from ctslice.model.checkpoint import BEST, LAST, checksum, read_checkpoint, save_checkpoint
from ctslice.model.checkpoint import read_checkpoint_dict
from ctslice.train.progress import NullProgress
from ctslice.train.run import run_training
from test_train_resume import CHILD, SRC, config


# With "fetch": the train loader's worker announces its 10th batch (epoch 2, batch 3 of 7) and blocks there, so the
# trainer, done with batch 2, waits for it in the loader when the signal comes.
BLOCKING_WORKER = """
import os, signal, sys
from torch.utils.data import get_worker_info
from ctslice.data.dataset import SliceDataset

_original, _calls = SliceDataset.__getitems__, [0]

def _blocking(self, indices):
    if get_worker_info() is not None and self.split == "train":
        _calls[0] += 1
        if _calls[0] == 10:
            os.write(1, b"blocked\\n")
            while True:
                signal.pause()
    return _original(self, indices)

if sys.argv[3] == "fetch":
    SliceDataset.__getitems__ = _blocking
"""


def _child(tmp_path, cache, cfg, *args, **popen):
    script = tmp_path / "child.py"
    script.write_text(BLOCKING_WORKER + CHILD.format(json_cfg=repr(cfg.to_dict())))
    return subprocess.Popen([sys.executable, str(script), str(cache), *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": SRC}, **popen)


# 1. one writer per run folder
def test_a_second_train_into_a_running_folder_is_refused_naming_the_first(cache32, tmp_path):
    run = tmp_path / "run"
    first = _child(tmp_path, cache32, config(epochs=3), run, "wait")
    try:
        assert first.stdout.readline() == "step\n"  # the first run is inside epoch 2, holding the folder
        with pytest.raises(CtsliceError, match=rf"being written by another ctslice train \(pid {first.pid} on "):
            run_training(cache32, run, config(epochs=3), resume=run)
    finally:
        first.kill()  # kill -9: the kernel drops its lock
        first.communicate("", timeout=300)
    assert run_training(cache32, run, config(epochs=3), resume=run).history[-1]["epoch"] == 3


# 2. the best checkpoint is replaced atomically and never claimed before it is on disk
def test_a_kill_while_writing_the_best_checkpoint_leaves_no_claim_of_a_missing_best(cache32, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = train_run.save_checkpoint

    def killed_at_best(path, ckpt):
        if path.name == BEST:
            raise KeyboardInterrupt  # the process dies here
        real(path, ckpt)

    monkeypatch.setattr(train_run, "save_checkpoint", killed_at_best)
    with pytest.raises(KeyboardInterrupt):
        run_training(cache32, run, config(epochs=2))
    monkeypatch.undo()
    # last is written after best: no checkpoint_last.pth claims the best that was never written
    assert not (run / BEST).exists() and not (run / LAST).exists()
    result = run_training(cache32, run, config(epochs=2))  # (a folder without checkpoints: a new start is fine)
    assert result.best_checkpoint.is_file() and read_checkpoint(result.best_checkpoint)
    best = read_checkpoint_dict(run / BEST)["metrics"]["val/dice"]
    assert read_checkpoint_dict(run / LAST)["state"]["best_score"] == best


def test_resume_refuses_a_run_whose_best_checkpoint_is_missing(cache32, tmp_path):
    run = tmp_path / "run"
    run_training(cache32, run, config(epochs=1))
    (run / BEST).unlink()
    with pytest.raises(CtsliceError, match=rf"{BEST}: missing, but .*{LAST} records a best checkpoint"):
        run_training(cache32, run, config(epochs=2), resume=run)


# 3. checksums
def test_bit_flips_in_a_checkpoint_are_refused_or_change_nothing(tmp_path):
    path = tmp_path / "c.pth"
    save_checkpoint(path, {"model": {"w": torch.linspace(-1, 1, 4096)}, "preprocess": {"size": 32, "spacing": 1.5}})
    original = read_checkpoint_dict(path)
    data = path.read_bytes()
    refused = 0
    for position in range(0, len(data), max(len(data) // 200, 1)):
        flipped = bytearray(data)
        flipped[position] ^= 1 << (position % 8)
        path.write_bytes(bytes(flipped))
        try:
            loaded = read_checkpoint_dict(path)
        except CtsliceError as e:
            assert str(e).startswith(str(path)) and "\n" not in str(e)
            refused += 1
            continue
        assert checksum(loaded) == checksum(original)  # a flip torch ignores (zip metadata) changed nothing
        assert torch.equal(loaded["model"]["w"], original["model"]["w"])
    assert refused > 100  # (the weights' bytes alone are most of the file)


def test_a_checkpoint_from_before_checksums_loads_with_a_warning(tmp_path, capsys):
    path = tmp_path / "old.pth"
    torch.save({"format": "ctslice-checkpoint", "format_version": 1, "model": {}}, path)
    assert read_checkpoint_dict(path)["format_version"] == 1
    assert "old.pth: written by an older ctslice without a checksum" in capsys.readouterr().err


# 4. hand-edited settings are refused by the configuration's rules, before a model is built
@pytest.mark.parametrize("edit, message", [
    (lambda c: c["model_config"].update(depth=60), "depth must be an integer from 2 to 8"),
    # (the largest width and depth the config allows, at the largest size: over any machine's memory)
    (lambda c: (c["model_config"].update(base_width=1024, depth=8), c["preprocess"].update(size=4096)),
     "GiB for one slice, more than this machine's"),
    (lambda c: c["model_config"].update(base_width=10**7), "base_width must be an integer from 1 to 1024"),
    (lambda c: c["preprocess"].update(size=0), "size must be an integer from 16 to 4096"),
    (lambda c: c["preprocess"].update(size=200000), "size must be an integer from 16 to 4096"),
    (lambda c: c["preprocess"].update(spacing=float("nan")), "spacing must be"),
    (lambda c: c["preprocess"].update(spacing=1e-9), "spacing must be"),
    (lambda c: c.update(label_map={"0": "background", "x": "liver", "2": "spleen"}), "label_map must map"),
    (lambda c: c.update(label_map={"0": "background", "1": "liver", "5": "spleen"}), "label_map must map"),
    (lambda c: c["model_config"].update(base_width=5), "its weights hold"),
    (lambda c: c["preprocess"].update(size=42), "slices of 42 px do not fit a U-Net of depth 3"),
])
def test_hand_edited_checkpoint_settings_are_one_error(tiny_cache, tmp_path, monkeypatch, edit, message):
    from checkpoints import make_checkpoint
    from ctslice.model import unet as model_module

    path = edit_checkpoint(make_checkpoint(tiny_cache, tmp_path / "run" / "c.pth"), edit)
    monkeypatch.setattr(model_module.UNet, "__init__", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(CtsliceError, match=message) as e:
        read_checkpoint(path)
    assert str(e.value).startswith(f"{path}: not a usable checkpoint") and "\n" not in str(e.value)


def test_a_checkpoint_without_training_state_is_refused_for_resume_before_anything_is_built(tiny_cache, tmp_path,
                                                                                            monkeypatch):
    from checkpoints import make_checkpoint
    from ctslice.model import unet as model_module

    path = make_checkpoint(tiny_cache, tmp_path / "c.pth")  # evaluable, but no optimizer, schedule, RNGs, counters
    assert read_checkpoint(path).resume_problem() is not None
    monkeypatch.setattr(model_module.UNet, "__init__", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(CtsliceError, match=r"c.pth: cannot resume from this checkpoint: it holds no training state "
                                           r"\(optimizer, schedule, state, rng, augment_rng missing\)"):
        run_training(tiny_cache, tmp_path / "run", config(), resume=path)
    assert not (tmp_path / "run").exists()


# 5. a truncated history or another run's checkpoint in the folder
def test_resume_refuses_a_truncated_history_and_another_runs_checkpoint(cache32, tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    run_training(cache32, run, config(epochs=1))
    run_training(cache32, other, config(epochs=1))
    history = (run / "training_history.json").read_text()
    (run / "training_history.json").write_text(history[: len(history) // 2])
    with pytest.raises(CtsliceError, match="training_history.json: missing, truncated or not JSON"):
        run_training(cache32, run, config(epochs=2), resume=run)
    (run / "training_history.json").write_text(history)
    kept = (run / LAST).read_bytes()
    shutil.copy(other / LAST, run / LAST)
    with pytest.raises(CtsliceError, match=rf"{LAST}: belongs to another run"):
        run_training(cache32, run, config(epochs=2), resume=run)
    (run / LAST).write_bytes(kept)
    assert [r["epoch"] for r in run_training(cache32, run, config(epochs=2), resume=run).history] == [1, 2]


# 6. a full disk while drawing a figure
def test_a_full_disk_while_saving_a_figure_warns_and_training_goes_on(cache32, tmp_path, monkeypatch):
    import matplotlib.figure

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    messages = []

    class Collect(NullProgress):
        def message(self, text):
            messages.append(text)

    result = run_training(cache32, tmp_path / "run", config(epochs=2), progress=Collect())
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert read_checkpoint_dict(result.last_checkpoint)["epoch"] == 2
    warned = [m for m in messages if m.startswith("warning:")]
    assert any("training_history.png: cannot write the figure (No space left on device)" in m for m in warned)
    assert not [p for p in (tmp_path / "run").iterdir() if p.suffix == ".png" or ".tmp" in p.name]


# 7. SIGTERM to the whole process group, loader workers included
@pytest.mark.parametrize("where, said", [("wait", "step\n"), ("fetch", "blocked\n")])
def test_sigterm_to_the_process_group_with_loader_workers_saves_and_resumes(cache32, tmp_path, where, said):
    run = tmp_path / "run"
    base = config(epochs=3)
    cfg = dataclasses.replace(base, loader=dataclasses.replace(base.loader, workers=1, prefetch_factor=1))
    child = _child(tmp_path, cache32, cfg, run, where, start_new_session=True)  # its own process group
    # "wait": the trainer is inside step 2 of epoch 2, its worker alive; "fetch": the worker is stuck on batch 3
    # and the trainer, done with batch 2, waits for it
    assert child.stdout.readline() == said
    os.killpg(child.pid, signal.SIGTERM)  # what timeout, shells and schedulers do: every process of the group
    _, err = child.communicate("", timeout=300)
    assert child.returncode == 2, err
    assert "Traceback" not in err and "killed by signal" not in err
    assert "SIGTERM" in err and "stopped after step" in err and f"--resume {run}" in err
    state = read_checkpoint_dict(run / LAST)["state"]
    assert state["epoch"] == 1 and state["batch"] == 2
    resumed = _child(tmp_path, cache32, cfg, run, "run", run)
    _, err = resumed.communicate("", timeout=300)
    assert resumed.returncode == 0, err
    assert [r["epoch"] for r in json.loads((run / "training_history.json").read_text())["epochs"]] == [1, 2, 3]


# 8. the dataset's own label values travel with the checkpoint
def test_predict_with_a_copied_checkpoint_and_no_cache_writes_the_datasets_label_values(tmp_path):
    label = box_mask((16, 16, 6), (1, 1, 1), (7, 7, 5))
    label[8:14, 8:14, 1:5] = 7
    label[label == 1] = 3
    nnunet_dataset(tmp_path / "nn", {f"case{i}": label for i in range(4)},
                   {"background": 0, "liver": 3, "spleen": 7})
    cache = tmp_path / "cache"
    run_preprocess(tmp_path / "nn", cache, PreprocessConfig(spacing=None, size=16, workers=0))
    run_training(cache, tmp_path / "run", config(epochs=1, val_images=0))
    moved = tmp_path / "elsewhere" / "model.pth"
    moved.parent.mkdir()
    shutil.copy(tmp_path / "run" / BEST, moved)
    shutil.rmtree(cache)  # another machine: no cache

    def spleen_everywhere(ckpt):  # index 2 (spleen, the dataset's value 7) wins every voxel
        ckpt["model"]["head.bias"] = torch.tensor([0.0, 0.0, 100.0])

    edit_checkpoint(moved, spleen_everywhere)
    save(tmp_path / "ct" / "new.nii.gz", ct_volume((16, 16, 6), 9))
    [outcome] = run_predict(moved, tmp_path / "ct" / "new.nii.gz", None, EvaluateConfig(device="cpu"))
    assert outcome.error is None, outcome.error
    assert set(np.unique(np.asarray(nib.load(outcome.output).dataobj)).tolist()) == {7}
    assert json.loads(outcome.output.with_name("new_seg.labels.json").read_text()) == {
        "0": "background", "3": "liver", "7": "spleen"}
