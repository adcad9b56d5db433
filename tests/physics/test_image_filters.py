"""The torch image filters against scipy's, and the classical rain and haze estimates built on them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from pipeline.data import limit_size, load_skimage, to_channels
from pipeline.generators.haze import add_haze
from pipeline.generators.rain import add_rain
from pipeline.physics.filters import box_mean, guided_filter, median_filter, min_filter
from pipeline.physics.haze import dark_channel_estimate
from pipeline.physics.rain import median_background


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return np.ascontiguousarray(limit_size(to_channels(load_skimage("chelsea"), gray=False), 40).transpose(2, 0, 1))


def _noise(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random(shape).astype(np.float32))


def test_median_and_min_filters_equal_scipys():
    x = _noise((2, 3, 13, 10))
    ref = ndimage.median_filter(x.numpy(), size=(1, 1, 5, 5), mode="reflect")
    assert np.array_equal(median_filter(x, 5).numpy(), ref)
    ref = ndimage.minimum_filter(x.numpy(), size=(1, 1, 7, 7), mode="nearest")
    assert np.array_equal(min_filter(x, 7).numpy(), ref)


def test_box_mean_averages_the_window_inside_the_image():
    x = _noise((1, 1, 12, 9), 1).double()
    out = box_mean(x, 2)
    a = x[0, 0].numpy()
    for i, j in [(0, 0), (5, 4), (11, 8), (3, 0)]:  # corners, interior, an edge
        assert out[0, 0, i, j].item() == pytest.approx(a[max(i - 2, 0) : i + 3, max(j - 2, 0) : j + 3].mean(), abs=1e-12)


def test_guided_filter_keeps_a_constant_and_follows_the_guide():
    g = _noise((1, 1, 20, 20)).double()
    assert torch.allclose(guided_filter(g, torch.full_like(g, 0.3), 3, 1e-3), torch.full_like(g, 0.3), atol=1e-12)
    assert (guided_filter(g, g, 2, 1e-8) - g).abs().max() < 1e-3  # tiny eps: the guide itself


def test_median_background_removes_thin_bright_lines_and_keeps_the_rest(clean):
    y = torch.from_numpy(add_rain(clean, np.random.default_rng(2)).y)[None]
    out = median_background(y)
    assert (out <= y).all()  # rain only adds light
    flat = torch.full((1, 3, 16, 16), 0.4)
    flat[:, :, :, 7] = 0.9  # a one-pixel bright line
    assert torch.equal(median_background(flat), torch.full_like(flat, 0.4))


def test_dark_channel_estimate_recovers_transmission_on_synthetic_haze(clean):
    # dense haze: the farthest pixels are nearly pure airlight, as the prior assumes
    s = add_haze(clean, np.random.default_rng(4), beta_range=(1.7, 1.8))
    t, airlight = dark_channel_estimate(torch.from_numpy(s.y)[None])
    assert t.shape == (1, 1, *clean.shape[-2:]) and 0.1 <= t.min() and t.max() <= 1.0
    assert abs(float(airlight.mean()) - float(s.airlight.mean())) < 0.1
    assert np.corrcoef(t[0, 0].numpy().ravel(), s.t[0].ravel())[0, 1] > 0.3


def test_dark_channel_estimate_is_per_image_in_a_batch(clean):
    ys = [torch.from_numpy(add_haze(clean, np.random.default_rng(i)).y)[None] for i in (5, 6)]
    t, airlight = dark_channel_estimate(torch.cat(ys))
    for i, y in enumerate(ys):
        ti, ai = dark_channel_estimate(y)
        assert torch.allclose(t[i], ti[0], atol=1e-6) and torch.allclose(airlight[i], ai[0], atol=1e-6)
