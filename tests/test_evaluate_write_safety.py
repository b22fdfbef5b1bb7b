"""Where `evaluate` writes and how it ends: never into the cache or the dataset (refused as `train --out` is),
a stop signal finishes the subject at hand and says what is left, a full disk is one line naming the file, and
`--save-predictions` in cache space saves the arrays it scored (the scores can be recomputed from the files)."""

import pytest
from typer.testing import CliRunner

from checkpoints import make_checkpoint
from ctslice.cli import app
from ctslice.config import EvaluateConfig, LoaderConfig
from ctslice.errors import CtsliceError
from ctslice.evaluate.run import run_evaluation
from ctslice.preprocess.sources import discover

CFG = EvaluateConfig(device="cpu", worst_subjects=1)
LOADER = LoaderConfig(workers=0, batch_size=8)


@pytest.mark.parametrize("where", ["cache", "inside the cache", "dataset root", "a dataset subject"])
def test_out_in_the_cache_or_the_dataset_is_refused_before_anything_is_written(tiny_cache, tiny_dataset, tmp_path,
                                                                                where):
    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "checkpoint_best.pth")
    sid = discover(tiny_dataset).subjects[0].id
    out = {"cache": tiny_cache, "inside the cache": tiny_cache / "subjects" / "eval", "dataset root": tiny_dataset,
           "a dataset subject": tiny_dataset / sid}[where]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    ids = [s.id for s in discover(tiny_dataset).subjects]
    result = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(ckpt), "--split", "train", "--out", str(out),
                                      "--save-predictions", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 2 and "error:" in result.output and "choose another --out" in result.output, \
        result.output
    assert "Traceback" not in result.output
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written anywhere
    assert [s.id for s in discover(tiny_dataset).subjects] == ids
    assert not discover(tiny_dataset).problems


def test_the_shared_check_is_the_one_train_uses(tiny_cache, tmp_path):
    from ctslice.cache.manifest import read_manifest
    from ctslice.train.rundir import check_run_folder

    with pytest.raises(CtsliceError, match="the run folder and the cache"):
        check_run_folder(tiny_cache / "x", tiny_cache, read_manifest(tiny_cache))
    with pytest.raises(CtsliceError, match="the evaluation folder and the cache"):
        run_evaluation(make_checkpoint(tiny_cache, tmp_path / "r" / "c.pth"), CFG, LOADER, split="train",
                       out=tiny_cache / "x")


@pytest.mark.parametrize("victim", ["evaluation.json", "per_class.csv", ".nii.gz"])
def test_a_full_disk_while_saving_the_output_is_one_line_naming_the_file(tiny_cache, tmp_path, monkeypatch, victim):
    import errno
    import os

    from ctslice import files

    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "checkpoint_best.pth")
    real = os.replace

    def full(src, dst):
        if str(dst).endswith(victim):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", full)  # the one atomic writer
    out = tmp_path / "ev"
    result = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(ckpt), "--split", "train", "--out", str(out),
                                      "--save-predictions", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "No space left on device" in line and victim in line and str(out) in line
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]  # no temporary file left behind


def _dice(pred, ref, index):
    p, r = pred == index, ref == index
    tp, fp, fn = (p & r).sum(), (p & ~r).sum(), (~p & r).sum()
    return float("nan") if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def test_cache_space_scores_can_be_recomputed_from_the_saved_files(tiny_cache, tmp_path):
    import json
    import math

    import nibabel as nib
    import numpy as np

    from ctslice.cache.manifest import read_manifest

    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "checkpoint_best.pth", seed=3)
    result = run_evaluation(ckpt, CFG, LOADER, split="train", out=tmp_path / "ev", save_predictions=True)
    doc = json.loads((result.out / "evaluation.json").read_text())
    assert doc["settings"]["saved_predictions"] == {"predictions": "predictions", "grid": "original",
                                                    "scored": "scored_cache_space"}
    assert any("original grid" in n and "scored_cache_space" in n for n in result.notes)
    manifest = read_manifest(tiny_cache)
    labels = json.loads((result.out / "scored_cache_space" / "labels.json").read_text())
    checked = 0
    for sid in result.subjects:
        pred = nib.load(result.out / "scored_cache_space" / f"{sid}_prediction.nii.gz")
        ref = nib.load(result.out / "scored_cache_space" / f"{sid}_reference.nii.gz")
        assert pred.shape == tuple(manifest.subjects[sid].shape)
        assert np.allclose(pred.header.get_zooms(), manifest.subjects[sid].spacing)  # the spacing scored with
        p, r = np.asarray(pred.dataobj), np.asarray(ref.dataobj)
        for index, name in labels.items():
            if index == "0" or name in manifest.subjects[sid].missing_structures:
                continue
            reported = doc["per_subject"][sid][name]["dice"]
            mine = _dice(p, r, int(index))
            assert (reported is None and math.isnan(mine)) or reported == pytest.approx(mine, abs=1e-12), \
                (sid, name)
            checked += 1
    assert checked > 0


CHILD = """
import sys
from ctslice.evaluate import run

real, calls = run.score_subject, []

def handshake(*args, **kwargs):  # while the first subject is scored: tell the parent, wait until it has signalled
    calls.append(1)
    if len(calls) == 1:
        sys.stdout.write("scoring\\n")
        sys.stdout.flush()
        sys.stdin.read(1)  # the parent sends SIGTERM first, then writes: the signal has arrived when this returns
    return real(*args, **kwargs)

run.score_subject = handshake
from ctslice.cli import app
app(sys.argv[1:], prog_name="ctslice")
"""


def test_sigterm_finishes_the_current_subject_and_says_what_is_left(tiny_cache, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import nibabel as nib

    from ctslice.cache.manifest import read_manifest

    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "checkpoint_best.pth")
    out = tmp_path / "ev"
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "evaluate", "--checkpoint", str(ckpt), "--split", "train",
                             "--out", str(out), "--save-predictions", "--device", "cpu", "--workers", "0"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout.readline() == b"scoring\n"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(input=b"x", timeout=600)  # the write releases the child; the timeout guards a hang
    err = err.decode()
    assert proc.returncode == 2 and "Traceback" not in err, err
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    subjects = read_manifest(tiny_cache).splits["train"]
    assert f"stopped by SIGTERM after 1 of {len(subjects)} subject(s)" in line and "not evaluated:" in line
    saved = sorted(p.name for p in (out / "predictions").glob("*.nii.gz"))
    assert len(saved) == 1 and all(s in line for s in subjects if f"{s}.nii.gz" not in saved)
    assert nib.load(out / "predictions" / saved[0]).get_fdata().shape  # complete, readable
    assert not (out / "evaluation.json").exists() and not [p for p in out.rglob("*") if ".tmp" in p.name]
