"""Haze and rain operators: exact inversion, the data step's optimality, shapes, and the
generators' samples as the operators applied to their draws (one forward model per task)."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.data import limit_size, load_skimage, to_channels
from pipeline.generators.haze import add_haze
from pipeline.generators.rain import RainSpec, add_rain
from pipeline.physics.haze import HazePhysics, dehaze_exact, haze, transmission
from pipeline.physics.rain import RainPhysics, rain


def _astronaut(side: int = 37) -> torch.Tensor:
    x = limit_size(to_channels(load_skimage("astronaut"), gray=False), side)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].double()


def test_haze_data_step_inverts_the_forward_model_exactly_without_noise():
    x = _astronaut()
    depth = torch.rand(1, 1, *x.shape[-2:], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = transmission(depth, 1.3)
    airlight = torch.tensor([0.9, 0.85, 0.8], dtype=torch.float64).reshape(1, 3, 1, 1)
    y = haze(x, t, airlight)
    assert torch.allclose(dehaze_exact(y, t, airlight), x, atol=1e-12)
    physics = HazePhysics(y, t, airlight)
    assert torch.allclose(physics.init(), x, atol=1e-12)
    # rho -> 0: the data step is the exact inverse, whatever the prior point
    assert torch.allclose(physics.data_step(torch.zeros_like(x), 1e-12), x, atol=1e-8)


def test_haze_data_step_is_the_minimiser():
    g = torch.Generator().manual_seed(1)
    y, x = torch.rand(2, 3, 9, 11, generator=g, dtype=torch.float64)[:, None].unbind(0)
    t = torch.rand(1, 1, 9, 11, generator=g, dtype=torch.float64) * 0.9 + 0.1
    airlight = torch.full((1, 3, 1, 1), 0.8, dtype=torch.float64)
    physics, rho = HazePhysics(y, t, airlight), 0.37
    z = physics.data_step(x, rho).requires_grad_(True)
    obj = ((haze(z, physics.t, airlight) - y) ** 2).sum() + rho * ((z - x) ** 2).sum()
    (grad,) = torch.autograd.grad(obj, z)
    assert grad.abs().max() < 1e-10


def test_rain_data_step_is_the_minimiser_and_inverts_at_rho_zero():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 3, 10, 8, generator=g, dtype=torch.float64) * 0.5
    r = torch.rand(1, 1, 10, 8, generator=g, dtype=torch.float64) * 0.4
    y = rain(x, r)
    physics = RainPhysics(y, r)
    assert torch.allclose(physics.data_step(torch.zeros_like(x), 0.0), x, atol=1e-12)
    prior, rho = torch.rand_like(x), 0.5
    z = physics.data_step(prior, rho).requires_grad_(True)
    obj = ((z + r - y) ** 2).sum() + rho * ((z - prior) ** 2).sum()
    assert torch.autograd.grad(obj, z)[0].abs().max() < 1e-10
    heavy = rain(x, r, veil=0.7, airlight=0.9)
    assert torch.allclose(RainPhysics(heavy, r, veil=0.7, airlight=0.9).init(), x, atol=1e-12)


def test_synthetic_haze_sample_round_trips_through_the_operator():
    x = _astronaut(48)[0].float().numpy()
    s = add_haze(x, np.random.default_rng(3))
    assert 0.0 < s.t.min() and s.t.max() <= 1.0
    back = dehaze_exact(torch.from_numpy(s.y)[None], torch.from_numpy(s.t)[None], torch.from_numpy(s.airlight).reshape(1, -1, 1, 1))
    assert np.abs(back[0].numpy() - x).max() < 1e-4


def test_a_haze_sample_is_the_operator_on_its_draws():
    x = _astronaut(48)[0].float().numpy()
    for depth in (None, np.linspace(0.0, 3.0, x.shape[1])[:, None] * np.ones(x.shape[2])):
        s = add_haze(x, np.random.default_rng(7), depth=depth)
        # the torch operator on the drawn t and A gives the sample bit for bit
        a = torch.from_numpy(s.airlight).reshape(1, -1, 1, 1)
        assert np.array_equal(haze(torch.from_numpy(x)[None], torch.from_numpy(s.t)[None], a)[0].numpy(), s.y)
        assert np.array_equal(transmission(s.depth, s.beta)[None], s.t)
        # torch's exp agrees with numpy's (what the samples hold) to the last bit or so
        t = transmission(torch.from_numpy(s.depth)[None, None], torch.tensor([s.beta]))[0]
        assert torch.allclose(t, torch.from_numpy(s.t), rtol=0, atol=2e-7)


def test_a_rain_sample_is_the_operator_on_its_draws():
    x = _astronaut(48)[0].float().numpy()
    for heavy in (False, True):
        s = add_rain(x, np.random.default_rng(8), RainSpec(heavy=heavy))
        assert (s.veil < 1.0) == heavy
        y = rain(torch.from_numpy(x)[None], torch.from_numpy(s.streaks)[None], s.veil, s.airlight)
        assert np.array_equal(y[0].numpy(), s.y)
        # and the data step inverts it where nothing was clipped
        back = RainPhysics(torch.from_numpy(s.y)[None], torch.from_numpy(s.streaks)[None], s.veil, s.airlight).init()
        inside = (s.y > 0) & (s.y < 1)
        assert np.abs(back[0].numpy() - x)[inside].max() < 1e-5
