"""Baselines: the IRCNN/DPIR rules, the noise estimator, PnP consistency, classical deconvolution."""
import numpy as np
import pytest
import torch

from pipeline.baselines import classical
from pipeline.baselines.pnp import run_map_schedule, run_schedule
from pipeline.physics.noise import estimate_noise_level
from pipeline.baselines.schedules import SIGMA_START, dpir_schedule, geometric, ircnn_schedule
from pipeline.data import load_skimage, limit_size, to_channels
from pipeline.generators.kernels import gaussian_kernel
from pipeline.metrics import psnr
from pipeline.models.denoiser import ConditionedDenoiser
from pipeline.physics.blur import BlurPhysics
from pipeline.synthesis import blur_circular


def test_schedules_follow_their_rules():
    s = ircnn_schedule(0.03, 30)
    assert s.iterations == 30
    assert np.isclose(float(s.sigmas[0]), SIGMA_START) and np.isclose(float(s.sigmas[-1]), 0.03)
    assert np.allclose(s.rhos.numpy(), (0.03**2 / 3) / s.sigmas.numpy() ** 2, rtol=1e-5)
    d = dpir_schedule(torch.tensor([0.01, 0.05]), 8)
    assert d.sigmas.shape == (2, 8) and np.allclose(d.rhos[:, -1].numpy(), 0.23, rtol=1e-5)
    ratios = s.sigmas[1:] / s.sigmas[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-4)  # geometric decay
    assert geometric(1.0, 0.01, 1).item() == pytest.approx(0.01)


@pytest.fixture(scope="module")
def blurred():
    x = limit_size(to_channels(load_skimage("camera"), gray=True), 96)[..., 0][None]  # (1, 96, 96)
    k = gaussian_kernel(1.6, 1.6, 0.0, 11)
    rng = np.random.default_rng(0)
    y = blur_circular(x, k) + 0.02 * rng.standard_normal(x.shape).astype(np.float32)
    return x, k, y


def test_noise_estimator_finds_the_level(blurred):
    _, _, y = blurred
    assert estimate_noise_level(y) == pytest.approx(0.02, rel=0.15)


def test_map_schedule_with_a_constant_map_is_the_scalar_rule(blurred):
    _, k, y = blurred
    torch.manual_seed(0)
    den = ConditionedDenoiser(1, 8, (1, 2, 1)).eval()
    physics = BlurPhysics(torch.from_numpy(y)[None], torch.from_numpy(k))
    a = run_schedule(physics, den, ircnn_schedule(0.02, 6)).x
    b = run_map_schedule(physics, den, torch.full((1, 1, 96, 96), 0.02), 6).x
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("method, kwargs", [
    (classical.wiener, {"balance": 0.05}),
    (classical.richardson_lucy, {"num_iter": 15}),
    (classical.tv_deconvolution, {"lam": 2e-3}),
    (classical.unsupervised_wiener, {}),
])
def test_classical_methods_restore(blurred, method, kwargs):
    x, k, y = blurred
    out = method(y, k, **kwargs)
    assert out.shape == y.shape and np.isfinite(out).all()
    crop = 5
    before = psnr(y[0], x[0], crop)
    after = psnr(out[0], x[0], crop)
    assert after > before + 0.5, (method.__name__, before, after)
