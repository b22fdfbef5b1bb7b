"""Trainer parts without a training run: model size, LR schedules, loss, metrics, checkpoints."""

import math
import random

import numpy as np
import pytest
import torch

from ctslice.config import ModelConfig, TrainConfig
from ctslice.errors import CtsliceError
from ctslice.model.checkpoint import read_checkpoint_dict, save_checkpoint
from ctslice.train.checkpoint import prune_epoch_checkpoints
from ctslice.train.rng import rng_state, seeded_rngs, set_rng_state
from ctslice.train.epoch_metrics import EpochCounts, comparison, gradient_norm, ranked_classes
from ctslice.train.loss import marginal_cross_entropy, segmentation_loss, soft_dice_loss
from ctslice.model.unet import build_model, count_parameters
from ctslice.train.schedule import LRSchedule, PlateauState, cosine_lr, plateau_step, warmup_factor


def test_parameter_count_of_the_default_unet():
    model = build_model(ModelConfig(), in_channels=1, num_classes=118)
    assert count_parameters(model) == (7_769_270, 7_769_270)
    assert count_parameters(build_model(ModelConfig(), 1, 118 - 1))[0] == 7_769_237  # the original script's


def test_cosine_matches_the_formula_and_torch():
    base, t_max, eta_min = 1e-3, 7, 1e-6
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    torch_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min)
    schedule = LRSchedule(TrainConfig(epochs=t_max, learning_rate=base, scheduler="cosine", cosine_eta_min=eta_min))
    for epoch in range(t_max + 1):
        formula = eta_min + (base - eta_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2
        assert cosine_lr(epoch, base, t_max, eta_min) == pytest.approx(formula, rel=1e-12)
        assert schedule.lr(epoch, step=10**6) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        torch_sched.step()
    assert schedule.lr(t_max, 10**6) == pytest.approx(eta_min)


def test_plateau_halves_after_patience_like_torch():
    scores = [0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.19, 0.3, 0.3, 0.3, 0.3, 0.3, float("nan")] + [0.3] * 12
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    torch_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3, min_lr=1e-6)
    state, lrs = PlateauState(1e-3), []
    for score in scores:
        state = plateau_step(state, score, factor=0.5, patience=3, min_lr=1e-6)
        torch_sched.step(score)
        assert state.lr == pytest.approx(opt.param_groups[0]["lr"])
        lrs.append(state.lr)
    # 0.2 stays best from epoch 2; epochs 3-6 do not improve: after the 4th (> patience 3) the rate halves
    assert lrs[4] == 1e-3 and lrs[5] == pytest.approx(5e-4)
    assert min(lrs) == pytest.approx(1e-6) or min(lrs) > 1e-6


def test_warmup_is_linear_in_steps_and_multiplies_the_schedule():
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0
    schedule = LRSchedule(TrainConfig(learning_rate=1e-3, scheduler="none", warmup_steps=10))
    assert schedule.lr(0, 4) == pytest.approx(5e-4) and schedule.lr(3, 100) == 1e-3


def test_missing_structure_is_left_out_of_loss():
    # 2 samples of 1x4 pixels, 3 classes; reference: background except classes 1 and 2 in sample 0.
    target = torch.tensor([[[1, 0, 0, 2]], [[0, 0, 0, 0]]])
    logits = torch.full((2, 3, 1, 4), -5.0)
    logits[0, 1, 0, 0] = logits[0, 2, 0, 3] = 5.0  # sample 0: classes 1 and 2 found where they are
    logits[:, 0] = 5.0 * (target == 0)  # background predicted on background ...
    logits[1, 2, 0, :2] = 8.0  # ... except that sample 1 predicts class 2 on two pixels of its "background"
    known = torch.ones(2, 3, dtype=torch.bool)
    missing = known.clone()
    missing[1, 2] = False  # class 2's mask is missing in sample 1: those pixels may well be class 2
    assert marginal_cross_entropy(logits, target, missing) < 0.01 < marginal_cross_entropy(logits, target, known)
    assert float(marginal_cross_entropy(logits, target, known)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, target)))
    # soft Dice: class 2 is perfect in sample 0; sample 1's class-2 pixels count only when class 2 is known there
    assert soft_dice_loss(logits, target, missing) < 0.01 < soft_dice_loss(logits, target, known)
    loss = segmentation_loss(logits, target, missing, ce_weight=1.0, dice_weight=1.0)
    assert float(loss) == pytest.approx(float(marginal_cross_entropy(logits, target, missing)
                                              + soft_dice_loss(logits, target, missing)))
    # metrics leave it out too: sample 1's class-2 pixels are no false positives
    counts = EpochCounts(3, torch.device("cpu"))
    counts.add(loss, logits.argmax(1), target, missing)
    assert counts.fp[2] == 0 and counts.summary()["dice_per_class"][2] == 1.0


