"""What the Optuna searches optimise: schedule and classical-knob objectives over samples.

Pure functions of (parameters, samples, denoiser) -> mean PSNR; the search itself (Optuna,
its storage and study names) lives in the one adapter, ``stages/optuna_adapter.py``.
A tuned HQS schedule has the form ``sigma_k = logspace(s_start, s_end, K)``,
``rho_k = lam / sigma_k^2`` (docs/method.md §5.2), searched over ``(lam, s_start, s_end, K)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from pipeline.baselines import classical
from pipeline.baselines.pnp import run_schedule
from pipeline.baselines.schedules import Schedule, geometric
from pipeline.data import chw_to_hwc
from pipeline.metrics import kernel_crop, psnr
from pipeline.physics.blur import BlurPhysics

# Search ranges, [0, 1] units for the strengths.
LAM_RANGE = (1e-7, 1e-2)
S_START_RANGE = (5 / 255, 100 / 255)
S_END_RANGE = (0.5 / 255, 50 / 255)


@dataclass
class TuningSample:
    """One observation with its truth: ``y, x (C, H, W)``, ``kernel (kh, kw)``, its noise level (%)."""

    y: np.ndarray
    x: np.ndarray
    kernel: np.ndarray
    noise_level: float
    sample_id: str = ""


def tuned_schedule(lam: float, s_start: float, s_end: float, iterations: int) -> Schedule:
    """The searched schedule family (``s_end`` is capped at ``s_start``)."""
    sigmas = geometric(s_start, min(s_end, s_start), iterations)
    return Schedule(sigmas, lam / sigmas**2)


def schedule_psnr(params: dict, samples: list[TuningSample], denoiser: torch.nn.Module, device: torch.device) -> list[float]:
    """PSNR of plug-and-play HQS with the schedule ``params`` (``lam, s_start, s_end, iterations``)
    on every sample, kernel border cropped."""
    schedule = tuned_schedule(params["lam"], params["s_start"], params["s_end"], int(params["iterations"]))
    scores = []
    for s in samples:
        physics = BlurPhysics(torch.from_numpy(s.y)[None].to(device), torch.from_numpy(s.kernel))
        out = run_schedule(physics, denoiser, schedule).x[0].float().cpu().numpy()
        scores.append(psnr(chw_to_hwc(out), chw_to_hwc(s.x), kernel_crop(s.kernel.shape)))
    return scores


CLASSICAL: dict[str, tuple[Callable, str, tuple[float, float], bool]] = {
    # method: (function, knob, range, integer knob)
    "wiener": (classical.wiener, "balance", (1e-4, 1.0), False),
    "richardson_lucy": (classical.richardson_lucy, "num_iter", (2, 60), True),
    "tv": (classical.tv_deconvolution, "lam", (1e-5, 1e-1), False),
}


def classical_psnr(method: str, value: float, samples: list[TuningSample]) -> list[float]:
    """PSNR of a classical method with its knob at ``value`` on every sample."""
    fn, knob, _, integer = CLASSICAL[method]
    value = int(round(value)) if integer else float(value)
    return [psnr(chw_to_hwc(fn(s.y, s.kernel, **{knob: value})), chw_to_hwc(s.x), kernel_crop(s.kernel.shape))
            for s in samples]
