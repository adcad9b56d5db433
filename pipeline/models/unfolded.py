"""K unfolded half-quadratic-splitting stages with learned hyper-guidance.

Each stage ``k``: data step ``z_k = argmin ||A z - y||^2 + rho_k ||z - x_{k-1}||^2`` (closed form,
from the task's physics), guidance ``g_k = H_theta(z_k)`` (the proxy), prior step
``x_k = D_omega(z_k, g_k)`` (the denoiser, shared across stages). The same loop, with the proxy
replaced by a hand-set schedule, is plug-and-play HQS (IRCNN, DPIR): :func:`hqs`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import nn

from pipeline.baselines.schedules import SIGMA_START, geometric, ircnn_schedule
from pipeline.models.denoiser import ConditionedDenoiser
from pipeline.models.proxy import GuidanceProxy


class Physics(Protocol):
    """What the unfolded loop asks of a task's forward model bound to its observations."""

    def init(self) -> torch.Tensor: ...

    def data_step(self, x: torch.Tensor, rho: torch.Tensor | float) -> torch.Tensor: ...


Guidance = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass
class UnfoldedOutput:
    x: torch.Tensor  # (B, C, H, W) the restored image
    guidance: list[torch.Tensor]  # K maps (B, 1, H, W) fed to the denoiser
    rhos: torch.Tensor  # (K,) or (B, K) the penalties used


def hqs(physics: Physics, denoiser: nn.Module, rhos: torch.Tensor, guidance: Guidance) -> UnfoldedOutput:
    """Run ``K = rhos.shape[-1]`` HQS iterations.

    Args:
        physics: the observation's forward model (``init``, ``data_step``).
        denoiser: ``D(z (B, C, H, W), g (B, 1, H, W)) -> (B, C, H, W)``.
        rhos: ``(K,)`` or ``(B, K)`` penalties.
        guidance: ``(k, z_k) -> (B, 1, H, W)``, the map fed to the denoiser at stage ``k``.
    """
    x = physics.init()
    maps = []
    for k in range(rhos.shape[-1]):
        rho = rhos[..., k]
        z = physics.data_step(x, rho)
        g = guidance(k, z)
        maps.append(g)
        x = denoiser(z, g)
    return UnfoldedOutput(x, maps, rhos)


def constant_maps(sigmas: torch.Tensor) -> Guidance:
    """Guidance from a schedule: ``sigmas (K,)`` or ``(B, K)`` broadcast to ``(B, 1, H, W)`` maps."""

    def guidance(k: int, z: torch.Tensor) -> torch.Tensor:
        s = sigmas[..., k].to(z).reshape(-1, 1, 1, 1)
        return s.expand(z.shape[0], 1, *z.shape[-2:])

    return guidance


