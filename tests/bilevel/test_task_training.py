"""Rain and haze through the deblurring trainer: task patches carry their guidance targets, every
bilevel strategy drives the task models, and the model files round-trip with their task."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.bilevel.trainer import Trainer, ValSample
from pipeline.checkpoint import load_model, save_model
from pipeline.config import ConfigError, ModelConfig, TrainConfig, params_from_dict
from pipeline.data import limit_size, load_skimage, to_channels
from pipeline.models.factory import build_model
from pipeline.models.task_models import UnfoldedDehaze, UnfoldedDerain, haze_residual_level
from pipeline.patches import TaskPatchSampler
from pipeline.synthesis import TaskSpec, degrade_task

CFG = ModelConfig(stages=2, denoiser_width=8, denoiser_dilations=(1, 2, 1), proxy_width=8)


@pytest.fixture(scope="module")
def images():
    return [np.ascontiguousarray(limit_size(to_channels(load_skimage(n), gray=False), 56).transpose(2, 0, 1))
            for n in ("coffee", "astronaut")]


@pytest.mark.parametrize("task", ["derain", "dehaze"])
def test_task_patches_are_reproducible_and_carry_their_targets(task, images):
    a = TaskPatchSampler(images, TaskSpec(task), 32, np.random.default_rng(3)).degraded_batch(3)
    b = TaskPatchSampler(images, TaskSpec(task), 32, np.random.default_rng(3)).degraded_batch(3)
    assert set(a) == {"x", "y", "sigma"} and a["y"].shape == (3, 3, 32, 32) and a["sigma"].shape == (3, 1, 32, 32)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (a["sigma"] >= 0).all() and a["sigma"].max() > 0
    if task == "derain":  # light rain only adds light
        assert (a["y"] >= a["x"] - 1e-6).all()
    else:  # the residual level of the patch as the model sees it
        assert torch.allclose(a["sigma"], haze_residual_level(a["y"], a["x"]))


def test_haze_residual_is_zero_where_the_classical_start_is_exact(images):
    x = torch.from_numpy(images[0])[None]
    assert haze_residual_level(x * 0 + 0.5, x * 0 + 0.5).max() < 1e-6  # flat grey: nothing to fix
    s = degrade_task(images[0], TaskSpec("dehaze"), np.random.default_rng(0))
    assert s.target.shape == (1, *images[0].shape[-2:]) and s.target.mean() > 0.01
    assert set(s.truth) == {"t", "airlight", "depth"} and 0 < s.truth["t"].min() <= s.truth["t"].max() <= 1


@pytest.mark.parametrize("strategy", ["alternating", "joint", "unrolled", "implicit"])
@pytest.mark.parametrize("task", ["derain", "dehaze"])
def test_every_strategy_trains_the_task_models(task, strategy, images, tmp_path):
    torch.manual_seed(0)
    model = build_model(CFG, 3, task=task)
    assert isinstance(model, UnfoldedDerain if task == "derain" else UnfoldedDehaze)
    sampler = TaskPatchSampler(images, TaskSpec(task), 32, np.random.default_rng(0))
    s = degrade_task(images[1], TaskSpec(task), np.random.default_rng(1))
    val = [ValSample(torch.from_numpy(s.y)[None], torch.from_numpy(images[1])[None], torch.from_numpy(s.target)[None])]
    cfg = TrainConfig(strategy=strategy, pretrain_steps=2, steps=2, batch_size=2, patch_size=32, log_every=1,
                      checkpoint_every=2)
    proxy_before = [p.detach().clone() for p in model.proxy.parameters()]
    trainer = Trainer(model, sampler, cfg, torch.device("cpu"), np.random.default_rng(0), tmp_path / "ck.pt", "k",
                      val, progress=False)
    history = trainer.run()
    bilevel = [r for r in history if r["phase"] == "bilevel"]
    assert len(bilevel) == 2 and all(np.isfinite(r["loss"]) and np.isfinite(r["guidance_loss"]) for r in bilevel)
    assert np.isfinite(bilevel[-1]["val_psnr"])
    assert any(not torch.equal(a, b) for a, b in zip(proxy_before, model.proxy.parameters()))
    save_model(tmp_path / "model.pt", model, CFG, 3, task)
    loaded, _, state = load_model(tmp_path / "model.pt", task=task)
    assert type(loaded) is type(model) and state["task"] == task
    with torch.no_grad():
        assert torch.allclose(loaded(val[0].y).x, model.eval()(val[0].y).x, atol=1e-6)


def test_deblurring_variants_are_refused_for_the_task_models():
    assert params_from_dict({"base": {"task": "dehaze"}}).base.task == "dehaze"
    for section, key, value in (("model", "proxy_sharing", "per_stage"), ("model", "rho", "predicted"),
                                ("model", "learn_rho", True)):
        with pytest.raises(ConfigError, match=f"model.{key}.*derain"):
            params_from_dict({"base": {"task": "derain"}, section: {key: value}})
    with pytest.raises(ConfigError, match="degrade.haze.beta"):
        params_from_dict({"degrade": {"haze": {"beta": [2.0, 1.0]}}})
    with pytest.raises(ConfigError, match="degrade.rain.densty"):
        params_from_dict({"degrade": {"rain": {"densty": [0.001, 0.002]}}})
