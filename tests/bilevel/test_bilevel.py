"""The bilevel step: exact gradients through the unfolded stages, strategies, resumable training."""
import dataclasses
import time

import numpy as np
import pytest
import torch

from conftest import Interrupted, interrupt_at

from pipeline.bilevel.strategies import guidance_loss, make_strategy, reconstruction_loss
from pipeline.bilevel.trainer import Trainer, TrainingDiverged
from pipeline.config import ModelConfig, TrainConfig
from pipeline.patches import NoiseSpec, PatchSampler
from pipeline.generators.kernels import sample_kernel
from pipeline.models.factory import build_model
from pipeline.physics.blur import BlurPhysics

CFG = ModelConfig(stages=2, denoiser_width=4, denoiser_dilations=(1, 2, 1), proxy_width=4, learn_rho=True)


def _tiny_batch(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 13, 11, generator=g, dtype=dtype)
    k = torch.rand(3, 3, generator=g, dtype=dtype)
    blurred = BlurPhysics(x, k / k.sum()).A(x)
    physics = BlurPhysics(blurred + 0.02 * torch.randn(x.shape, generator=g, dtype=dtype), k / k.sum())
    return {"physics": physics, "x": x, "target": torch.full((1, 1, 13, 11), 0.02, dtype=dtype)}


def _double_model():
    torch.manual_seed(0)
    model = build_model(CFG, 1).double()
    # the proxy's last layer starts at zero (the classical estimate); move it off zero so that
    # the check also covers the gradient through the earlier layers
    torch.nn.init.normal_(model.proxy.body[-1].weight, std=0.1)
    return model


@pytest.mark.parametrize("loss_fn", [reconstruction_loss, guidance_loss])
def test_gradients_match_finite_differences(loss_fn):
    model, batch = _double_model(), _tiny_batch()
    loss = loss_fn(model, batch)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    names = ["denoiser.body.0.weight", "proxy.body.0.weight", "rho_gain", "guidance_gain"] if loss_fn is reconstruction_loss \
        else ["proxy.body.0.weight", "proxy.body.4.weight"]
    eps = 1e-6
    for name in names:
        p, g = params[name], grads[list(params).index(name)]
        for idx in [0, p.numel() // 2, p.numel() - 1]:
            with torch.no_grad():
                flat = p.view(-1)
                old = flat[idx].item()
                flat[idx] = old + eps
                up = float(loss_fn(model, batch))
                flat[idx] = old - eps
                down = float(loss_fn(model, batch))
                flat[idx] = old
            fd = (up - down) / (2 * eps)
            an = float(g.reshape(-1)[idx])
            assert abs(fd - an) <= 1e-3 * max(abs(fd), 1e-8) + 1e-10, (name, idx, fd, an)


def test_guidance_loss_does_not_touch_the_denoiser():
    model, batch = _double_model(), _tiny_batch()
    grads = torch.autograd.grad(guidance_loss(model, batch), list(model.denoiser.parameters()), allow_unused=True)
    assert all(g is None for g in grads)


@pytest.mark.parametrize("strategy", ["alternating", "joint"])
def test_strategy_steps_reduce_both_losses(strategy):
    model, batch = _double_model(), _tiny_batch()
    step = make_strategy(strategy, model, lr=3e-3, lr_inner=3e-3, weight=100.0)
    first = step.step(batch)
    for _ in range(40):
        last = step.step(batch)
    assert last["loss"] < first["loss"] and last["guidance_loss"] < first["guidance_loss"]


def _trainer(tmp_path, steps=6, log_fn=None, sampler_images=None):
    cfg = TrainConfig(pretrain_steps=4, steps=steps, batch_size=2, patch_size=32, checkpoint_every=2, log_every=2,
                      train_kernels=4)
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(CFG, learn_rho=False), 1)
    rng = np.random.default_rng(0)
    images = sampler_images or [np.random.default_rng(1).random((1, 40, 44)).astype(np.float32)]
    kernels = [sample_kernel(np.random.default_rng(i), max_size=9) for i in range(4)]
    sampler = PatchSampler(images, kernels, NoiseSpec(1, 7), 32, 9, rng)
    return Trainer(model, sampler, cfg, torch.device("cpu"), rng, tmp_path / "ckpt.pt", "key", log_fn=log_fn,
                   progress=False)


def test_interrupted_training_resumes_bit_for_bit(tmp_path):
    reference = _trainer(tmp_path / "a")
    reference.run()

    with pytest.raises(Interrupted):
        _trainer(tmp_path / "b", log_fn=interrupt_at("bilevel", 4)).run()
    before = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)["spent"]  # the first process's, to step 2
    resumed = _trainer(tmp_path / "b")
    cpu0 = time.process_time()
    resumed.run()
    own = time.process_time() - cpu0
    assert resumed.resumed_from == 2  # the last checkpoint before the interruption
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r["step"] for r in resumed.history] == [r["step"] for r in reference.history]
    # the time spent is the whole training's, not the last process's: the tuning budget reads it
    assert before["cpu_seconds"] > 0 and before["seconds"] > 0
    assert resumed.spent["cpu_seconds"] == pytest.approx(before["cpu_seconds"] + own, abs=0.05)
    # a finished run re-run (DVC re-running the stage) reports what the run that did the work spent
    final = torch.load(tmp_path / "a" / "ckpt.pt", weights_only=True)["spent"]  # at the last save
    again = _trainer(tmp_path / "a")
    again.run()
    assert again.spent["cpu_seconds"] == pytest.approx(reference.spent["cpu_seconds"], abs=0.05)
    # the wall time saved with the work plus the re-run's own; not a ratio to the first run's total,
    # whose tail after its last save races the re-run's load (a clean-clone CI run failed on 0.99)
    assert again.spent["seconds"] >= final["seconds"] > 0


def test_checkpoint_of_another_configuration_is_ignored(tmp_path):
    _trainer(tmp_path).run()
    other = _trainer(tmp_path)
    other.config_key = "other"
    assert not other.try_resume()
    # another architecture under the same configuration key: not resumed either
    wider = _trainer(tmp_path)
    wider.model.denoiser.body[0] = torch.nn.Conv2d(2, 5, 3, padding=1)
    assert Trainer(wider.model, wider.sampler, wider.cfg, wider.device, wider.rng, tmp_path / "ckpt.pt",
                   "key").try_resume() is False
    assert _trainer(tmp_path).try_resume()


def test_nan_in_training_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.run()  # a good checkpoint exists
    saved = (tmp_path / "ckpt.pt").read_bytes()
    bad = _trainer(tmp_path, sampler_images=[np.full((1, 40, 44), np.nan, np.float32)])
    bad.config_key = "bad"
    with pytest.raises(TrainingDiverged, match="non-finite"):
        bad.run()
    assert bad.step < 3
    assert (tmp_path / "ckpt.pt").read_bytes() == saved or bad.step > 0
