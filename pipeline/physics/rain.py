"""The rain operator: an additive, non-negative streak layer, optionally behind a veil.

    y = x + r                          (light rain)
    y = a (x + r) + (1 - a) A          (heavy rain: an atmospheric veil of airlight A, a in (0, 1])

With the streak estimate ``r`` (and the veil) known, the HQS data step is per pixel:
``argmin_z ||z + r - y'||^2 + rho ||z - x||^2 = (y' - r + rho x) / (1 + rho)`` where ``y'`` is the
observation with the veil removed.

The synthetic rain of :mod:`pipeline.generators.rain` is :func:`rain` on its drawn streak layer
and veil: the only forward model of the task.
"""
from __future__ import annotations

import torch

from pipeline.physics.filters import median_filter


def rain(x: torch.Tensor, streaks: torch.Tensor, veil: float = 1.0, airlight: float = 1.0) -> torch.Tensor:
    """``x (B, C, H, W)`` plus ``streaks (B, 1 or C, H, W)`` >= 0, behind a veil; clipped to [0, 1]."""
    return (veil * (x + streaks) + (1.0 - veil) * airlight).clamp(0.0, 1.0)


def median_background(y: torch.Tensor, size: int = 5) -> torch.Tensor:
    """The classical rain decomposition of ``y (B, C, H, W)``: rain only adds light, in thin
    streaks, so the background is ``min(y, median_size(y))`` per channel (the median removes
    structures thinner than half its window; mirrored borders, :func:`median_filter`)."""
    return torch.minimum(y, median_filter(y, size))


class RainPhysics:
    """The deraining operator bound to one batch: ``y (B, C, H, W)`` and a streak estimate
    ``streaks (B, 1 or C, H, W)``; the same interface as the other tasks' physics."""

    def __init__(self, y: torch.Tensor, streaks: torch.Tensor, veil: float = 1.0, airlight: float = 1.0):
        self.y, self.streaks = y, streaks
        self.base = (y - (1.0 - veil) * airlight) / veil - streaks

    def init(self) -> torch.Tensor:
        """``x_0 = y - r``, clipped to the range."""
        return self.base.clamp(0.0, 1.0)

    def data_step(self, x: torch.Tensor, rho: torch.Tensor | float) -> torch.Tensor:
        """Closed-form per-pixel ``argmin_z ||z + r - y||^2 + rho ||z - x||^2``."""
        if isinstance(rho, torch.Tensor):
            rho = rho.reshape(-1, 1, 1, 1)
        return (self.base + rho * x) / (1.0 + rho)
