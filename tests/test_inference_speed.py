"""Inference in evaluate and predict: channels-last, batches sized by a memory budget and reading ahead give the
same labels as the plain path (contiguous model, one fixed batch size, one file after another)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from checkpoints import edit_checkpoint, make_checkpoint
from ctslice.config import EvaluateConfig, LoaderConfig, ModelConfig
from ctslice.data.dataset import SliceDataset
from ctslice.data.transforms import apply_intensity
from ctslice.evaluate.inference import (MAX_INFERENCE_BATCH, Throughput, VolumeSlices, inference_batch_size,
                                        inference_bytes_per_slice, predict_volumes)
from ctslice.evaluate.original_space import PlaneMapper, to_original
from ctslice.evaluate.predict import read_ahead, read_input, run_predict
from ctslice.model.load import load_model
from ctslice.model.unet import build_model

INTENSITY = {"clip": [-200, 300], "shift": -200, "scale": 500}


def _plain_logits(model: torch.nn.Module, volume: np.ndarray, k: int, intensity: dict, batch: int) -> torch.Tensor:
    """The logits as inference computed them before: contiguous model and input, fixed batches."""
    model = model.to(memory_format=torch.contiguous_format).eval()
    slices = VolumeSlices(volume, k)
    with torch.no_grad():
        return torch.cat([model(apply_intensity(torch.stack([slices[z]["image"] for z in range(i, min(i + batch,
                          len(slices)))]), intensity)) for i in range(0, len(slices), batch)])


@pytest.mark.parametrize("k", [1, 3])
def test_labels_equal_the_plain_paths_for_any_batch_size(k):
    torch.manual_seed(3)
    model = build_model(ModelConfig(base_width=4, depth=3), k, 6)
    with torch.no_grad():  # weights far from their initialisation, so the classes compete everywhere
        for p in model.parameters():
            p.normal_(0, 0.5)
    volume = np.random.default_rng(0).integers(-300, 400, (11, 32, 32)).astype(np.int16)
    expected = _plain_logits(model, volume, k, INTENSITY, 4).argmax(1).to(torch.uint8).numpy()
    assert len(np.unique(expected)) > 1  # a prediction with something in it
    for batch in (1, 3, 16):
        throughput = Throughput()
        loader = torch.utils.data.DataLoader(VolumeSlices(volume, k), batch_size=batch)
        [(subject, (labels,))] = predict_volumes(model, loader, {0: len(volume)}, INTENSITY, torch.device("cpu"),
                                                 throughput=throughput)
        assert np.array_equal(labels, expected), batch
        assert throughput.slices == len(volume) and throughput.seconds > 0
    assert next(model.parameters()).is_contiguous(memory_format=torch.channels_last)


def _scrambled(ckpt: dict) -> None:
    """Weights far from their initialisation (where one class wins everywhere), so the labels vary."""
    generator = torch.Generator().manual_seed(0)
    for name, value in ckpt["model"].items():
        if value.is_floating_point() and "running_var" not in name:
            value.normal_(0, 0.5, generator=generator)


def test_predict_writes_the_labels_of_the_plain_path(tiny_cache, tmp_path):
    """run_predict over a folder (reading ahead, channels-last, budget batches) against the plain pipeline of
    each file: read, contiguous model in one fixed batch size, softmax to the CT's grid."""
    ckpt_path = edit_checkpoint(make_checkpoint(tiny_cache, tmp_path / "run" / "ckpt.pth", context_slices=3),
                                _scrambled)
    folder = tmp_path / "cts"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in (("a.nii.gz", (30, 26, 7)), ("b.nii.gz", (20, 24, 5)), ("c.nii.gz", (28, 28, 6))):
        affine = np.diag([1.4, 1.4, 4.5, 1.0])
        nib.save(nib.Nifti1Image(rng.integers(-1000, 1000, shape).astype(np.int16), affine), folder / name)
    outcomes = run_predict(ckpt_path, folder, None, EvaluateConfig(device="cpu"), LoaderConfig(batch_size=4))
    model, ckpt = load_model(ckpt_path)
    for outcome in outcomes:
        assert outcome.error is None and outcome.slices > 0 and outcome.slices_per_s > 0
        read = read_input(ckpt, outcome.input)
        logits = _plain_logits(model, read.cached, 3, ckpt.intensity, 2)
        with torch.no_grad():
            expected = to_original(PlaneMapper(read.geometry, torch.device("cpu"))(logits.softmax(1)).numpy(),
                                   read.geometry)
        assert len(np.unique(expected)) > 1
        assert np.array_equal(np.asanyarray(nib.load(outcome.output).dataobj), expected), outcome.input.name


def test_the_batch_is_the_most_slices_that_fit_the_budget():
    cfg = {"base_width": 32, "in_channels": 1, "num_classes": 118}
    per_slice = inference_bytes_per_slice(cfg, 512, 512)
    assert 350e6 < per_slice < 700e6  # measured ~380 MB for the default U-Net at 512 x 512, 118 classes
    for gib in (0.1, 1.0, 4.0, 10.0):
        batch = inference_batch_size(cfg, 512, 512, gib)
        assert batch == max(1, int(gib * 2**30) // per_slice)
    assert inference_batch_size(cfg, 512, 512, 1e5) == MAX_INFERENCE_BATCH
    assert inference_batch_size(cfg, 512, 512, EvaluateConfig().inference_memory_gib) == 8


def test_read_ahead_keeps_order_and_hands_each_error_to_its_own_item():
    def read(path):
        if path == "bad":
            raise ValueError("cannot read bad")
        return path.upper()

    futures = list(read_ahead(["a", None, "bad", "b"], read))
    assert futures[1] is None
    assert [futures[i].result() for i in (0, 3)] == ["A", "B"]
    with pytest.raises(ValueError, match="cannot read bad"):
        futures[2].result()


def test_evaluate_reports_slices_per_second(tiny_cache, tmp_path):
    from ctslice.evaluate.run import run_evaluation

    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "ckpt.pth")
    result = run_evaluation(ckpt, EvaluateConfig(device="cpu"), LoaderConfig(batch_size=4, workers=0))
    speed = result.summary["inference"]
    assert speed["slices"] == len(SliceDataset(tiny_cache, "val")) and speed["slices_per_s"] > 0
    assert speed["batch_size"] == 4 and speed["device"] == "cpu"


def test_bench_predict_command_prints_both_ways_and_equal_labels(tmp_path):
    import json

    from typer.testing import CliRunner

    from ctslice.cli import app

    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["bench", "predict", "--device", "cpu", "--size", "32", "--classes", "3",
                                      "--slices", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    [row] = json.loads(out.read_text())["rows"]
    assert row["device"] == "cpu" and row["labels_equal"] and row["plain"]["slices_per_s"] > 0 and row["ratio"] > 0
    assert "channels-last" in result.output
