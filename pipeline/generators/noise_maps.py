"""Noise-level maps: the per-pixel standard deviation of the additive noise (the guidance target)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def constant_map(shape: tuple[int, int], level: float) -> np.ndarray:
    """``(1, H, W)`` map of one noise level (in [0, 1] units, e.g. 0.03 for 3 %)."""
    return np.full((1, *shape), level, dtype=np.float32)


def smooth_map(rng: np.random.Generator, shape: tuple[int, int], level: float, spread: float = 0.8) -> np.ndarray:
    """A smooth random ``(1, H, W)`` map with mean ``level``, ranging over ``level * (1 +- spread)``.

    White noise low-passed at a scale of a quarter of the image, plus a random linear ramp,
    rescaled to the range: the case a scalar noise level cannot describe.
    """
    h, w = shape
    field = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma=max(h, w) / 8, mode="wrap")
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    field = field / (field.std() + 1e-12) + 2.0 * (ramp - ramp.mean()) / (ramp.std() + 1e-12)
    field = (field - field.min()) / (field.max() - field.min() + 1e-12)  # [0, 1]
    field = field - field.mean()  # zero mean, range within [-1, 1]
    field = field / (np.abs(field).max() + 1e-12)
    return (level * (1.0 + spread * field)).astype(np.float32)[None]


def sample_level(rng: np.random.Generator, low_percent: float, high_percent: float) -> float:
    """A noise level drawn uniformly in ``[low, high]`` percent, returned in [0, 1] units."""
    return float(rng.uniform(low_percent, high_percent)) / 100.0
