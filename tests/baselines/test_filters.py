"""The classical rain and haze baselines on real images: they must actually restore, and they are
the torch estimates of :mod:`pipeline.physics` (the models' classical start), numpy in and out."""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from pipeline.baselines.filters import dark_channel_prior, median_derain
from pipeline.data import limit_size, load_skimage, to_channels
from pipeline.generators.haze import add_haze
from pipeline.generators.rain import add_rain
from pipeline.metrics import psnr
from pipeline.physics.haze import dark_channel_estimate, dehaze_exact
from pipeline.physics.rain import median_background


def _img(name: str, side: int = 96) -> np.ndarray:
    return np.ascontiguousarray(limit_size(to_channels(load_skimage(name), gray=False), side).transpose(2, 0, 1))


def chw(a: np.ndarray) -> np.ndarray:
    return a.transpose(1, 2, 0)


def test_dark_channel_prior_improves_psnr_on_synthetic_haze():
    x = _img("chelsea")
    s = add_haze(x, np.random.default_rng(1))
    out, t, airlight = dark_channel_prior(s.y)
    assert out.shape == x.shape and t.shape == x.shape[-2:] and airlight.shape == (3,)
    assert out.dtype == t.dtype == airlight.dtype == np.float32
    assert 0.1 <= t.min() and t.max() <= 1
    assert psnr(chw(out), chw(x)) > psnr(chw(s.y), chw(x)) + 2.0


def test_median_derain_improves_psnr_on_synthetic_rain():
    x = _img("coffee")
    s = add_rain(x, np.random.default_rng(2))
    out = median_derain(s.y, 5)
    assert out.dtype == np.float32
    assert psnr(chw(out), chw(x)) > psnr(chw(s.y), chw(x))
    # the classical decomposition: min(y, median_5(y)) with mirrored borders
    assert np.array_equal(out, np.minimum(s.y, ndimage.median_filter(s.y, size=(1, 5, 5), mode="reflect")))


def test_the_baselines_are_the_torch_estimates():
    x = _img("astronaut", 300)  # large enough for the guided filter's radius cap (30) to act
    y = add_haze(x, np.random.default_rng(3)).y
    yt = torch.from_numpy(y)[None]
    out, t, airlight = dark_channel_prior(y)
    t_ref, a_ref = dark_channel_estimate(yt, radius=30)
    assert np.array_equal(t, t_ref[0, 0].numpy()) and np.array_equal(airlight, a_ref.flatten().numpy())
    assert np.array_equal(out, dehaze_exact(yt, t_ref, a_ref).clamp(0, 1)[0].numpy())
    assert not torch.equal(t_ref, dark_channel_estimate(yt)[0])  # the cap is what differs from the model's start
    y = add_rain(x, np.random.default_rng(4)).y
    assert np.array_equal(median_derain(y), median_background(torch.from_numpy(y)[None])[0].numpy())
