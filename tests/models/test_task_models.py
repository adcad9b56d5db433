"""The rain and haze unfolded models: shapes, positivity, gradients reach every part, and the
classical estimates they start from."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.baselines.filters import dark_channel_prior, median_derain
from pipeline.data import limit_size, load_skimage, to_channels
from pipeline.generators.haze import add_haze
from pipeline.generators.rain import add_rain
from pipeline.models.denoiser import ConditionedDenoiser
from pipeline.models.task_models import UnfoldedDehaze, UnfoldedDerain, streak_bound


@pytest.fixture(scope="module")
def clean():
    return np.ascontiguousarray(limit_size(to_channels(load_skimage("chelsea"), gray=False), 40).transpose(2, 0, 1))


@pytest.mark.parametrize("cls", [UnfoldedDerain, UnfoldedDehaze])
@pytest.mark.parametrize("mode", ["learned", "none", "oracle"])
def test_forward_shapes_and_gradients(cls, mode, clean):
    torch.manual_seed(0)
    model = cls(ConditionedDenoiser(3, 8, (1, 2, 1)), channels=3, width=8, stages=3, guidance_mode=mode)
    s = add_rain(clean, np.random.default_rng(0)) if cls is UnfoldedDerain else add_haze(clean, np.random.default_rng(0))
    y = torch.from_numpy(s.y)[None]
    target = torch.full((1, 1, *y.shape[-2:]), 0.05)
    out = model(y, target) if mode == "oracle" else model(y)
    assert out.x.shape == y.shape and len(out.guidance) == 3 and out.rhos.shape == (3,)
    assert all(g.shape == (1, 1, *y.shape[-2:]) and (g > 0).all() for g in out.guidance)
    assert (out.proxy_maps[0] >= 0).all()
    loss = ((out.x - torch.from_numpy(clean)[None]) ** 2).mean() + out.proxy_maps[0].mean()
    loss.backward()
    assert model.denoiser.body[0].weight.grad is None  # the pre-trained prior is held fixed
    refine = model.streak_net if cls is UnfoldedDerain else model.refine
    assert refine.body[-1].weight.grad.abs().sum() > 0
    assert model.log_rho.grad is not None and torch.isfinite(model.log_rho.grad).all()
    if mode == "learned":
        assert model.proxy.body[-1].weight.grad.abs().sum() > 0  # the proxy shapes the output


@pytest.mark.parametrize("cls", [UnfoldedDerain, UnfoldedDehaze])
def test_models_start_from_the_classical_estimates(cls, clean):
    """The derain model's first estimate (what its streak network sees) is the median-filter
    baseline; an untrained dehaze model without guidance denoises exactly the dark channel
    prior baseline's output at its first stage."""
    torch.manual_seed(0)
    model = cls(ConditionedDenoiser(3, 8, (1, 2, 1)), channels=3, width=8, stages=1, guidance_mode="none")
    s = add_rain(clean, np.random.default_rng(2)) if cls is UnfoldedDerain else add_haze(clean, np.random.default_rng(2))
    y = torch.from_numpy(s.y)[None]
    seen = []
    watched = model.streak_net if cls is UnfoldedDerain else model.denoiser
    watched.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model(y)
    if cls is UnfoldedDerain:
        assert torch.equal(seen[0][:, 3:6], torch.from_numpy(median_derain(s.y))[None])
    else:
        assert torch.equal(seen[0], torch.from_numpy(dark_channel_prior(s.y)[0])[None])


def test_streak_bound_keeps_thin_bright_lines_and_ignores_flat_regions():
    y = torch.full((1, 3, 32, 32), 0.9)
    y[:, :, :16] = 0.2  # a dark half, a bright half: no rain anywhere
    assert streak_bound(y).abs().max() < 1e-6
    y[:, :, :, 5] += 0.05  # a thin bright line across both halves
    bound = streak_bound(y)
    assert torch.allclose(bound[0, 0, :, 5], torch.full((32,), 0.05), atol=1e-6)
    assert bound[0, 0, :, 6:].abs().max() < 1e-6


@pytest.mark.parametrize("cls", [UnfoldedDerain, UnfoldedDehaze])
def test_untrained_models_stay_close_to_the_nominal_schedule(cls, clean):
    """The guidance starts as a small raise of the nominal schedule, so an untrained model is
    close to its classical start; ``none`` feeds the nominal schedule itself."""
    torch.manual_seed(0)
    den = ConditionedDenoiser(3, 8, (1, 2, 1))
    s = add_rain(clean, np.random.default_rng(0)) if cls is UnfoldedDerain else add_haze(clean, np.random.default_rng(0))
    y = torch.from_numpy(s.y)[None]
    learned, none = (cls(den, channels=3, width=8, stages=3, guidance_mode=m) for m in ("learned", "none"))
    none.load_state_dict(learned.state_dict())
    with torch.no_grad():
        gl, gn = learned(y).guidance, none(y).guidance
    for k, (a, b) in enumerate(zip(gl, gn)):
        assert torch.allclose(b, none.nominal_sigmas[k].expand_as(b))
        assert (a >= b).all() and (a - b).mean() < 0.05
