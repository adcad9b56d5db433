"""Unfolded models for rain and haze removal: the deblurring model's structure, other physics.

Both follow METHOD.md §2: K HQS stages, each a closed-form data step for the task, then the
conditioned denoiser ``D_omega(z_k, g_k)`` shared with deblurring. What the observation hides
(the streak layer; the transmission and airlight) is estimated and refined from the current
``x_k`` at every stage, and the proxy ``H_theta`` predicts the per-pixel guidance map:

- derain: the proxy predicts the rain density (supervised against the generator's density
  map); the denoiser strength follows ``g_k = exp(a_k) s_start^(1-t_k) (c d(p) + s_floor)^t_k``,
  the IRCNN decay driven by the predicted density, ``c`` learned.
- dehaze: the transmission starts from the dark channel prior (He et al.), refined by a learned
  log-correction (zero-initialised, so training starts from the classical estimate); the proxy
  predicts the residual degradation level (the local error of the data step's output), which
  conditions the denoiser through the same decay.

The penalties ``rho_k`` are learned per stage (log-parameterised), initialised on the IRCNN rule
at a nominal level, since no noise level describes these tasks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.baselines.schedules import SIGMA_START, ircnn_schedule
from pipeline.models.denoiser import ConditionedDenoiser
from pipeline.models.proxy import conv_stack
from pipeline.models.unfolded import UnfoldedOutput
from pipeline.physics.haze import HazePhysics, T_MIN
from pipeline.physics.rain import RainPhysics

S_FLOOR = 2.0 / 255.0  # the weakest denoising any stage ends on


@dataclass
class Observation:
    """A blind task's view of the forward model: only the observation ``y (B, C, H, W)``; the
    rain and haze models estimate the operator themselves. Stands where the deblurring model
    takes its bound physics, so the bilevel strategies drive every task alike."""

    y: torch.Tensor


class MapNet(nn.Module):
    """A small dilated CNN ``(B, C_in, H, W) -> (B, C_out, H, W)`` whose output starts at zero."""

    def __init__(self, c_in: int, c_out: int = 1, width: int = 32, dilations: tuple[int, ...] = (1, 2, 4, 1)):
        super().__init__()
        self.body = conv_stack(c_in, c_out, width, dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _decay(level: torch.Tensor, k: int, stages: int, gain: torch.Tensor, s_start: float) -> torch.Tensor:
    """``exp(gain) s_start^(1-t) level^t``, ``t = k / (K-1)``, for ``level (B, 1, H, W)`` > 0."""
    t = k / max(stages - 1, 1) if stages > 1 else 1.0
    return torch.exp(math.log(s_start) * (1 - t) + torch.log(level.clamp(1e-4, s_start)) * t + gain)


def _nominal_log_rhos(stages: int, nominal_sigma: float, s_start: float) -> torch.Tensor:
    return torch.log(ircnn_schedule(nominal_sigma, stages, s_start=s_start).rhos.double()).float()


class _TaskUnfolded(nn.Module):
    """What both task models share: the prior, K, the guidance mode, learned ``rho_k`` and gains."""

    def __init__(self, denoiser: ConditionedDenoiser, stages: int, guidance_mode: str, nominal_sigma: float,
                 sigma_start: float):
        super().__init__()
        if guidance_mode not in ("learned", "none", "oracle"):
            raise ValueError(f"unknown guidance_mode {guidance_mode!r}")
        self.denoiser, self.stages, self.guidance_mode, self.sigma_start = denoiser, stages, guidance_mode, sigma_start
        self.log_rho = nn.Parameter(_nominal_log_rhos(stages, nominal_sigma, sigma_start))
        self.guidance_gain = nn.Parameter(torch.zeros(stages))
        nominal = ircnn_schedule(nominal_sigma, stages, s_start=sigma_start).sigmas
        self.register_buffer("nominal_sigmas", nominal.clone().float())
        # the interface the trainer and the strategies share with the deblurring model
        self.proxy_sharing, self.activation_checkpointing = "once", False

    def inner_parameters(self) -> list[nn.Parameter]:
        """``theta`` of the inner problem: the proxy's parameters (what the guidance loss depends on)."""
        return list(self.proxy.parameters())

    def sync_proxies(self) -> None:
        """Nothing to copy: one proxy, on the observation."""

    def proxy_map(self, y: torch.Tensor) -> torch.Tensor:
        """The proxy's map on ``y`` (pre-training's inner problem): :meth:`estimate_noise`."""
        return self.estimate_noise(y)

    def estimate_noise(self, y: torch.Tensor) -> torch.Tensor:
        """The proxy's guidance map ``(B, 1, H, W)`` on the observation ``y (B, C, H, W)``."""
        raise NotImplementedError

    def stage_map(self, k: int, level: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The map fed to the denoiser at stage ``k``: the nominal schedule (``none``) or the
        decay driven by ``level (B, 1, H, W)``."""
        if self.guidance_mode == "none":
            return self.nominal_sigmas[k].to(z).expand(z.shape[0], 1, *z.shape[-2:])
        return _decay(level, k, self.stages, self.guidance_gain[k], self.sigma_start)


def median_derain_init(y: torch.Tensor, size: int = 5) -> torch.Tensor:
    """``min(y, median_size(y))`` per channel on ``y (B, C, H, W)`` (reflected borders): the
    median-filter rain decomposition of :func:`pipeline.baselines.filters.median_derain`, the
    derain model's starting point."""
    r = size // 2
    b, c, h, w = y.shape

    def symmetric(n: int) -> torch.Tensor:  # scipy's "reflect": d c b a | a b c d | d c b a
        i = torch.arange(-r, n + r, device=y.device) % (2 * n)
        return torch.where(i < n, i, 2 * n - 1 - i)

    padded = y[:, :, symmetric(h)][:, :, :, symmetric(w)]
    med = F.unfold(padded, size).reshape(b, c, size * size, h, w).median(dim=2).values
    return torch.minimum(y, med)


class UnfoldedDerain(_TaskUnfolded):
    """K-stage deraining: ``y = x + r``.

    Args:
        denoiser: the shared prior.
        channels: ``C``.
        width: feature width of the streak, proxy and refinement networks.
        stages: ``K``.
        guidance_mode: ``learned`` (the proxy's density), ``none`` (the nominal schedule as
            constant maps: the ablation), ``oracle`` (the true density map).
    """

    def __init__(self, denoiser: ConditionedDenoiser, channels: int = 3, width: int = 32, stages: int = 5,
                 guidance_mode: str = "learned", nominal_sigma: float = 0.02, sigma_start: float = SIGMA_START):
        super().__init__(denoiser, stages, guidance_mode, nominal_sigma, sigma_start)
        self.streak_net = MapNet(2 * channels, 1, width)  # [y, x_k] -> streak log-correction
        self.proxy = MapNet(channels, 1, width)  # y -> density
        self.density_scale = nn.Parameter(torch.tensor(math.log(0.5)))

    def hyper_parameters(self) -> list[nn.Parameter]:
        return list(self.proxy.parameters()) + [self.guidance_gain, self.density_scale]

    def estimate_density(self, y: torch.Tensor) -> torch.Tensor:
        """``y (B, C, H, W)`` -> rain density map ``(B, 1, H, W)`` >= 0."""
        return F.softplus(self.proxy(y) - 4.0)

    def streaks(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The streak layer ``(B, 1, H, W)`` >= 0 from ``y`` and the current estimate ``x``:
        the positive residual ``y - x`` (rain only adds light), corrected by the network."""
        residual = (y - x).mean(1, keepdim=True).clamp_min(0.0)
        return residual * torch.exp(self.streak_net(torch.cat([y, x], 1)).clamp(-5.0, 5.0))

    def estimate_noise(self, y: torch.Tensor) -> torch.Tensor:
        return self.estimate_density(y)

    def forward(self, y: torch.Tensor | Observation, sigma_map: torch.Tensor | None = None) -> UnfoldedOutput:
        """``y (B, C, H, W)`` (or an :class:`Observation`); ``sigma_map (B, 1, H, W)``, the true
        density, only for ``oracle``. ``noise_maps`` holds the predicted density (the inner
        level's target)."""
        y, density = getattr(y, "y", y), sigma_map
        if self.guidance_mode == "oracle" and density is None:
            raise ValueError("guidance_mode 'oracle' needs the true density map")
        pred = self.estimate_density(y)
        level = density if self.guidance_mode == "oracle" else pred
        level = torch.exp(self.density_scale) * level + S_FLOOR
        # the first estimate: the classical decomposition (rain is thin and bright)
        x = median_derain_init(y)
        maps = []
        rhos = torch.exp(self.log_rho)
        for k in range(self.stages):
            physics = RainPhysics(y, self.streaks(y, x))
            z = physics.data_step(x, rhos[k]) if k else physics.init()
            g = self.stage_map(k, level, z)
            x = self.denoiser(z, g)
            maps.append(g)
        return UnfoldedOutput(x, maps, rhos, [pred])


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over ``(2r+1)^2`` windows of ``(B, C, H, W)`` (windows cut at the borders), separably."""
    k = 2 * radius + 1
    x = F.avg_pool2d(x, (k, 1), stride=1, padding=(radius, 0), count_include_pad=False)
    return F.avg_pool2d(x, (1, k), stride=1, padding=(0, radius), count_include_pad=False)


def _min_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Minimum over ``size x size`` windows (odd ``size``) of ``(B, C, H, W)``, separably."""
    r = size // 2
    x = -F.max_pool2d(-x, (size, 1), stride=1, padding=(r, 0))
    return -F.max_pool2d(-x, (1, size), stride=1, padding=(0, r))


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter, ``(B, 1, H, W)`` each; differentiable (box filters)."""
    mi, mp = _box(guide, radius), _box(src, radius)
    a = (_box(guide * src, radius) - mi * mp) / (_box(guide * guide, radius) - mi * mi + eps)
    b = mp - a * mi
    return _box(a, radius) * guide + _box(b, radius)


def dark_channel_init(y: torch.Tensor, patch: int = 15, omega: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """The dark channel prior on ``y (B, C, H, W)``: ``t (B, 1, H, W)`` (guided-filter refined)
    and the airlight ``(B, C, 1, 1)`` (mean colour of the 0.1 % haziest pixels)."""
    side = min(y.shape[-2:])
    patch = max(3, min(patch, side // 8 * 2 + 1))
    dark = _min_filter(y.min(1, keepdim=True).values, patch)
    n = max(1, dark[0].numel() // 1000)
    idx = dark.flatten(1).topk(n, dim=1).indices  # (B, n)
    airlight = torch.gather(y.flatten(2), 2, idx[:, None].expand(-1, y.shape[1], -1)).mean(2)[..., None, None]
    norm = y / airlight.clamp_min(1e-3)
    t = 1.0 - omega * _min_filter(norm.min(1, keepdim=True).values, patch)
    t = guided_filter(y.mean(1, keepdim=True), t, max(2, side // 8), 1e-3)
    return t.clamp(0.1, 1.0), airlight


def haze_residual_level(y: torch.Tensor, x: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """The dehazing guidance target: the local RMS error ``(B, 1, H, W)`` of the classical start
    (the exact inversion with the dark channel prior's ``t`` and ``A``) against the clear ``x``,
    over ``(2 radius + 1)^2`` windows. ``y, x (B, C, H, W)``. What :class:`UnfoldedDehaze`'s
    proxy predicts from ``y``: where the data step's output is still degraded, and how much."""
    with torch.no_grad():
        t0, airlight = dark_channel_init(y)
        err = (HazePhysics(y, t0, airlight).init() - x).pow(2).mean(1, keepdim=True)
        return _box(err, radius).clamp_min(0.0).sqrt()


class UnfoldedDehaze(_TaskUnfolded):
    """K-stage dehazing: ``y = x t + A (1 - t)``.

    ``t`` starts from the dark channel prior and is refined at every stage from ``[y, x_k, t]``
    by a zero-initialised log-correction; the proxy predicts the residual degradation map from
    ``[y, t]``. Args as :class:`UnfoldedDerain` (``oracle`` takes the true residual map).
    """

    def __init__(self, denoiser: ConditionedDenoiser, channels: int = 3, width: int = 32, stages: int = 5,
                 guidance_mode: str = "learned", nominal_sigma: float = 0.02, sigma_start: float = SIGMA_START):
        super().__init__(denoiser, stages, guidance_mode, nominal_sigma, sigma_start)
        self.refine = MapNet(2 * channels + 1, 1, width)
        self.proxy = MapNet(channels + 1, 1, width)

    def hyper_parameters(self) -> list[nn.Parameter]:
        return list(self.proxy.parameters()) + [self.guidance_gain]

    def estimate_residual(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The proxy: ``(B, 1, H, W)`` predicted local error level of the inverted image, which
        grows where the transmission is low (the inversion amplifies everything by ``1/t``)."""
        return F.softplus(self.proxy(torch.cat([y, t], 1)) + math.log(math.e**0.02 - 1)) * (1.0 / t.clamp_min(0.1)) ** 0.5

    def estimate_noise(self, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t0, _ = dark_channel_init(y)
        return self.estimate_residual(y, t0)

    def forward(self, y: torch.Tensor | Observation, sigma_map: torch.Tensor | None = None) -> UnfoldedOutput:
        """``y (B, C, H, W)`` (or an :class:`Observation`); ``sigma_map (B, 1, H, W)``, the true
        residual level (:func:`haze_residual_level`), only for ``oracle``."""
        y, residual = getattr(y, "y", y), sigma_map
        if self.guidance_mode == "oracle" and residual is None:
            raise ValueError("guidance_mode 'oracle' needs the true residual map")
        with torch.no_grad():
            t0, airlight = dark_channel_init(y)
        t = t0
        x = HazePhysics(y, t, airlight).init()
        pred = self.estimate_residual(y, t0)
        level = residual if self.guidance_mode == "oracle" else pred
        rhos = torch.exp(self.log_rho)
        maps = []
        for k in range(self.stages):
            t = (t * torch.exp(self.refine(torch.cat([y, x, t], 1)).clamp(-3.0, 3.0))).clamp(T_MIN, 1.0)
            physics = HazePhysics(y, t, airlight)
            z = physics.data_step(x, rhos[k]) if k else physics.init()
            g = self.stage_map(k, level + S_FLOOR, z)
            x = self.denoiser(z, g)
            maps.append(g)
        return UnfoldedOutput(x, maps, rhos, [pred, t])
