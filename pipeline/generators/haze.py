"""Synthetic haze: the draws (a depth map, the scattering coefficient ``beta``, the airlight
``A``) for the haze operator of :mod:`pipeline.physics.haze`, ``y = x t + A (1 - t)``,
``t = exp(-beta d)``.

No depth sensor exists for our images, so unless the user supplies a depth map the depth is a
proxy: a smooth random field plus a vertical gradient (the top of a photo is usually farther
away). Every draw comes from the ``rng`` passed in and is recorded; the ranges default to
``degrade.haze``'s (:class:`pipeline.config.HazeConfig`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pipeline.config import HazeConfig
from pipeline.physics.haze import haze, transmission


def depth_proxy(rng: np.random.Generator, shape: tuple[int, int], gradient: float = 0.6) -> np.ndarray:
    """``(H, W)`` depth in [0, 1]: ``gradient`` x a top-to-bottom ramp (far at the top) plus the
    rest from a smooth random field (scale: a sixth of the longer side)."""
    h, w = shape
    field = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma=max(h, w) / 6, mode="reflect")
    field = (field - field.min()) / (np.ptp(field) + 1e-12)
    ramp = np.linspace(1.0, 0.0, h)[:, None] * np.ones((1, w))
    return (gradient * ramp + (1.0 - gradient) * field).astype(np.float32)


@dataclass
class HazeSample:
    """One hazy observation: ``y (C, H, W)``, ``t (1, H, W)``, ``airlight (C,)``, the depth used
    ``(H, W)`` and the scattering coefficient ``beta`` drawn (``record`` rounds them)."""

    y: np.ndarray
    t: np.ndarray
    airlight: np.ndarray
    depth: np.ndarray
    beta: float
    record: dict


def add_haze(x: np.ndarray, rng: np.random.Generator, depth: np.ndarray | None = None,
             beta_range: tuple[float, float] = HazeConfig.beta,
             airlight_range: tuple[float, float] = HazeConfig.airlight) -> HazeSample:
    """Haze on ``x (C, H, W)`` with ``depth (H, W)`` (values in [0, 1] after normalisation) or a proxy.

    Raises ValueError when a given depth map's size is not the image's.
    """
    c, h, w = x.shape
    if depth is None:
        depth, source = depth_proxy(rng, (h, w)), "proxy"
    else:
        depth = np.asarray(depth, np.float32).squeeze()
        if depth.shape != (h, w):
            raise ValueError(f"depth map is {'x'.join(map(str, depth.shape))}, the image is {h}x{w}")
        depth = (depth - depth.min()) / (np.ptp(depth) + 1e-12)
        source = "given"
    beta = float(rng.uniform(*beta_range))
    a = float(rng.uniform(*airlight_range))
    airlight = np.full(c, a, np.float32)
    t = transmission(depth, beta).astype(np.float32)[None]
    y = haze(x, t, airlight[:, None, None]).astype(np.float32)
    record = {"haze_beta": round(beta, 4), "haze_airlight": round(a, 4), "haze_depth": source,
              "haze_t_mean": round(float(t.mean()), 4)}
    return HazeSample(y, t, airlight, depth, beta, record)
