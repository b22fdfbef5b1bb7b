"""Evaluate's guards and reports: output-path problems before inference, training subjects named, worker errors as
their own one line, malformed or truncated checkpoints named, --data needs --original-space, best and worst
disjoint, unscored cells empty, nnU-Net label values on saved predictions."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from torch._utils import ExceptionWrapper
from typer.testing import CliRunner

from builders import box_mask, nnunet_dataset
from checkpoints import edit_checkpoint, make_checkpoint
from ctslice.cache.manifest import read_manifest
from ctslice.cli import app
from ctslice.config import EvaluateConfig, LoaderConfig, PreprocessConfig
from ctslice.data.loader import original_worker_error
from ctslice.errors import CacheError, CtsliceError, InputError
from ctslice.evaluate import run as evaluate_run
from ctslice.model.checkpoint import read_checkpoint
from ctslice.evaluate.export import write_prediction
from ctslice.evaluate.metrics import score_subject
from ctslice.evaluate.report import SUBJECT_COLUMNS, _write_csv, aggregate, ranked, summary_table
from ctslice.evaluate.run import run_evaluation
from ctslice.preprocess.run import run_preprocess

CFG = EvaluateConfig(device="cpu", worst_subjects=1)
LOADER = LoaderConfig(workers=0, batch_size=8)


def _edit(path, change):
    return edit_checkpoint(path, change)  # (with a fresh checksum: the edit, not the checksum, is what is tested)


def test_an_output_folder_that_is_a_file_fails_before_any_inference(tiny_cache, tmp_path, monkeypatch):
    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "ckpt.pth")
    (tmp_path / "evfile").write_text("x")
    monkeypatch.setattr(evaluate_run, "predict_volumes", lambda *a, **k: pytest.fail("inference ran"))
    with pytest.raises(CtsliceError, match="not a folder"):
        run_evaluation(ckpt, CFG, LOADER, split="train", out=tmp_path / "evfile")
    with pytest.raises(CtsliceError, match="cannot create"):
        run_evaluation(ckpt, CFG, LOADER, split="train", out=tmp_path / "evfile" / "sub")


def test_subjects_the_model_was_trained_on_are_named(tiny_cache, tmp_path):
    train = read_manifest(tiny_cache).splits["train"]
    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "ckpt.pth")
    old = run_evaluation(ckpt, CFG, LOADER, split="train", out=tmp_path / "old")
    assert old.warnings == [] and "cannot be checked" in old.notes[0]
    _edit(ckpt, lambda c: c.update(splits={"train": train[:2], "val": train[2:]}))
    result = run_evaluation(ckpt, CFG, LOADER, split="train", out=tmp_path / "ev")
    assert result.notes == [] and f"2 of {len(train)}" in result.warnings[0] and train[0] in result.warnings[0]
    doc = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert doc["settings"]["train_overlap"] == sorted(train[:2]) and doc["settings"]["warnings"] == result.warnings


def test_a_worker_error_reaches_the_user_as_its_own_line():
    for error in (CacheError("cache: chunk file x is missing"), InputError("s1", "ct.nii.gz", "truncated")):
        try:
            try:
                raise error
            except CtsliceError:
                ExceptionWrapper(where="in DataLoader worker process 0").reraise()
        except Exception as wrapped:
            assert "Traceback" in str(wrapped)
            original = original_worker_error(wrapped)
        assert isinstance(original, CtsliceError) and str(original) == str(error)
    assert original_worker_error(RuntimeError("Caught ValueError in DataLoader worker process 0.\nx: y")) is None


def test_a_damaged_chunk_read_by_a_loader_worker_is_one_line(tiny_cache, tmp_path):
    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "ckpt.pth")
    for chunk in (tiny_cache / "subjects").glob("*/image/c/0/0/0"):
        chunk.unlink()
    result = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(ckpt), "--split", "train", "--workers", "1",
                                      "--device", "cpu", "--out", str(tmp_path / "ev")])
    assert result.exit_code == 2 and "error:" in result.output and "missing" in result.output, result.output
    assert "Traceback" not in result.output and "DataLoader worker" not in result.output


@pytest.mark.parametrize("change, words", [
    (lambda c: c["model_config"].pop("depth"), "model_config lacks 'depth'"),
    (lambda c: c.update(context_slices=3), "context_slices 3 differs"),
    (lambda c: c.update(intensity={}), "intensity lacks 'clip'"),
    (lambda c: c["model_config"].update(base_width="4"), "base_width"),
])
def test_malformed_checkpoints_are_named_errors(tiny_cache, tmp_path, change, words):
    path = _edit(make_checkpoint(tiny_cache, tmp_path / "ckpt.pth"), change)
    with pytest.raises(CtsliceError, match="ckpt.pth: not a usable checkpoint") as e:
        read_checkpoint(path)
    assert words in str(e.value)


def test_a_truncated_checkpoint_says_so(tiny_cache, tmp_path):
    path = make_checkpoint(tiny_cache, tmp_path / "ckpt.pth")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CtsliceError, match="ckpt.pth: not a readable checkpoint: truncated, damaged or not a checkpoint"):
        read_checkpoint(path)


def test_data_without_original_space_is_an_error(tiny_cache, tiny_dataset, tmp_path):
    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "ckpt.pth")
    result = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(ckpt), "--data", str(tiny_dataset)])
    assert result.exit_code == 2 and "error: --data is used only with --original-space" in result.output


def test_few_structures_best_and_worst_do_not_overlap_and_unscored_cells_are_empty(tmp_path):
    labels = {0: "background", 1: "liver", 2: "spleen", 3: "kidney"}
    ref = np.zeros((4, 6, 6), np.uint8)
    ref[1:3, 1:3, 1:3], ref[1:3, 3:5, 3:5] = 1, 2
    pred = ref.copy()
    pred[1, 1, 1] = 0
    rows = [score_subject(pred, ref, (1, 1, 1), 4, 1.0, skip=[3]), score_subject(pred, ref, (1, 1, 1), 4, 1.0)]
    summary, per_class, per_subject = aggregate(["a", "b"], rows, labels, EvaluateConfig())
    best, worst = ranked(per_class)
    assert not {r["structure"] for r in best} & {r["structure"] for r in worst}
    assert {r["structure"] for r in best + worst} == {"liver", "spleen"}  # kidney: never present, never scored
    assert summary["structures_scored"] == 2 and summary["structures"] == 3
    kidney_a = next(r for r in per_subject if r["subject"] == "a" and r["structure"] == "kidney")
    assert kidney_a["tp"] is None and kidney_a["fn"] is None
    rows_read = list(csv.DictReader(_write_csv(tmp_path / "s.csv", SUBJECT_COLUMNS, per_subject).open()))
    cells = next(r for r in rows_read if r["subject"] == "a" and r["structure"] == "kidney")
    assert cells["tp"] == cells["fp"] == cells["fn"] == cells["dice"] == ""
    assert "2 of 3 structures scored" in summary_table(summary, per_class).title


def test_nnunet_predictions_carry_the_datasets_label_values(tmp_path):
    label = box_mask((12, 12, 6), (1, 1, 1), (5, 5, 5))
    label[6:10, 6:10, 1:5] = 5
    label[1:5, 6:10, 1:5] = 3
    cases = {f"case{i}": label for i in range(3)}
    nnunet_dataset(tmp_path / "nn", cases, {"background": 0, "liver": 1, "spleen": 5, "kidney_left": 3})
    run_preprocess(tmp_path / "nn", tmp_path / "c", PreprocessConfig(spacing=None, size=16, workers=0))
    manifest = read_manifest(tmp_path / "c")
    assert manifest.dataset["label_values"] == {"0": 0, "1": 1, "2": 3, "3": 5}
    # indices 0..3 of the label map go out as the dataset's values, and every sidecar agrees
    indices = np.array([[[0, 1, 2, 3]]], np.uint8)
    files = write_prediction(indices, tmp_path / "p.nii.gz", np.eye(4), None, {0: "background", 1: "liver",
                             2: "kidney_left", 3: "spleen"}, {0: 0, 1: 1, 2: 3, 3: 5})
    assert np.asarray(nib.load(files[0]).dataobj).tolist() == [[[0, 1, 3, 5]]]
    assert json.loads(files[1].read_text()) == {"0": "background", "1": "liver", "3": "kidney_left", "5": "spleen"}
    assert "\n5 spleen " in files[2].read_text() and '"spleen"' in files[3].read_text().splitlines()[-1]
    # evaluate --save-predictions writes values, not indices
    ckpt = make_checkpoint(tmp_path / "c", tmp_path / "run" / "ckpt.pth")
    run_evaluation(ckpt, CFG, LOADER, split="train", save_predictions=True, out=tmp_path / "ev")
    sidecar = next((tmp_path / "ev" / "predictions").glob("*.labels.json"))
    assert json.loads(sidecar.read_text()) == {"0": "background", "1": "liver", "3": "kidney_left", "5": "spleen"}
    for pred in (tmp_path / "ev" / "predictions").glob("*.nii.gz"):
        assert set(np.unique(np.asarray(nib.load(pred).dataobj))) <= {0, 1, 3, 5}
