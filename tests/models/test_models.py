"""Model: output shapes, gradients reach denoiser and proxy, guidance modes, rho schedule."""
import numpy as np
import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.models.factory import build_model
from pipeline.physics.blur import BlurPhysics

CFG = ModelConfig(stages=3, denoiser_width=8, denoiser_dilations=(1, 2, 1), proxy_width=8)


def _batch(channels=1, shape=(37, 29)):
    g = torch.Generator().manual_seed(0)
    y = torch.rand(2, channels, *shape, generator=g)
    k = torch.rand(2, 5, 5, generator=g)
    return BlurPhysics(y, k / k.sum(dim=(1, 2), keepdim=True)), torch.full((2, 1, *shape), 0.03)


@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_equals_input_shape(channels):
    model = build_model(CFG, channels)
    physics, sigma = _batch(channels)
    out = model(physics)
    assert out.x.shape == physics.y.shape
    assert len(out.guidance) == 3 and all(g.shape == (2, 1, 37, 29) for g in out.guidance)
    assert all((g >= 0).all() for g in out.guidance)
    assert model.estimate_noise(physics.y).shape == (2, 1, 37, 29)


def test_gradients_reach_denoiser_and_proxy():
    model = build_model(CFG, 1)
    physics, _ = _batch()
    model(physics).x.square().mean().backward()
    for name, module in (("denoiser", model.denoiser), ("proxy", model.proxy)):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name


def test_rho_follows_ircnn_rule_and_can_be_learned():
    model = build_model(CFG, 1)
    rhos = model.rhos
    assert torch.all(rhos[1:] > rhos[:-1])  # penalty grows as the denoiser strength decays
    sigma, s1 = 0.01, 49 / 255
    assert np.isclose(float(rhos[0]), sigma**2 / 3 / s1**2, rtol=1e-4)
    assert np.isclose(float(rhos[-1]), 1 / 3, rtol=1e-4)
    assert "log_rho" not in dict(model.named_parameters())
    learned = build_model(ModelConfig(**{**CFG.__dict__, "learn_rho": True}), 1)
    assert "log_rho" in dict(learned.named_parameters())


def test_guidance_modes():
    physics, sigma = _batch()
    none = build_model(ModelConfig(**{**CFG.__dict__, "guidance": "none"}), 1)(physics)
    assert all(torch.allclose(g, g.flatten()[0].expand_as(g)) for g in none.guidance)
    oracle_model = build_model(ModelConfig(**{**CFG.__dict__, "guidance": "oracle"}), 1)
    assert all(torch.equal(g, sigma) for g in oracle_model(physics, sigma_map=sigma).guidance)
    with pytest.raises(ValueError, match="sigma_map"):
        oracle_model(physics)