class UnfoldedHQS(nn.Module):
    """The paper's model: K stages whose hyper-guidance the proxy predicts from the input.

    The proxy ``H_theta`` maps the observation ``y`` to a per-pixel noise-level map ``s(p)``
    (the inner level supervises it against the true map, as the reference code supervises its
    first stage). Stage ``k`` feeds the denoiser the per-pixel strength

        g_k(p) = exp(a_k) * s_start^(1 - t_k) * s(p)^t_k,   t_k = k / (K - 1),

    i.e. the IRCNN decay driven pixel by pixel by the predicted map, with a learned per-stage
    gain ``a_k`` (zero-initialised, so training starts from the principled schedule). With
    ``rho_mode="estimated"`` the penalties follow the IRCNN rule at the proxy's own noise
    estimate (beyond the paper, which keeps ``rho_k`` on a nominal 1 % rule: ``"nominal"``).

    Args:
        denoiser: the shared prior ``D_omega``.
        proxy: ``H_theta``.
        stages: ``K``.
        nominal_sigma: noise level ([0, 1] units) of the nominal rule (``rho_mode="nominal"``,
            and the ``none`` ablation's schedule).
        sigma_start: first strength of the schedules.
        guidance_mode: ``learned`` (the proxy), ``none`` (the nominal rule's ``sigma_k`` as
            constant maps and its ``rho_k``: the no-guidance ablation), ``oracle`` (the true
            noise map in place of the proxy's: a bound).
        rho_mode: ``estimated`` or ``nominal``.
        learn_rho: learn a per-stage log-gain on ``rho_k`` as well (beyond the paper).
        lam_factor: ``lambda = lam_factor * sigma^2`` (IRCNN: 1/3).
    """

    def __init__(self, denoiser: ConditionedDenoiser, proxy: GuidanceProxy, stages: int = 5,
                 nominal_sigma: float = 0.01, sigma_start: float = SIGMA_START,
                 guidance_mode: str = "learned", rho_mode: str = "estimated", learn_rho: bool = False,
                 lam_factor: float = 1.0 / 3.0):
        super().__init__()
        if guidance_mode not in ("learned", "none", "oracle"):
            raise ValueError(f"unknown guidance_mode {guidance_mode!r}")
        if rho_mode not in ("estimated", "nominal"):
            raise ValueError(f"unknown rho_mode {rho_mode!r}")
        self.denoiser, self.proxy = denoiser, proxy
        self.stages, self.guidance_mode, self.rho_mode = stages, guidance_mode, rho_mode
        self.sigma_start, self.lam_factor = sigma_start, lam_factor
        nominal = ircnn_schedule(nominal_sigma, stages, s_start=sigma_start)
        self.register_buffer("nominal_sigmas", nominal.sigmas.clone())
        self.register_buffer("nominal_rhos", nominal.rhos.clone())
        self.guidance_gain = nn.Parameter(torch.zeros(stages))
        if learn_rho:
            self.rho_gain = nn.Parameter(torch.zeros(stages))
        else:
            self.register_buffer("rho_gain", torch.zeros(stages))

    def hyper_parameters(self) -> list[nn.Parameter]:
        """``theta``: everything that sets the hyper-guidance (proxy and per-stage gains)."""
        extra = [p for p in (self.guidance_gain, self.rho_gain) if isinstance(p, nn.Parameter)]
        return list(self.proxy.parameters()) + extra

    def estimate_noise(self, y: torch.Tensor) -> torch.Tensor:
        """The proxy on the observation ``y (B, C, H, W)``: its noise-level map ``(B, 1, H, W)``."""
        return self.proxy(y)

    def penalties(self, level: torch.Tensor | None) -> torch.Tensor:
        """``rho (B, K)`` from per-image noise levels ``(B,)`` (or ``(K,)`` nominal when ``None``)."""
        if level is None or self.rho_mode == "nominal":
            rhos = self.nominal_rhos if level is None else self.nominal_rhos.expand(level.shape[0], -1)
        else:
            level = level.clamp(1e-3, self.sigma_start)
            strengths = geometric(torch.full_like(level, self.sigma_start), level, self.stages).to(level)
            rhos = self.lam_factor * level[:, None] ** 2 / strengths**2
        return rhos * torch.exp(self.rho_gain)

    def map_guidance(self, level_map: torch.Tensor) -> Guidance:
        """Per-pixel IRCNN decay from ``sigma_start`` to ``level_map (B, 1, H, W)``, with the gains."""
        log_start = math.log(self.sigma_start)
        log_end = torch.log(level_map.clamp(1e-3, self.sigma_start))
        k_max = max(self.stages - 1, 1)

        def guidance(k: int, z: torch.Tensor) -> torch.Tensor:
            t = k / k_max if self.stages > 1 else 1.0
            return torch.exp(log_start * (1 - t) + log_end * t + self.guidance_gain[k])

        return guidance

    def forward(self, physics: Physics, sigma_map: torch.Tensor | None = None) -> UnfoldedOutput:
        """Restore the observation held by ``physics``; ``sigma_map (B, 1, H, W)`` only for ``oracle``."""
        if self.guidance_mode == "none":
            return hqs(physics, self.denoiser, self.penalties(None), constant_maps(self.nominal_sigmas))
        if self.guidance_mode == "oracle":
            if sigma_map is None:
                raise ValueError("guidance_mode 'oracle' needs the true sigma_map")
            level_map = sigma_map
        else:
            level_map = self.proxy(physics.init())
        rhos = self.penalties(level_map.flatten(1).mean(1))
        return hqs(physics, self.denoiser, rhos, self.map_guidance(level_map))
