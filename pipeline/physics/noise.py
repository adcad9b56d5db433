"""Additive white Gaussian noise with a (possibly spatially varying) level map."""
from __future__ import annotations

import numpy as np


def add_gaussian_noise(x: np.ndarray, sigma_map: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``y = x + sigma_map * n``, ``n ~ N(0, 1)`` i.i.d.

    Args:
        x: ``(C, H, W)`` or ``(B, C, H, W)`` float array.
        sigma_map: standard deviation per pixel, broadcastable to ``x`` (``(1, H, W)``, a scalar...).
        rng: the seeded generator that draws ``n``.
    """
    noise = rng.standard_normal(size=x.shape).astype(np.float32)
    return (x + sigma_map * noise).astype(np.float32)
