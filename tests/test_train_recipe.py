"""nnU-Net's recipe as configuration values: SGD and the poly schedule, deep supervision (targets, weights, eval
output, checkpoints), and configs/nnunet2d.toml."""

import contextlib
import dataclasses
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checkpoints import edit_checkpoint
from ctslice.config import ModelConfig, TrainConfig, load_config
from ctslice.config.checks import ConfigError
from ctslice.errors import CtsliceError
from ctslice.model.checkpoint import read_checkpoint_dict
from ctslice.model.load import load_model
from ctslice.model.unet import build_model, describe_heads
from ctslice.train.build import build_optimizer, build_trainer, check_cache
from ctslice.train.loop import train_step
from ctslice.train.loss import (deep_supervision_weights, downsample_labels, segmentation_loss,
                                supervised_loss)
from ctslice.train.run import run_training
from ctslice.train.schedule import LRSchedule, poly_lr

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_poly_factors_are_the_hand_computed_ones():
    # nnU-Net's PolyLRScheduler: lr * (1 - epoch / epochs) ** 0.9, set once per epoch
    # 4 epochs at 1e-2: 0.75**0.9 = exp(0.9 ln 0.75) = exp(-0.258914) = 0.771890, 0.5**0.9 = 0.535887,
    # 0.25**0.9 = exp(-1.247665) = 0.287175
    by_hand = {0: 1e-2, 1: 0.00771890, 2: 0.00535887, 3: 0.00287175}
    schedule = LRSchedule(TrainConfig(epochs=4, learning_rate=1e-2, scheduler="poly"))
    for epoch, lr in by_hand.items():
        assert poly_lr(epoch, 1e-2, 4) == pytest.approx(lr, rel=1e-5)
        assert schedule.lr(epoch, step=10**6) == poly_lr(epoch, 1e-2, 4)  # the same all epoch long
    assert poly_lr(4, 1e-2, 4) == 0.0 and poly_lr(6, 1e-2, 4) == 0.0  # past the end (a resume raising --epochs)
    assert poly_lr(1, 1.0, 2, exponent=2.0) == 0.25


def test_sgd_is_nnunets_and_weight_decay_follows_the_optimizer():
    model = torch.nn.Linear(2, 2)
    sgd = build_optimizer(model, load_config(None, {"train": {"optimizer": "sgd"}}))
    group = sgd.param_groups[0]
    assert isinstance(sgd, torch.optim.SGD)
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.99, True, 3e-5)
    adamw = build_optimizer(model, load_config(None, {}))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.01
    custom = build_optimizer(model, load_config(None, {"train": {"optimizer": "sgd", "momentum": 0.9,
                                                                 "nesterov": False, "weight_decay": 0.0}}))
    assert (custom.param_groups[0]["momentum"], custom.param_groups[0]["nesterov"]) == (0.9, False)
    with pytest.raises(ConfigError, match="optimizer must be one of adamw, sgd"):
        load_config(None, {"train": {"optimizer": "adam"}})


def test_deep_supervision_weights_halve_drop_the_lowest_and_sum_to_one():
    assert deep_supervision_weights(4) == pytest.approx([1 / 1.75, 0.5 / 1.75, 0.25 / 1.75, 0.0])
    assert deep_supervision_weights(3) == pytest.approx([1 / 1.5, 0.5 / 1.5, 0.0])
    assert deep_supervision_weights(1) == [1.0]


