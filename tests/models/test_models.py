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
    assert model.estimate_guidance(physics.y).shape == (2, 1, 37, 29)


def test_gradients_reach_denoiser_and_proxy():
    model = build_model(CFG, 1)
    physics, _ = _batch()
    model(physics).x.square().mean().backward()
    for name, module in (("denoiser", model.denoiser), ("proxy", model.proxy)):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name


def test_rho_follows_ircnn_rule_at_the_estimated_or_nominal_level():
    model = build_model(CFG, 1)
    level = torch.tensor([0.01, 0.05])
    rhos = model.penalties(level)
    assert rhos.shape == (2, 3) and torch.all(rhos[:, 1:] > rhos[:, :-1])  # penalty grows as strength decays
    s1 = 49 / 255
    assert np.allclose(rhos[:, 0].numpy(), (level**2 / 3 / s1**2).numpy(), rtol=1e-4)
    assert np.allclose(rhos[:, -1].numpy(), 1 / 3, rtol=1e-4)  # sigma_K = the level itself
    nominal = build_model(ModelConfig(**{**CFG.__dict__, "rho": "nominal"}), 1).penalties(level)
    assert torch.allclose(nominal[0], nominal[1]) and np.isclose(float(nominal[0, 0]), 0.01**2 / 3 / s1**2, rtol=1e-4)
    assert "rho_gain" not in dict(model.named_parameters())
    learned = build_model(ModelConfig(**{**CFG.__dict__, "learn_rho": True}), 1)
    assert "rho_gain" in dict(learned.named_parameters())


def test_guidance_modes():
    physics, sigma = _batch()
    sigma = sigma * torch.linspace(0.5, 1.5, 29)  # spatially varying
    none = build_model(ModelConfig(**{**CFG.__dict__, "guidance": "none"}), 1)(physics)
    assert all(torch.allclose(g, g.flatten()[0].expand_as(g)) for g in none.guidance)
    oracle_model = build_model(ModelConfig(**{**CFG.__dict__, "guidance": "oracle"}), 1)
    out = oracle_model(physics, target=sigma)
    assert torch.allclose(out.guidance[0], torch.full_like(sigma, 49 / 255))  # the schedule starts at s_start
    assert torch.allclose(out.guidance[-1], sigma, rtol=1e-5)  # ... and ends at the map, pixel by pixel
    with pytest.raises(ValueError, match="needs the true guidance target"):
        oracle_model(physics)
    learned = build_model(CFG, 1)
    assert torch.allclose(learned(physics).guidance[-1], learned.estimate_guidance(physics.y).clamp(1e-3, 49 / 255))


def test_with_map_is_the_pass_each_guidance_mode_runs_on_its_own_map():
    """``with_map`` on the map a mode reads (the proxy's, the true one, the classical scalar) is
    that mode's forward pass, output for output; on another map it follows that map."""
    physics, sigma = _batch()
    sigma = sigma * torch.linspace(0.5, 1.5, 29)
    torch.manual_seed(0)
    learned = build_model(CFG, 1).eval()
    torch.manual_seed(0)
    oracle = build_model(ModelConfig(**{**CFG.__dict__, "guidance": "oracle"}), 1).eval()
    with torch.no_grad():
        proxy_map = learned.estimate_guidance(physics.init())
        assert torch.allclose(learned.with_map(physics, proxy_map).x, learned(physics).x)
        assert torch.allclose(oracle.with_map(physics, sigma).x, oracle(physics, target=sigma).x)
        # the learned model's networks on the true map: exactly the oracle mode's pass (same weights)
        assert torch.allclose(learned.with_map(physics, sigma).x, oracle(physics, target=sigma).x)
        assert torch.allclose(learned.with_map(physics, sigma).guidance[-1], sigma, rtol=1e-5)
