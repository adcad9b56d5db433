"""Classical baselines for rain and haze: the dark channel prior with guided-filter refinement
(He, Sun, Tang, CVPR 2009 / TPAMI 2011; He, Sun, Tang, ECCV 2010) and a median-filter rain
decomposition. Images are ``(C, H, W)`` float arrays in [0, 1].
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def box(img: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a ``(2r+1)^2`` window of ``(H, W)``, reflected at the borders."""
    return ndimage.uniform_filter(img, size=2 * radius + 1, mode="reflect")


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter of ``src (H, W)`` by a grey ``guide (H, W)``: edge-preserving
    smoothing that is locally a linear function of the guide."""
    mean_i, mean_p = box(guide, radius), box(src, radius)
    cov_ip = box(guide * src, radius) - mean_i * mean_p
    var_i = box(guide * guide, radius) - mean_i**2
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box(a, radius) * guide + box(b, radius)


def dark_channel(img: np.ndarray, patch: int) -> np.ndarray:
    """``(H, W)``: the minimum over channels and a ``patch x patch`` window."""
    return ndimage.minimum_filter(img.min(axis=0), size=patch, mode="nearest")


def estimate_airlight(img: np.ndarray, dark: np.ndarray, fraction: float = 0.001) -> np.ndarray:
    """``(C,)``: the mean colour of the pixels whose dark channel is in the top ``fraction``."""
    n = max(1, int(dark.size * fraction))
    idx = np.argpartition(dark.ravel(), -n)[-n:]
    return img.reshape(img.shape[0], -1)[:, idx].mean(axis=1)


def dark_channel_prior(y: np.ndarray, patch: int = 15, omega: float = 0.95, t_min: float = 0.1,
                       radius: int = 30, eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dehaze ``y (C, H, W)``: returns ``(x, t (H, W), airlight (C,))``.

    ``t = 1 - omega * dark(y / A)`` refined by the guided filter on the grey image, floored at
    ``t_min``; ``x = (y - A) / t + A``. The patch and radius shrink with small images.
    """
    side = min(y.shape[-2:])
    patch = max(3, min(patch, side // 8 * 2 + 1))
    radius = max(2, min(radius, side // 8))
    airlight = estimate_airlight(y, dark_channel(y, patch))
    t = 1.0 - omega * dark_channel(y / np.maximum(airlight[:, None, None], 1e-3), patch)
    t = guided_filter(y.mean(axis=0), t, radius, eps)
    t = np.clip(t, t_min, 1.0)
    x = (y - airlight[:, None, None]) / t[None] + airlight[:, None, None]
    return np.clip(x, 0.0, 1.0).astype(np.float32), t.astype(np.float32), airlight.astype(np.float32)


def median_derain(y: np.ndarray, size: int = 5) -> np.ndarray:
    """Derain ``y (C, H, W)``: rain only adds light in thin streaks, so the background is
    ``min(y, median_size(y))`` (the median removes structures thinner than half its window)."""
    med = ndimage.median_filter(y, size=(1, size, size), mode="reflect")
    return np.minimum(y, med).astype(np.float32)