def test_epoch_dice_from_accumulated_counts_and_nan_rules():
    counts = EpochCounts(4, torch.device("cpu"))
    # batch 1: class 1 perfect (2 px); batch 2: class 1 missed (2 px FN); class 2 never anywhere; class 3 only FP
    counts.add(torch.tensor(1.0), torch.tensor([[[1, 1, 0]]]), torch.tensor([[[1, 1, 0]]]))
    counts.add(torch.tensor(3.0), torch.tensor([[[0, 0, 3]]]), torch.tensor([[[1, 1, 0]]]))
    s = counts.summary()
    assert s["dice_per_class"][1] == pytest.approx(2 * 2 / (2 * 2 + 0 + 2))  # epoch counts, not batch mean 0.5
    assert s["dice_per_class"][2] is None  # absent from reference and prediction: NaN, skipped
    assert s["dice_per_class"][3] == 0.0  # empty reference with a false positive scores 0
    assert s["dice"] == pytest.approx((4 / 6 + 0) / 2) and s["loss"] == pytest.approx(2.0)
    assert s["iou"] == pytest.approx((2 / 4 + 0) / 2)


def test_gradient_norm_is_the_total_l2_norm():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    c = torch.zeros(1, requires_grad=True)  # no gradient: ignored
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0, 12.0])
    assert float(gradient_norm([a, b, c])) == pytest.approx(13.0)
    assert float(gradient_norm([c])) == 0.0
    assert float(torch.nn.utils.clip_grad_norm_([a, b], 1.0)) == pytest.approx(13.0)  # the same "before clipping"


def test_comparison_and_ranked_classes():
    gaps = comparison({"loss": 0.2, "dice": 0.8}, {"loss": 0.5, "dice": 0.6})
    assert gaps == pytest.approx({"comparison/loss_gap": -0.3, "comparison/dice_gap": 0.2,
                                  "comparison/overfit_score": 0.25})
    assert comparison({"loss": 1, "dice": 0.5}, {"loss": 1, "dice": 0.7})["comparison/overfit_score"] == 0.0
    names = {i: f"s{i}" for i in range(8)}
    ranked = ranked_classes([0.99, 0.1, 0.9, None, 0.5, 0.7, 0.3, 0.8], names, n=2)
    assert ranked == {"top_classes/rank_1_s2": 0.9, "top_classes/rank_2_s7": 0.8,
                      "bottom_classes/rank_1_s1": 0.1, "bottom_classes/rank_2_s6": 0.3}


