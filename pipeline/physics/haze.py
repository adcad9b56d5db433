"""The haze operator (atmospheric scattering model), its closed-form data step, and the dark
channel prior's estimate of it from the hazy image alone.

    y = x * t + A * (1 - t),    t = exp(-beta * d)

``x`` the clear image, ``t (B, 1, H, W)`` the transmission in (0, 1], ``A (B, C, 1, 1)`` the
airlight (one value per channel), ``d`` the scene depth. With ``t`` and ``A`` known (given, or
estimated by the model), the HQS data step is per pixel:
``argmin_z ||t z + A (1 - t) - y||^2 + rho ||z - x||^2 = (t (y - A (1 - t)) + rho x) / (t^2 + rho)``.

The synthetic haze of :mod:`pipeline.generators.haze` is :func:`transmission` and :func:`haze`
on its draws: the only forward model of the task.
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.physics.filters import guided_filter, min_filter

T_MIN = 1e-3  # transmission floor: t = 0 would make the clear image unobservable
# |log(t / t_dcp)| the dehaze model may predict or apply at once: t within e^-3..e^3 of the prior
CORRECTION_LIMIT = 3.0


def transmission(depth: torch.Tensor | np.ndarray, beta: torch.Tensor | float) -> torch.Tensor | np.ndarray:
    """``t = exp(-beta d)`` for ``depth (B, 1, H, W)`` >= 0 and ``beta`` a float or ``(B,)``.

    A numpy ``depth`` (and float ``beta``) gives a numpy ``t`` by numpy's ``exp``: the synthetic
    samples were recorded with it, and torch's float32 ``exp`` differs from it in the last bit.
    """
    if isinstance(depth, np.ndarray):
        return np.exp(-beta * depth)
    if isinstance(beta, torch.Tensor):
        beta = beta.reshape(-1, 1, 1, 1)
    return torch.exp(-beta * depth)


def haze(x: torch.Tensor, t: torch.Tensor, airlight: torch.Tensor) -> torch.Tensor:
    """``x (B, C, H, W)``, ``t (B, 1, H, W)``, ``airlight (B, C, 1, 1)`` -> hazy ``(B, C, H, W)``.
    Arithmetic only: numpy arrays and any broadcastable shapes work alike (the generator's
    ``(C, H, W)``, ``(1, H, W)``, ``(C, 1, 1)`` draws)."""
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


def dark_channel_estimate(y: torch.Tensor, patch: int = 15, omega: float = 0.95, t_min: float = 0.1,
                          radius: int | None = None, eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """The dark channel prior (He, Sun, Tang, CVPR 2009) on the hazy ``y (B, C, H, W)``: the
    transmission ``t (B, 1, H, W)`` in ``[t_min, 1]`` and the airlight ``A (B, C, 1, 1)``.

    ``A`` is the mean colour of the 0.1 % pixels with the highest dark channel (the minimum over
    the channels and a ``patch x patch`` window); ``t = 1 - omega * dark(y / A)``, refined by the
    guided filter (He, Sun, Tang, ECCV 2010) on the grey image with ``eps``. The patch shrinks
    with small images (to at most ``side / 4``); the filter's radius is ``side // 8`` (at least 2),
    capped at ``radius`` when given.
    """
    side = min(y.shape[-2:])
    patch = max(3, min(patch, side // 8 * 2 + 1))
    radius = max(2, side // 8 if radius is None else min(radius, side // 8))
    dark = min_filter(y.min(1, keepdim=True).values, patch)
    n = max(1, dark[0].numel() // 1000)
    idx = dark.flatten(1).topk(n, dim=1).indices  # (B, n)
    airlight = torch.gather(y.flatten(2), 2, idx[:, None].expand(-1, y.shape[1], -1)).mean(2)[..., None, None]
    norm = y / airlight.clamp_min(1e-3)
    t = 1.0 - omega * min_filter(norm.min(1, keepdim=True).values, patch)
    t = guided_filter(y.mean(1, keepdim=True), t, radius, eps)
    return t.clamp(t_min, 1.0), airlight


def transmission_correction(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The dehazing guidance target: how far the dark channel prior's transmission is off,
    ``log(t / t_dcp) (B, 1, H, W)`` for the true transmission ``t (B, 1, H, W)`` of the hazy
    ``y (B, C, H, W)`` (``t_dcp``: :func:`dark_channel_estimate` on ``y``, as the dehaze model
    computes it). Signed: positive where the prior over-estimates the haze. What the dehaze
    model's proxy predicts from ``y``; its magnitude is the residual degradation level of the
    classical start."""
    with torch.no_grad():
        t0, _ = dark_channel_estimate(y)
        return torch.log(t.clamp(T_MIN, 1.0) / t0)
