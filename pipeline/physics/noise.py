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


def tile_starts(size: int, window: int) -> np.ndarray:
    """Start offsets of windows of ``window`` px covering ``size`` px at half-window stride, the
    last one flush with the border (one window when ``size <= window``)."""
    if size <= window:
        return np.zeros(1, dtype=int)
    starts = np.arange(0, size - window + 1, max(window // 2, 1))
    return starts if starts[-1] == size - window else np.append(starts, size - window)


def local_level_map(y: np.ndarray, window: int = 32) -> np.ndarray:
    """A classical per-pixel noise-level map of ``y (C, H, W)``: :func:`estimate_noise_level` on
    overlapping ``window``-px tiles (half-window stride), each value placed at its tile's centre and
    interpolated bilinearly between centres (held constant beyond the outermost ones): ``(1, H, W)``
    float32, [0, 1] units.

    The classical rival of the proxy's map under spatially varying noise: the same wavelet MAD
    estimator as the scalar control, made local. Smaller windows follow the map more closely and
    estimate each level from fewer coefficients; the default was chosen on the validation split
    (docs/results.md).
    """
    if window < 8:
        raise ValueError(f"window must be at least 8 px, got {window}")
    h, w = y.shape[-2:]
    rows, cols = tile_starts(h, window), tile_starts(w, window)
    grid = np.array([[estimate_noise_level(y[:, r:r + window, c:c + window]) for c in cols] for r in rows])
    row_centres = rows + min(window, h) / 2.0 - 0.5
    col_centres = cols + min(window, w) / 2.0 - 0.5
    # separable linear interpolation: along the columns for every tile row, then along the rows
    across = np.stack([np.interp(np.arange(w), col_centres, line) for line in grid])  # (len(rows), W)
    full = np.stack([np.interp(np.arange(h), row_centres, across[:, j]) for j in range(w)], axis=1)  # (H, W)
    return full.astype(np.float32)[None]
