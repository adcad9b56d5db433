"""The classical noise-level estimates: the scalar one and its local map."""
from __future__ import annotations

import numpy as np
import pytest
from skimage import data, img_as_float32

from pipeline.physics.noise import add_gaussian_noise, estimate_noise_level, local_level_map, tile_starts


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return img_as_float32(data.camera())[None, ::2, ::2]  # (1, 256, 256)


@pytest.mark.parametrize("size,window", [(256, 32), (250, 32), (100, 48), (30, 32), (33, 8)])
def test_tiles_cover_the_image_at_half_window_stride_the_last_flush_with_the_border(size, window):
    starts = tile_starts(size, window)
    assert starts[0] == 0 and starts[-1] == max(size - window, 0)
    assert np.all(np.diff(starts) <= window // 2) and np.all(np.diff(starts) > 0)


def test_one_window_over_the_whole_image_is_the_scalar_estimate(camera):
    y = add_gaussian_noise(camera, np.full_like(camera, 0.05), np.random.default_rng(0))
    local = local_level_map(y, window=256)
    assert local.shape == (1, 256, 256) and local.dtype == np.float32
    assert np.allclose(local, estimate_noise_level(y), rtol=1e-6)


def test_the_local_map_follows_a_noise_level_that_varies_across_the_image(camera):
    """Noise at 1 % on the left rising to 8 % on the right: the local map recovers the ramp
    (each side's mean within 25 % of the truth) and errs far less than the scalar estimate."""
    ramp = np.linspace(0.01, 0.08, camera.shape[-1], dtype=np.float32)[None, None, :].repeat(256, axis=1)
    y = add_gaussian_noise(camera, ramp, np.random.default_rng(1))
    local = local_level_map(y, window=32)
    for side in (slice(0, 48), slice(-48, None)):
        assert local[..., side].mean() == pytest.approx(ramp[..., side].mean(), rel=0.25)
    scalar_error = np.abs(estimate_noise_level(y) - ramp).mean()
    assert np.abs(local - ramp).mean() < 0.5 * scalar_error


def test_a_window_too_small_to_estimate_anything_is_refused(camera):
    with pytest.raises(ValueError, match="at least 8"):
        local_level_map(camera, window=4)
