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
from pipeline.models.task_models import UnfoldedDehaze, UnfoldedDerain
from pipeline.physics.haze import T_MIN, dark_channel_estimate, transmission_correction
from pipeline.patches import PairPatchSampler, TaskPatchSampler
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
    assert set(a) == {"x", "y", "target"} and a["y"].shape == (3, 3, 32, 32) and a["target"].shape == (3, 1, 32, 32)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["target"].abs().max() > 0
    if task == "derain":  # light rain only adds light; the density is non-negative
        assert (a["y"] >= a["x"] - 1e-6).all() and (a["target"] >= 0).all()
    else:  # the crop's true t against the dark channel prior on the crop, as the model sees it
        t0, _ = dark_channel_estimate(a["y"])
        t = torch.exp(a["target"]) * t0
        assert ((t > 0) & (t <= 1 + 1e-5)).all()
        # the corrected transmission explains the hazy crop: y = x t + A (1 - t), A the patch's one value
        airlight = ((a["y"] - a["x"] * t) / (1 - t).clamp_min(1e-3)).flatten(1).median(1).values
        model_y = a["x"] * t + airlight[:, None, None, None] * (1 - t)
        assert (model_y - a["y"]).abs().mean() < 1e-3


def test_transmission_correction_is_exact_and_zero_where_the_prior_is_right(images):
    s = degrade_task(images[0], TaskSpec("dehaze"), np.random.default_rng(0))
    y = torch.from_numpy(s.y)[None]
    t0, _ = dark_channel_estimate(y)
    assert torch.allclose(transmission_correction(y, t0), torch.zeros_like(t0), atol=1e-6)  # the prior right: 0
    assert torch.allclose(t0 * torch.exp(torch.from_numpy(s.target)[None]), torch.from_numpy(s.truth["t"])[None].clamp_min(T_MIN),
                          rtol=1e-4)
    assert s.target.shape == (1, *images[0].shape[-2:]) and s.target.std() > 0.01
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


def test_pair_patches_cut_the_same_window_of_both_images(images):
    observed = [np.clip(x + 0.125, 0.0, 2.0) for x in images]  # the observation's offset tells windows apart
    sampler = PairPatchSampler(images, observed, 32, np.random.default_rng(5))
    a = sampler.degraded_batch(4)
    b = PairPatchSampler(images, observed, 32, np.random.default_rng(5)).degraded_batch(4)
    assert set(a) == {"x", "y"} and a["x"].shape == (4, 3, 32, 32)  # no guidance truth
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.allclose(a["y"] - a["x"], torch.full_like(a["x"], 0.125))
    assert a["x"].std() > 0.05  # real crops, not one flat window
    with pytest.raises(ValueError, match="observation"):
        PairPatchSampler(images, observed[:1], 32, np.random.default_rng(0))


@pytest.mark.parametrize("task, strategy", [("derain", "alternating"), ("derain", "joint"), ("dehaze", "alternating")])
def test_without_guidance_truth_the_proxy_learns_from_the_outer_loss_alone(task, strategy, images, tmp_path):
    """Real pairs: no proxy warm start, no inner step, no guidance loss reported; the proxy still
    moves (the outer loss's gradient reaches it through the guidance maps)."""
    torch.manual_seed(0)
    model = build_model(CFG, 3, task=task)
    observed = [degrade_task(x, TaskSpec(task), np.random.default_rng(i)).y for i, x in enumerate(images)]
    sampler = PairPatchSampler(images, observed, 32, np.random.default_rng(0))
    val = [ValSample(torch.from_numpy(observed[1])[None], torch.from_numpy(images[1])[None], None)]
    cfg = TrainConfig(strategy=strategy, pretrain_steps=2, steps=3, batch_size=2, patch_size=32, log_every=1,
                      checkpoint_every=10)
    proxy_before = [p.detach().clone() for p in model.proxy.parameters()]
    trainer = Trainer(model, sampler, cfg, torch.device("cpu"), np.random.default_rng(0), None, "k", val,
                      progress=False)
    assert not trainer.batch_spec.with_proxy
    history = trainer.run()
    pre = [r for r in history if r["phase"] == "pretrain"]
    assert all("guidance_loss" not in r for r in pre)
    assert any(not torch.equal(a, b) for a, b in zip(proxy_before, model.proxy.parameters()))
    bilevel = [r for r in history if r["phase"] == "bilevel"]
    assert len(bilevel) == 3 and all(np.isfinite(r["loss"]) and "guidance_loss" not in r for r in bilevel)
    assert np.isfinite(bilevel[-1]["val_psnr"])


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


def test_a_dehaze_model_from_before_the_transmission_correction_is_refused(tmp_path):
    """Same weights' shapes, another meaning of the proxy's output: refused at load, not misused."""
    from pipeline.io import InputError
    model = build_model(CFG, 3, task="dehaze")
    save_model(tmp_path / "model.pt", model, CFG, 3, "dehaze")
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    del state["state_dict"]["proxy_target_version"]  # what a file of the earlier model holds
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(InputError, match="do not fit the dehaze model.*proxy_target_version"):
        load_model(tmp_path / "old.pt", task="dehaze")
    assert load_model(tmp_path / "model.pt", task="dehaze")[0].proxy_target_version.item() == 2