def test_downsampled_targets_are_nearest_neighbour_and_invent_no_label():
    labels = torch.randint(0, 7, (2, 16, 16))
    for factor in (2, 4, 8):
        small = downsample_labels(labels, factor)
        reference = F.interpolate(labels[:, None].float(), scale_factor=1 / factor, mode="nearest")[:, 0].long()
        assert small.shape == (2, 16 // factor, 16 // factor) and torch.equal(small, reference)


def test_deep_supervision_loss_is_the_weighted_sum_over_scales_with_the_missing_structure_mask():
    torch.manual_seed(0)
    target = torch.randint(0, 4, (2, 16, 16))
    outputs = [torch.randn(2, 4, 16 // 2**k, 16 // 2**k) for k in range(3)]  # a depth-5 model: full, 1/2, 1/4
    valid = torch.ones(2, 4, dtype=torch.bool)
    valid[1, 2] = False  # structure 2 is missing in sample 1: masked at every scale
    w = deep_supervision_weights(4)
    expected = sum(w[k] * segmentation_loss(outputs[k], target[:, ::2**k, ::2**k], valid) for k in range(3))
    assert supervised_loss(outputs, target, valid) == pytest.approx(float(expected), rel=1e-6)
    assert supervised_loss(outputs[0], target, valid) == segmentation_loss(outputs[0], target, valid)
    unmasked = sum(w[k] * segmentation_loss(outputs[k], target[:, ::2**k, ::2**k]) for k in range(3))
    assert float(supervised_loss(outputs, target, valid)) != pytest.approx(float(unmasked))


def test_deep_supervision_model_returns_scales_in_training_and_one_tensor_in_eval():
    cfg = ModelConfig(base_width=4, depth=5, deep_supervision=True)
    model = build_model(cfg, 1, 3)
    x = torch.rand(2, 1, 32, 32)
    outputs = model.train()(x)
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 32, 32), (2, 3, 16, 16), (2, 3, 8, 8)]
    assert tuple(model.eval()(x).shape) == (2, 3, 32, 32)
    plain = build_model(ModelConfig(base_width=4, depth=5), 1, 3)
    assert isinstance(plain.train()(x), torch.Tensor)
    assert sum(t.numel() for t in model.state_dict().values()) == cfg.parameter_count(1, 3)
    assert cfg.parameter_count(1, 3) - ModelConfig(4, 5).parameter_count(1, 3) == (8 + 1) * 3 + (16 + 1) * 3
    assert "1/2, 1/4" in describe_heads(model) and describe_heads(plain) == "one output head"


def test_a_deep_supervision_run_checkpoints_and_loads_back_its_heads(cache32, tmp_path):
    cfg = load_config(None, {"train": {"epochs": 1, "wandb": "disabled", "val_images": 0, "keep_checkpoints": 0,
                                       "optimizer": "sgd", "scheduler": "poly"},
                             "model": {"base_width": 4, "depth": 4, "deep_supervision": True},
                             "loader": {"batch_size": 8, "workers": 0}})
    run_training(cache32, tmp_path / "run", cfg)
    ckpt = read_checkpoint_dict(tmp_path / "run" / "checkpoint_best.pth")
    assert ckpt["model_config"]["deep_supervision"] is True
    assert any(k.startswith("aux_heads.") for k in ckpt["model"])
    model, checkpoint = load_model(tmp_path / "run" / "checkpoint_best.pth")
    assert len(model.aux_heads) == 1 and not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ckpt["model"].items())
    assert tuple(model(torch.rand(1, 1, 32, 32)).shape) == (1, checkpoint.num_classes, 32, 32)
    for wrong, message in (("yes", "deep_supervision'] is 'yes'"), (False, "its weights hold")):
        copy = tmp_path / f"edited_{wrong}.pth"
        shutil.copy(tmp_path / "run" / "checkpoint_best.pth", copy)
        edit_checkpoint(copy, lambda c: c["model_config"].update(deep_supervision=wrong))
        with pytest.raises(CtsliceError, match=message):
            load_model(copy)
    plain = dataclasses.replace(cfg, model=ModelConfig(4, 4), train=dataclasses.replace(cfg.train, epochs=2))
    with pytest.raises(CtsliceError, match="the model .*deep supervision in the checkpoint"):
        run_training(cache32, tmp_path / "run", plain, resume=tmp_path / "run")


def test_nnunet2d_config_sets_the_recipe_over_the_demo_settings():
    cfg = load_config([CONFIGS / "demo.toml", CONFIGS / "nnunet2d.toml"])
    assert (cfg.train.optimizer, cfg.train.scheduler, cfg.train.learning_rate) == ("sgd", "poly", 1e-2)
    assert cfg.model.deep_supervision and (cfg.model.base_width, cfg.model.depth) == (16, 4)  # the demo's size
    assert cfg.train.window_min == -200 and cfg.augment.mirror_probability == 0.0
    assert cfg.augment.gamma_probability == 0.3 and cfg.augment.elastic_probability == 0.0


def test_instance_norm_keeps_no_running_statistics_and_normalises_each_slice_alone():
    cfg = ModelConfig(base_width=4, depth=3, norm="instance", activation="leaky_relu")
    model = build_model(cfg, 1, 3)
    assert not any("running" in name or "num_batches" in name for name in model.state_dict())
    assert sum(t.numel() for t in model.state_dict().values()) == cfg.parameter_count(1, 3)
    assert cfg.parameter_count(1, 3) < ModelConfig(4, 3).parameter_count(1, 3)  # BatchNorm's buffers gone
    torch.manual_seed(0)
    x = torch.rand(3, 1, 16, 16)
    alone = model.train()(x[:1])
    in_batch = model(x)
    assert torch.allclose(alone, in_batch[:1], atol=1e-5)  # a slice's output does not depend on its batch
    assert torch.allclose(model.eval()(x), in_batch, atol=1e-5)  # and inference normalises the same way


