"""Ensembles average the softmax of their members (refusing members that read other input or predict other
labels); test-time augmentation maps each view back (pixels and left/right channels) before averaging."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from checkpoints import edit_checkpoint, make_checkpoint
from ctslice.cli import app
from ctslice.config import EvaluateConfig, LoaderConfig
from ctslice.errors import CtsliceError
from ctslice.evaluate.predict import run_predict
from ctslice.evaluate.run import run_evaluation
from ctslice.model.ensemble import load_ensemble
from ctslice.model.load import load_model
from ctslice.model.tta import TestTimeAugmentation, mirror_channels, parse_tta, with_tta

CFG = EvaluateConfig(device="cpu", worst_subjects=0)
LOADER = LoaderConfig(workers=0, batch_size=8)


def test_an_ensemble_of_two_checkpoints_is_the_average_of_their_softmax(tiny_cache, tmp_path):
    a = make_checkpoint(tiny_cache, tmp_path / "a.pth", seed=0)
    b = make_checkpoint(tiny_cache, tmp_path / "b.pth", seed=1)
    ensemble, checkpoints = load_ensemble([a, b])
    x = torch.randn(2, 1, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pa, pb = (load_model(p)[0](x).softmax(1) for p in (a, b))
        out = ensemble(x)
    by_hand = (pa + pb) / 2
    assert not torch.allclose(pa, pb, atol=1e-3)  # two different models
    assert torch.allclose(out.softmax(1), by_hand, atol=1e-6) and torch.allclose(out.exp(), by_hand, atol=1e-6)
    assert torch.equal(out.argmax(1), by_hand.argmax(1)) and len(checkpoints) == 2


def _relabel(ckpt):
    ckpt["label_map"] = {**ckpt["label_map"], "1": "something_else"}


def _window(ckpt):
    ckpt["intensity"] = {**ckpt["intensity"], "shift": ckpt["intensity"]["shift"] + 100}


@pytest.mark.parametrize("change, said", [
    (_relabel, r"its label map differs from .*a\.pth's"),
    (_window, r"its input intensity differs"),
    ("context", r"its input channels \(context slices\) differs .*\(3 against 1\)"),
    ("twice", r"given twice"),
])
def test_members_that_read_other_input_or_predict_other_labels_are_refused(tiny_cache, tmp_path, change, said):
    a = make_checkpoint(tiny_cache, tmp_path / "a.pth")
    if change == "twice":
        b = a
    elif change == "context":
        b = make_checkpoint(tiny_cache, tmp_path / "b.pth", context_slices=3)
    else:
        b = edit_checkpoint(make_checkpoint(tiny_cache, tmp_path / "b.pth", seed=1), change)
    with pytest.raises(CtsliceError, match=r"b\.pth: " + said if change != "twice" else said):
        load_ensemble([a, b])


class Positional(torch.nn.Module):
    """Labels by column alone, as the cache's LPS columns run: patient right (low columns) -> kidney_right (2),
    patient left -> kidney_left (1); plus a little of the input, so that views differ."""

    def forward(self, x):
        w = x.shape[-1]
        left = (torch.arange(w) >= w // 2).float().expand(x.shape[0], 1, x.shape[-2], w)
        return torch.cat([torch.zeros_like(left), 4 * left, 4 * (1 - left), 0.1 * x[:, :1]], 1)


LABELS = {0: "background", 1: "kidney_left", 2: "kidney_right", 3: "liver"}


def test_tta_with_the_identity_alone_is_no_tta():
    model = Positional()
    x = torch.randn(2, 1, 8, 8)
    assert with_tta(model, (), LABELS, fill=0.0, shift_px=2) is model and parse_tta("none") == ()
    assert torch.allclose(TestTimeAugmentation(model, [])(x).softmax(1), model(x).softmax(1), atol=1e-6)


def test_flip_tta_mirrors_back_and_swaps_left_and_right():
    model = Positional()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    tta = with_tta(model, ("flip-lr",), LABELS, fill=0.0, shift_px=2)
    order = [0, 2, 1, 3]
    assert mirror_channels(LABELS) == order
    by_hand = (model(x).softmax(1) + model(x.flip(-1)).softmax(1).flip(-1)[:, order]) / 2
    assert torch.allclose(tta(x).softmax(1), by_hand, atol=1e-6)
    # a model that knows the sides agrees with itself mirrored: same labels as without TTA
    assert torch.equal(tta(x).argmax(1), model(x).argmax(1))


def test_flip_tta_refuses_a_side_without_its_counterpart():
    with pytest.raises(CtsliceError, match=r"'lung_left' has no mirrored counterpart 'lung_right'"):
        mirror_channels({0: "background", 1: "lung_left", 2: "liver"})


def test_shift_tta_leaves_a_pixelwise_model_unchanged_up_to_the_borders():
    conv = torch.nn.Conv2d(1, 3, 1)
    x = torch.randn(1, 1, 10, 12)
    with torch.no_grad():
        tta = with_tta(conv, ("shift",), {0: "a", 1: "b", 2: "c"}, fill=-5.0, shift_px=3)
        assert torch.allclose(tta(x).softmax(1), conv(x).softmax(1), atol=1e-5)  # the fill never counts


def test_evaluate_and_predict_an_ensemble_with_tta(tiny_cache, tmp_path):
    a = make_checkpoint(tiny_cache, tmp_path / "a" / "c.pth", seed=0)
    b = make_checkpoint(tiny_cache, tmp_path / "b" / "c.pth", seed=1)
    result = run_evaluation([a, b], EvaluateConfig(device="cpu", worst_subjects=0, tta="shift"), LOADER,
                            split="train", out=tmp_path / "ev")
    settings = json.loads((tmp_path / "ev" / "evaluation.json").read_text())["settings"]
    assert settings["ensemble"] == [str(a.resolve()), str(b.resolve())] and settings["evaluate"]["tta"] == "shift"
    assert result.summary
    # an ensemble of a model and its copy predicts what the model alone does
    shutil.copy(a, tmp_path / "a" / "copy.pth")
    ct = tmp_path / "ct.nii.gz"
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.integers(-1000, 1000, (30, 26, 5)).astype(np.int16), np.diag([1.4, 1.4, 4, 1])), ct)
    [one] = run_predict(a, ct, tmp_path / "one.nii.gz", CFG, LOADER)
    [two] = run_predict([a, tmp_path / "a" / "copy.pth"], ct, tmp_path / "two.nii.gz", CFG, LOADER)
    assert one.error is None and two.error is None
    assert np.array_equal(np.asarray(nib.load(one.output).dataobj), np.asarray(nib.load(two.output).dataobj))


def test_cli_takes_several_checkpoints_and_names_a_refusal(tiny_cache, tmp_path):
    a = make_checkpoint(tiny_cache, tmp_path / "a.pth")
    b = make_checkpoint(tiny_cache, tmp_path / "b.pth", context_slices=3)
    res = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(a), "--checkpoint", str(b), "--device", "cpu",
                                   "--split", "train", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 2 and "b.pth: its input channels (context slices) differs" in res.output
    res = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(a), "--tta", "mirror", "--out",
                                   str(tmp_path / "ev2")])
    assert res.exit_code != 0 and "tta" in res.output


def test_an_ensemble_or_tta_evaluation_defaults_to_a_folder_of_its_own():
    from ctslice.evaluate.context import default_folder

    assert default_folder("val", 1, "none") == "eval-val"
    assert default_folder("test", 3, "none") == "eval-test-ensemble3"
    assert default_folder("val", 1, "shift") == "eval-val-tta"


def test_the_train_overlap_warning_covers_every_member(tiny_cache, tmp_path):
    from ctslice.evaluate.context import train_overlap
    from ctslice.model.checkpoint import read_checkpoint

    members = [read_checkpoint(edit_checkpoint(make_checkpoint(tiny_cache, tmp_path / f"{sid}.pth"),
                                               lambda c, sid=sid: c.update(splits={"train": [sid], "val": []})))
               for sid in ("s1", "s2")]
    overlap, said = train_overlap(members, ["s1", "s2", "s3"])
    assert overlap == ["s1", "s2"] and "2 of 3 evaluated subject(s)" in said