def test_checkpoint_roundtrip_weights_only_and_clear_errors(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = {"model": build_model(ModelConfig(base_width=2, depth=2), 1, 3).state_dict(), "epoch": 2,
             "metrics": {"val/dice": float("nan")}, "rng": rng_state()}
    expected = (random.random(), np.random.rand(), torch.rand(1))
    path = tmp_path / "c.pth"
    save_checkpoint(path, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pth"]  # no temporary left behind
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["format"] == "ctslice-checkpoint" and ckpt["epoch"] == 2
    set_rng_state(read_checkpoint_dict(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CtsliceError, match="bad.pth: not a readable checkpoint"):
        read_checkpoint_dict(tmp_path / "bad.pth")
    with pytest.raises(CtsliceError, match="no such checkpoint"):
        read_checkpoint_dict(tmp_path / "none.pth")


def test_seeded_rngs_seeds_inside_and_gives_the_callers_streams_back():
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    before = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_state(before)
    with seeded_rngs(0):
        inside = (random.random(), np.random.rand(), torch.rand(1))
    with seeded_rngs(0):
        assert (random.random(), np.random.rand(), torch.rand(1)) == inside  # the seed decides
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected  # as if the blocks had not run


def test_prune_keeps_the_latest_epoch_checkpoints_and_nothing_else_is_touched(tmp_path):
    for n in (1, 2, 3, 10):
        (tmp_path / f"checkpoint_epoch{n}.pth").write_bytes(b"")
    (tmp_path / "checkpoint_epoch4.pth.bak").write_bytes(b"")
    (tmp_path / "checkpoint_best.pth").write_bytes(b"")
    prune_epoch_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint_best.pth", "checkpoint_epoch10.pth", "checkpoint_epoch3.pth", "checkpoint_epoch4.pth.bak"]


def test_train_settings_follow_the_config_precedence_and_are_checked(tmp_path):
    from ctslice.config import load_config

    toml = tmp_path / "c.toml"
    toml.write_text('[train]\nepochs = 5\nscheduler = "plateau"\n[model]\nbase_width = 16\n[augment]\nenabled = false\n')
    cfg = load_config(toml, {"train": {"epochs": 7, "learning_rate": None}})
    assert (cfg.train.epochs, cfg.train.scheduler, cfg.train.learning_rate) == (7, "plateau", 1e-3)
    assert cfg.model.base_width == 16 and not cfg.augment.enabled
    with pytest.raises(CtsliceError, match="unknown setting.*epoch\\b"):
        load_config(None, {"train": {"epoch": 3}})
    with pytest.raises(CtsliceError, match="scheduler must be one of cosine, plateau, poly, none"):
        load_config(None, {"train": {"scheduler": "step"}})
    with pytest.raises(CtsliceError, match="wandb must be one of"):
        load_config(None, {"train": {"wandb": "cloud"}})


def test_intensity_schemes_resolve_from_the_manifest():
    from ctslice.cache.manifest import Manifest
    from ctslice.cache.settings import CacheSettings
    from ctslice.config import PreprocessConfig
    from ctslice.errors import CacheError
    from ctslice.train.intensity import resolve_intensity

    labels = {"0": "background", "1": "liver"}
    manifest = Manifest(settings=CacheSettings.from_config(PreprocessConfig(), labels), label_map=labels)
    assert resolve_intensity(TrainConfig(), manifest, "c") == {"clip": [-1024.0, 3071.0], "shift": -1024.0,
                                                                "scale": 4095.0}
    assert resolve_intensity(TrainConfig(window_min=-200, window_max=300), manifest, "c")["clip"] == [-200.0, 300.0]
    with pytest.raises(CacheError, match="c: the 'ct' intensity scheme needs"):
        resolve_intensity(TrainConfig(intensity="ct"), manifest, "c")  # a cache without statistics
    manifest.statistics = {"intensity": {"mean": 40.0, "std": 50.0, "p00_5": -100.0, "p99_5": 250.0}}
    assert resolve_intensity(TrainConfig(intensity="ct"), manifest, "c") == {"clip": [-100.0, 250.0],
                                                                            "shift": 40.0, "scale": 50.0}


def test_augmentation_invents_no_labels_and_can_be_the_identity():
    from ctslice.config import AugmentConfig
    from ctslice.train.augment import augment_batch

    images = torch.rand(4, 1, 16, 16)
    labels = torch.zeros(4, 16, 16, dtype=torch.long)
    labels[:, 4:12, 4:12], labels[:, 6:8, 6:8] = 3, 5
    g = torch.Generator().manual_seed(0)
    strong = AugmentConfig(probability=1.0, scale=0.3, rotate_degrees=45)
    _, out = augment_batch(images, labels, strong, fill=0.0, generator=g)
    assert set(out.unique().tolist()) <= {0, 3, 5} and not torch.equal(out, labels)
    identity = AugmentConfig(probability=0.0, brightness=0.0, contrast=0.0)
    same_images, same_labels = augment_batch(images, labels, identity, fill=0.0, generator=g)
    assert torch.equal(same_images, images) and torch.equal(same_labels, labels)


def test_one_device_vocabulary_for_train_and_evaluate_and_one_resolver(monkeypatch):
    from ctslice.config import EvaluateConfig, load_config
    from ctslice.config.checks import ConfigError
    from ctslice.model.device import resolve_device

    for name in ("auto", "cpu", "cuda", "cuda:1", "mps"):  # the same names are valid in both sections
        assert load_config(None, {"train": {"device": name}, "evaluate": {"device": name}}).train.device == name
    for name in ("gpu", "cuda:x", "CPU"):
        with pytest.raises(ConfigError, match="device"):
            load_config(None, {"train": {"device": name}})
        with pytest.raises(ConfigError, match="device"):
            EvaluateConfig(device=name).validate()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("auto", local_rank=1)
    for name in ("cuda", "cuda:0"):  # asked for and absent: an error, never a silent CPU run
        with pytest.raises(CtsliceError, match=f"device {name} asked for, but no CUDA GPU"):
            resolve_device(name, local_rank=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)  # torchrun: this process's GPU
    assert resolve_device("auto", local_rank=0) == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(CtsliceError, match="device cuda:2 asked for, but this machine has 2 CUDA GPU"):
        resolve_device("cuda:2")