def test_leaky_relu_lets_negative_inputs_through_with_nnunets_slope():
    model = build_model(ModelConfig(base_width=4, depth=3, activation="leaky_relu"), 1, 3)
    acts = [m for m in model.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.LeakyReLU))]
    assert acts and all(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.01 for m in acts)
    assert all(isinstance(m, torch.nn.ReLU) for m in build_model(ModelConfig(4, 3), 1, 3).modules()
               if isinstance(m, (torch.nn.ReLU, torch.nn.LeakyReLU)))
    with pytest.raises(ConfigError, match="norm must be one of batch, instance"):
        load_config(None, {"model": {"norm": "group"}})


def test_gradient_clipping_caps_the_update_and_reports_the_norm_before_it():
    torch.manual_seed(0)
    cfg = load_config(None, {"train": {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0,
                                       "grad_clip": 1e-3}, "model": {"base_width": 4, "depth": 3}})
    model = build_model(cfg.model, 1, 3)
    trainer = SimpleNamespace(cfg=cfg, model=model, forward=model, optimizer=build_optimizer(model, cfg),
                              autocast=contextlib.nullcontext(), device=torch.device("cpu"))
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    images, labels = torch.rand(2, 1, 16, 16), torch.randint(0, 3, (2, 16, 16))
    _, _, norm = train_step(trainer, images, labels, None, lr=1.0)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert float(norm) > 1e-2  # the norm logged is the one before clipping
    assert float((after - before).norm()) == pytest.approx(1e-3, rel=1e-3)  # plain SGD at lr 1: the clipped norm


def test_an_instance_norm_run_checkpoints_loads_back_and_refuses_a_batchnorm_resume(cache32, tmp_path):
    cfg = load_config(None, {"train": {"epochs": 1, "wandb": "disabled", "val_images": 0, "keep_checkpoints": 0,
                                       "steps_per_epoch": 1},
                             "model": {"base_width": 4, "depth": 3, "norm": "instance", "activation": "leaky_relu"},
                             "loader": {"batch_size": 4, "workers": 0}})
    run_training(cache32, tmp_path / "run", cfg)
    ckpt = read_checkpoint_dict(tmp_path / "run" / "checkpoint_last.pth")
    assert (ckpt["model_config"]["norm"], ckpt["model_config"]["activation"]) == ("instance", "leaky_relu")
    model, _ = load_model(tmp_path / "run" / "checkpoint_last.pth")
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in model.modules())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ckpt["model"].items())
    batchnorm = dataclasses.replace(cfg, model=ModelConfig(4, 3), train=dataclasses.replace(cfg.train, epochs=2))
    with pytest.raises(CtsliceError, match="the model .*instance, leaky_relu in the checkpoint"):
        run_training(cache32, tmp_path / "run", batchnorm, resume=tmp_path / "run")


def test_an_epoch_of_steps_per_epoch_batches_draws_past_one_pass_with_the_recipes_oversampling(cache32):
    cfg = load_config([CONFIGS / "nnunet2d.toml"], {"model": {"base_width": 4, "depth": 3},
                                                     "loader": {"batch_size": 4, "workers": 0}})
    assert (cfg.train.steps_per_epoch, cfg.loader.oversample_fraction) == (250, 0.33)
    trainer = build_trainer(cache32, cfg, check_cache(cache32))
    sampler, present = trainer.train_loader.sampler, trainer.train_loader.dataset.present
    assert len(trainer.train_loader) == 250 > len(present) // 4  # nnU-Net's epoch, many passes over this split
    shows = present[:, 1:].any(1)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        order = np.fromiter(iter(sampler), dtype=np.int64)
        assert len(order) == 250 * 4
        # a third of every batch is a class-aware draw (a slice showing a structure); the rest is uniform, so
        # the share of slices showing one is at least the third, plus the uniform part's own share
        assert shows[order].mean() >= 0.33 + 0.67 * shows.mean() - 0.05
        assert np.bincount(order, minlength=len(present)).min() >= 1  # the uniform part covers every slice
    short = build_trainer(cache32, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps_per_epoch=2)),
                          check_cache(cache32))
    assert len(short.train_loader) == 2
