"""Additive white Gaussian noise with a (possibly spatially varying) level map, and its classical
estimate from an observation."""
from __future__ import annotations

import numpy as np
import torch
from skimage.restoration import estimate_sigma


def add_gaussian_noise(x: np.ndarray, sigma_map: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``y = x + sigma_map * n``, ``n ~ N(0, 1)`` i.i.d.

    Args:
        x: ``(C, H, W)`` or ``(B, C, H, W)`` float array.
        sigma_map: standard deviation per pixel, broadcastable to ``x`` (``(1, H, W)``, a scalar...).
        rng: the seeded generator that draws ``n``.
    """
    noise = rng.standard_normal(size=x.shape).astype(np.float32)
    return (x + sigma_map * noise).astype(np.float32)


def estimate_noise_level(y: np.ndarray) -> float:
    """Noise std of ``y (C, H, W)`` by wavelet MAD (``skimage.restoration.estimate_sigma``,
    Donoho & Johnstone), averaged over channels; [0, 1] units."""
    img = np.moveaxis(np.asarray(y, dtype=np.float64), 0, -1)
    channel_axis = -1 if img.shape[-1] > 1 else None
    img = img if channel_axis is not None else img[..., 0]
    return float(estimate_sigma(img, channel_axis=channel_axis, average_sigmas=True))


def estimated_level_map(y: torch.Tensor) -> torch.Tensor:
    """The classical estimate as a guidance map: :func:`estimate_noise_level` of each image of
    ``y (B, C, H, W)``, broadcast to a constant ``(B, 1, H, W)`` map (no gradient: a fixed
    estimator, the ``estimated_guidance`` control's stand-in for the proxy)."""
    levels = [estimate_noise_level(img) for img in y.detach().float().cpu().numpy()]
    return torch.tensor(levels, dtype=y.dtype, device=y.device).reshape(-1, 1, 1, 1).expand(-1, 1, *y.shape[-2:])
