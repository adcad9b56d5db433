"""Plug-and-play HQS with a pre-trained denoiser and a hand-set schedule (IRCNN, DPIR).

The same loop as the unfolded model (:func:`pipeline.models.unfolded.hqs`), with the proxy
replaced by a schedule; the noise level a method is told comes from the truth, a nominal
guess, or a classical estimator (:func:`pipeline.physics.noise.estimate_noise_level`).
"""
from __future__ import annotations

import torch

from pipeline.baselines.schedules import IRCNN, SIGMA_START, Schedule, geometric
from pipeline.models.unfolded import Physics, UnfoldedOutput, constant_maps, hqs


@torch.no_grad()
def run_schedule(physics: Physics, denoiser: torch.nn.Module, schedule: Schedule) -> UnfoldedOutput:
    """HQS with ``schedule.sigmas`` fed to the denoiser as constant maps."""
    return hqs(physics, denoiser, schedule.rhos, constant_maps(schedule.sigmas))


@torch.no_grad()
def run_map_schedule(physics: Physics, denoiser: torch.nn.Module, sigma_map: torch.Tensor, iterations: int,
                     lam_factor: float = IRCNN.lam_factor, s_start: float = SIGMA_START) -> UnfoldedOutput:
    """The IRCNN rule driven by a per-pixel noise map ``(B, 1, H, W)``: each pixel's strength decays
    geometrically from ``s_start`` to its own level; ``rho_k`` uses the map's mean level."""
    level = sigma_map.flatten(1).mean(1).clamp_min(1e-4)  # (B,)
    strengths = geometric(torch.full_like(sigma_map, s_start), sigma_map.clamp(1e-4, s_start), iterations)
    mean_strengths = geometric(torch.full_like(level, s_start), level.clamp_max(s_start), iterations)  # (B, K)
    rhos = lam_factor * level[:, None] ** 2 / mean_strengths**2
    return hqs(physics, denoiser, rhos, lambda k, z: strengths[..., k].to(z))
