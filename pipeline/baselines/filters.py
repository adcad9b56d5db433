"""Classical baselines for rain and haze, on ``(C, H, W)`` float arrays in [0, 1]: the
median-filter rain decomposition and the dark channel prior with guided-filter refinement
(He, Sun, Tang, CVPR 2009 / TPAMI 2011; He, Sun, Tang, ECCV 2010).

Numpy in, numpy out over the one implementation of each, the torch estimates of
:mod:`pipeline.physics` that the rain and haze models start from: a baseline scores exactly the
classical start of its task's model.
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.physics.haze import dark_channel_estimate, dehaze_exact
from pipeline.physics.rain import median_background


def _batch(y: np.ndarray) -> torch.Tensor:
    """``(C, H, W)`` array -> ``(1, C, H, W)`` float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))[None]


def dark_channel_prior(y: np.ndarray, patch: int = 15, omega: float = 0.95, t_min: float = 0.1,
                       radius: int = 30, eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dehaze ``y (C, H, W)``: returns ``(x, t (H, W), airlight (C,))``.

    ``t`` and the airlight ``A`` from :func:`pipeline.physics.haze.dark_channel_estimate` (the
    guided filter's radius capped at ``radius``), ``x`` the haze model inverted with them,
    ``(y - A (1 - t)) / t``, clipped to [0, 1].
    """
    yt = _batch(y)
    with torch.no_grad():
        t, airlight = dark_channel_estimate(yt, patch, omega, t_min, radius, eps)
        x = dehaze_exact(yt, t, airlight).clamp(0.0, 1.0)
    return x[0].numpy(), t[0, 0].numpy(), airlight.flatten().numpy()


def median_derain(y: np.ndarray, size: int = 5) -> np.ndarray:
    """Derain ``y (C, H, W)``: ``min(y, median_size(y))``
    (:func:`pipeline.physics.rain.median_background`)."""
    with torch.no_grad():
        return median_background(_batch(y), size)[0].numpy()
