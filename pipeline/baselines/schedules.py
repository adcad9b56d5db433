"""Hand-set hyper-parameter schedules of plug-and-play HQS (IRCNN, DPIR).

At iteration ``k`` of ``K`` the denoiser strength decays geometrically,
``sigma_k = logspace(s_start, s_end, K)``, and the penalty follows ``rho_k = lambda / sigma_k^2``:
IRCNN uses ``lambda = sigma^2 / 3``, DPIR ``lambda = 0.23 sigma^2`` with ``s_end = sigma``,
``sigma`` the noise level the method is *told*. All levels in [0, 1] units (``49 / 255`` ...).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

SIGMA_START = 49.0 / 255.0


@dataclass(frozen=True)
class Rule:
    """A hand-set rule: ``lambda = sigma^2 * scale / divisor`` over ``iterations`` steps.

    The ratio is kept as written in the papers (IRCNN's ``sigma^2 / 3``), so :meth:`lam` is the
    same float as that expression; :attr:`lam_factor` is the one multiplier the schedules use.
    """

    scale: float
    divisor: float
    iterations: int

    @property
    def lam_factor(self) -> float:
        return self.scale / self.divisor

    def lam(self, sigma: float) -> float:
        """``lambda`` for the told level ``sigma`` ([0, 1] units)."""
        return self.scale * sigma**2 / self.divisor


IRCNN = Rule(1.0, 3.0, 30)  # Zhang et al., CVPR 2017
DPIR = Rule(0.23, 1.0, 8)  # Zhang et al., TPAMI 2021


@dataclass(frozen=True)
class Schedule:
    """Per-iteration denoiser strengths and penalties, each ``(K,)`` or ``(B, K)``."""

    sigmas: torch.Tensor
    rhos: torch.Tensor

    @property
    def iterations(self) -> int:
        return self.sigmas.shape[-1]


def geometric(start: torch.Tensor | float, end: torch.Tensor | float, k: int) -> torch.Tensor:
    """``k`` values from ``start`` to ``end`` evenly spaced in log; batched over leading dims.

    Computed in float64; returned in float32 unless an input is float64 (gradient checks).
    """
    start, end = torch.as_tensor(start), torch.as_tensor(end)
    out_dtype = torch.float64 if torch.float64 in (start.dtype, end.dtype) else torch.float32
    t = torch.linspace(0.0, 1.0, k, dtype=torch.float64, device=end.device) if k > 1 \
        else torch.ones(1, dtype=torch.float64, device=end.device)
    log_start = torch.log(start.to(end.device, torch.float64))[..., None]
    log_end = torch.log(end.to(torch.float64))[..., None]
    return torch.exp(log_start * (1 - t) + log_end * t).to(out_dtype)


def hqs_schedule(sigma: torch.Tensor | float, iterations: int, lam_factor: float, s_start: float = SIGMA_START,
                 s_end: torch.Tensor | float | None = None) -> Schedule:
    """``sigma_k = logspace(s_start, s_end, K)``, ``rho_k = lam_factor * sigma^2 / sigma_k^2``.

    ``sigma``: the told noise level, a float or ``(B,)``; ``s_end`` defaults to ``sigma``
    (never above ``s_start``).
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float32).clamp_min(1e-4)
    end = sigma if s_end is None else torch.as_tensor(s_end, dtype=torch.float32)
    end = torch.minimum(end, torch.as_tensor(s_start, dtype=torch.float32))
    sigmas = geometric(s_start, end, iterations)
    rhos = lam_factor * sigma[..., None] ** 2 / sigmas**2
    return Schedule(sigmas, rhos)


def ircnn_schedule(sigma: torch.Tensor | float, iterations: int = IRCNN.iterations,
                   s_start: float = SIGMA_START) -> Schedule:
    """IRCNN: ``lambda = sigma^2 / 3``."""
    return hqs_schedule(sigma, iterations, IRCNN.lam_factor, s_start)


def dpir_schedule(sigma: torch.Tensor | float, iterations: int = DPIR.iterations,
                  s_start: float = SIGMA_START) -> Schedule:
    """DPIR: ``lambda = 0.23 sigma^2``."""
    return hqs_schedule(sigma, iterations, DPIR.lam_factor, s_start)
