"""K unfolded half-quadratic-splitting stages with learned hyper-guidance.

Each stage ``k``: data step ``z_k = argmin ||A z - y||^2 + rho_k ||z - x_{k-1}||^2`` (closed form,
from the task's physics), guidance ``g_k = H_theta(z_k)`` (the proxy), prior step
``x_k = D_omega(z_k, g_k)`` (the denoiser, shared across stages). The same loop, with the proxy
replaced by a hand-set schedule, is plug-and-play HQS (IRCNN, DPIR): :func:`hqs`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import nn

from pipeline.baselines.schedules import SIGMA_START, ircnn_schedule
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
    """The paper's model: K stages, the proxy predicting each stage's guidance map.

    Args:
        denoiser: the shared prior ``D_omega``.
        proxy: ``H_theta``, shared by the stages: a local noise-level estimator, supervised where
            the truth is known (the observation) and applied to every stage's input, where it
            estimates the residual level the denoiser should remove.
        stages: ``K``.
        nominal_sigma: noise level (in [0, 1] units) of the IRCNN rule that sets ``rho_k``
            (the reference code uses 1 %).
        sigma_start: first strength of that rule.
        guidance_mode: ``learned`` (the proxy), ``none`` (the rule's ``sigma_k`` as constant
            maps: the no-guidance ablation), ``oracle`` (the true noise map, a bound).
        learn_rho: make ``log rho_k`` trainable (beyond the paper), initialised by the rule.
    """

    def __init__(self, denoiser: ConditionedDenoiser, proxy: GuidanceProxy, stages: int = 5,
                 nominal_sigma: float = 0.01, sigma_start: float = SIGMA_START,
                 guidance_mode: str = "learned", learn_rho: bool = False):
        super().__init__()
        if guidance_mode not in ("learned", "none", "oracle"):
            raise ValueError(f"unknown guidance_mode {guidance_mode!r}")
        self.denoiser = denoiser
        self.proxy = proxy
        self.stages = stages
        self.guidance_mode = guidance_mode
        rule = ircnn_schedule(nominal_sigma, stages, s_start=sigma_start)
        self.register_buffer("schedule_sigmas", rule.sigmas.clone())
        log_rho = torch.log(rule.rhos.clone())
        if learn_rho:
            self.log_rho = nn.Parameter(log_rho)
        else:
            self.register_buffer("log_rho", log_rho)

    @property
    def rhos(self) -> torch.Tensor:
        return torch.exp(self.log_rho)

    def estimate_noise(self, y: torch.Tensor) -> torch.Tensor:
        """The proxy on the observation ``y (B, C, H, W)``: its noise-level map ``(B, 1, H, W)``."""
        return self.proxy(y)

    def forward(self, physics: Physics, sigma_map: torch.Tensor | None = None) -> UnfoldedOutput:
        """Restore the observation held by ``physics``; ``sigma_map (B, 1, H, W)`` only for ``oracle``."""
        if self.guidance_mode == "learned":
            guidance: Guidance = lambda k, z: self.proxy(z)  # noqa: E731
        elif self.guidance_mode == "none":
            guidance = constant_maps(self.schedule_sigmas)
        else:
            if sigma_map is None:
                raise ValueError("guidance_mode 'oracle' needs the true sigma_map")
            guidance = lambda k, z: sigma_map  # noqa: E731
        return hqs(physics, self.denoiser, self.rhos, guidance)
