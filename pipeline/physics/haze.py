"""The haze operator (atmospheric scattering model) and its closed-form data step.

    y = x * t + A * (1 - t),    t = exp(-beta * d)

``x`` the clear image, ``t (B, 1, H, W)`` the transmission in (0, 1], ``A (B, C, 1, 1)`` the
airlight (one value per channel), ``d`` the scene depth. With ``t`` and ``A`` known (given, or
estimated by the model), the HQS data step is per pixel:
``argmin_z ||t z + A (1 - t) - y||^2 + rho ||z - x||^2 = (t (y - A (1 - t)) + rho x) / (t^2 + rho)``.
"""
from __future__ import annotations

import torch

T_MIN = 1e-3  # transmission floor: t = 0 would make the clear image unobservable


def transmission(depth: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
    """``t = exp(-beta d)`` for ``depth (B, 1, H, W)`` >= 0 and ``beta`` a float or ``(B,)``."""
    if isinstance(beta, torch.Tensor):
        beta = beta.reshape(-1, 1, 1, 1)
    return torch.exp(-beta * depth)


def haze(x: torch.Tensor, t: torch.Tensor, airlight: torch.Tensor) -> torch.Tensor:
    """``x (B, C, H, W)``, ``t (B, 1, H, W)``, ``airlight (B, C, 1, 1)`` -> hazy ``(B, C, H, W)``."""
    return x * t + airlight * (1.0 - t)


def dehaze_exact(y: torch.Tensor, t: torch.Tensor, airlight: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`haze` (noise-free, ``t`` floored at ``T_MIN``): ``(y - A (1 - t)) / t``."""
    t = t.clamp_min(T_MIN)
    return (y - airlight * (1.0 - t)) / t


class HazePhysics:
    """The dehazing operator bound to one batch: ``y (B, C, H, W)``, ``t (B, 1, H, W)``, ``A (B, C, 1, 1)``.

    Same interface as :class:`pipeline.physics.blur.BlurPhysics` (``init``, ``data_step``), so the
    unfolded model runs any task.
    """

    def __init__(self, y: torch.Tensor, t: torch.Tensor, airlight: torch.Tensor):
        self.y, self.t, self.airlight = y, t.clamp(T_MIN, 1.0), airlight
        self._ty = self.t * (y - airlight * (1.0 - self.t))
        self._t2 = self.t**2

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return haze(x, self.t, self.airlight)

    def init(self) -> torch.Tensor:
        """``x_0``: the exact inversion with the given ``t`` and ``A``, clipped to the range."""
        return dehaze_exact(self.y, self.t, self.airlight).clamp(0.0, 1.0)

    def data_step(self, x: torch.Tensor, rho: torch.Tensor | float) -> torch.Tensor:
        """Closed-form per-pixel ``argmin_z ||t z + A (1 - t) - y||^2 + rho ||z - x||^2``."""
        if isinstance(rho, torch.Tensor):
            rho = rho.reshape(-1, 1, 1, 1)
        return (self._ty + rho * x) / (self._t2 + rho)
