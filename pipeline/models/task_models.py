"""Unfolded models for rain and haze removal: the deblurring model's structure, other physics.

Both follow docs/method.md §2.5: K HQS stages, each a closed-form data step for the task, then the
conditioned denoiser ``D(z_k, g_k)`` (the deblurring model's class). What the observation hides
(the streak layer; the transmission and airlight) is estimated and refined from the current
``x_k`` at every stage, and the proxy ``H_theta`` predicts a per-pixel guidance ``level`` map.

The guidance map of stage ``k`` is ``g_k = exp(a_k) (s_k + exp(c) level)``: the nominal IRCNN
schedule ``s_k`` raised where the proxy's map says the stage input is still degraded (``a_k``,
``c`` learned; ``c`` starts small, so an untrained model stays close to the classical estimate
it starts from). ``g_k`` conditions the denoiser and the network that refines the hidden part of
the operator; ``guidance: none`` feeds both the nominal ``s_k`` (the same architecture);
``guidance: estimated`` replaces the proxy's map by the classical start's own level, one constant
per image (rain: the mean of the classical streak bound; haze: the dark channel prior's mean haze
``1 - t_dcp``, its transmission left uncorrected): the control that isolates the proxy's share.

The denoiser is the pre-trained one, held fixed in the bilevel phase (plug-and-play, as IRCNN /
DPIR): fine-tuned end to end on the few training images it learnt their rain and haze as a
brightness shift and darkened every bright test image. Everything else trains.

- derain: the proxy predicts the rain density (supervised against the generator's density
  map) from ``y`` and its thin bright structures; the streak layer is a learned fraction of the
  white top-hat of ``y`` (:func:`streak_bound`: rain is thin and bright, so it is never more),
  which starts at one half (already better than the median-filter baseline).
- dehaze: the proxy predicts how far the dark channel prior's transmission (He et al.) is off,
  ``log(t / t_dcp)`` (supervised against the recorded true ``t``: the inner level); the
  transmission starts from the corrected prior and its size, the residual degradation level of
  the classical start, is the guidance ``level``; a learned log-correction per stage refines ``t``
  further (zero-initialised). ``none`` starts from the uncorrected prior.

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
from pipeline.models.unfolded import GUIDANCE_MODES, UnfoldedOutput
from pipeline.physics.haze import CORRECTION_LIMIT, T_MIN, HazePhysics, dark_channel_estimate
from pipeline.physics.rain import RainPhysics, median_background

STREAK_WIDTH = 9  # streaks (and bright details) thinner than this are candidates for rain
MAP_GAIN = 10.0  # the guidance map (noise-level units, ~0.01-0.2) scaled to O(1) for the refinement networks


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


def _nominal_log_rhos(stages: int, nominal_sigma: float, s_start: float) -> torch.Tensor:
    return torch.log(ircnn_schedule(nominal_sigma, stages, s_start=s_start).rhos.double()).float()


class _TaskUnfolded(nn.Module):
    """What both task models share: the prior, K, the guidance mode, learned ``rho_k`` and gains."""

    def __init__(self, denoiser: ConditionedDenoiser, stages: int, guidance_mode: str, nominal_sigma: float,
                 sigma_start: float, level_scale: float):
        super().__init__()
        if guidance_mode not in GUIDANCE_MODES:
            raise ValueError(f"unknown guidance_mode {guidance_mode!r}")
        self.denoiser, self.stages, self.guidance_mode, self.sigma_start = denoiser, stages, guidance_mode, sigma_start
        self.log_rho = nn.Parameter(_nominal_log_rhos(stages, nominal_sigma, sigma_start))
        self.guidance_gain = nn.Parameter(torch.zeros(stages))
        self.level_scale = nn.Parameter(torch.tensor(math.log(level_scale)))
        nominal = ircnn_schedule(nominal_sigma, stages, s_start=sigma_start).sigmas
        self.register_buffer("nominal_sigmas", nominal.clone().float())
        # the interface the trainer and the strategies share with the deblurring model
        self.proxy_sharing, self.activation_checkpointing = "once", False

    def prior(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The prior step ``D(z, g)`` with the pre-trained denoiser held fixed: gradients reach
        ``z`` and ``g`` (so everything that shapes them trains), never the denoiser's weights.
        Plug-and-play, as IRCNN and DPIR: fine-tuned on the few training images, the denoiser
        learnt their rain and haze (brightness, colour casts) and darkened every test image."""
        weights = {k: v.detach() for k, v in self.denoiser.named_parameters()}
        return torch.func.functional_call(self.denoiser, weights, (z, g))

    def inner_parameters(self) -> list[nn.Parameter]:
        """``theta`` of the inner problem: the proxy's parameters (what the guidance loss depends on)."""
        return list(self.proxy.parameters())

    def sync_proxies(self) -> None:
        """Nothing to copy: one proxy, on the observation."""

    def proxy_map(self, y: torch.Tensor) -> torch.Tensor:
        """The proxy's map on ``y`` (pre-training's inner problem): :meth:`estimate_guidance`."""
        return self.estimate_guidance(y)

    def estimate_guidance(self, y: torch.Tensor) -> torch.Tensor:
        """The proxy's guidance map ``(B, 1, H, W)`` on the observation ``y (B, C, H, W)``."""
        raise NotImplementedError

    def stage_map(self, k: int, level: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The map ``g_k (B, 1, H, W)`` fed to the denoiser (and the refinement network) at stage
        ``k``: the nominal schedule (``none``), or the nominal schedule raised where the guidance
        ``level (B, 1, H, W)`` says the stage input is still degraded:
        ``g_k = exp(a_k) (s_k + exp(c) level)``, ``a_k`` and ``c`` learned (``c`` starts small, so
        an untrained model stays close to the classical start it is built on)."""
        nominal = self.nominal_sigmas[k].to(z)
        if self.guidance_mode == "none":
            return nominal.expand(z.shape[0], 1, *z.shape[-2:])
        return torch.exp(self.guidance_gain[k]) * (nominal + torch.exp(self.level_scale) * level)


def constant_level(level_map: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` -> each image's mean, broadcast back to ``(B, 1, H, W)``: one level per
    image, as the ``estimated`` control's classical estimate (no gradient reaches the map)."""
    return level_map.detach().mean(dim=(2, 3), keepdim=True).expand_as(level_map)


def streak_bound(y: torch.Tensor, size: int = STREAK_WIDTH) -> torch.Tensor:
    """What a streak layer of ``y (B, C, H, W)`` can be at most: the white top-hat (``y`` minus
    its grey opening by a ``size x size`` square, replicated borders), the minimum over channels
    (rain adds the same light to every channel): ``(B, 1, H, W)`` >= 0, zero on flat regions
    and on bright structures wider than ``size``."""
    r = size // 2

    def pad(a: torch.Tensor) -> torch.Tensor:
        return F.pad(a, (r, r, r, r), mode="replicate")

    opened = F.max_pool2d(pad(-F.max_pool2d(pad(-y), size, 1)), size, 1)
    return (y - opened).clamp_min(0.0).min(1, keepdim=True).values


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
        super().__init__(denoiser, stages, guidance_mode, nominal_sigma, sigma_start, level_scale=0.5)
        self.streak_net = MapNet(2 * channels + 2, 1, width)  # [y, x_k, bound, g_k] -> streak fraction (logit)
        self.proxy = MapNet(channels + 1, 1, width)  # [y, streak bound] -> density

    def estimate_density(self, y: torch.Tensor, bound: torch.Tensor | None = None) -> torch.Tensor:
        """``y (B, C, H, W)`` -> rain density map ``(B, 1, H, W)`` >= 0, from ``y`` and its
        thin bright structures ``bound`` (:func:`streak_bound` of ``y``; computed when not given)."""
        bound = streak_bound(y) if bound is None else bound
        return F.softplus(self.proxy(torch.cat([y, bound * MAP_GAIN], 1)) - 4.0)

    def streaks(self, y: torch.Tensor, x: torch.Tensor, g: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        """The streak layer ``(B, 1, H, W)``: the fraction of ``bound`` (:func:`streak_bound`, what
        is thin and bright in ``y``) that is rain, ``sigmoid`` of the network on ``y``, the current
        estimate ``x`` and the stage's map ``g (B, 1, H, W)`` (where the guidance says rain is
        left). Between 0 and the bound: flat bright regions are never taken for rain."""
        return bound * torch.sigmoid(self.streak_net(torch.cat([y, x, bound * MAP_GAIN, g * MAP_GAIN], 1)))

    def estimate_guidance(self, y: torch.Tensor) -> torch.Tensor:
        return self.estimate_density(y)

    def forward(self, y: torch.Tensor | Observation, target: torch.Tensor | None = None) -> UnfoldedOutput:
        """``y (B, C, H, W)`` (or an :class:`Observation`); ``target (B, 1, H, W)``, the true
        density, only for ``oracle``. ``proxy_maps`` holds the predicted density (the inner
        level's target)."""
        y, density = getattr(y, "y", y), target
        if self.guidance_mode == "oracle" and density is None:
            raise ValueError("guidance_mode 'oracle' needs the true density map")
        bound = streak_bound(y)
        pred = self.estimate_density(y, bound)
        level = {"oracle": density, "estimated": constant_level(bound)}.get(self.guidance_mode, pred)
        # the first estimate: the classical decomposition (rain is thin and bright)
        x = median_background(y)
        maps = []
        rhos = torch.exp(self.log_rho)
        for k in range(self.stages):
            g = self.stage_map(k, level, y)
            physics = RainPhysics(y, self.streaks(y, x, g, bound))
            z = physics.data_step(x, rhos[k]) if k else physics.init()
            x = self.prior(z, g)
            maps.append(g)
        return UnfoldedOutput(x, maps, rhos, [pred])


class UnfoldedDehaze(_TaskUnfolded):
    """K-stage dehazing: ``y = x t + A (1 - t)``.

    The proxy predicts the log-correction ``delta (B, 1, H, W)`` of the dark channel prior's
    transmission ``t_dcp`` from ``[y, t_dcp]``
    (:func:`pipeline.physics.haze.transmission_correction`); ``t`` starts at
    ``t_dcp exp(delta)`` and the guidance level is ``|delta|`` (the residual degradation of the
    classical start: where, and how much, the prior is wrong); ``t`` is refined at every stage
    from ``[y, x_k, t_k, g_k]`` by a zero-initialised log-correction. ``none`` starts at
    ``t_dcp``. Args as :class:`UnfoldedDerain` (``oracle`` takes the true ``delta``).
    """

    def __init__(self, denoiser: ConditionedDenoiser, channels: int = 3, width: int = 32, stages: int = 5,
                 guidance_mode: str = "learned", nominal_sigma: float = 0.02, sigma_start: float = SIGMA_START):
        super().__init__(denoiser, stages, guidance_mode, nominal_sigma, sigma_start, level_scale=0.1)
        self.refine = MapNet(2 * channels + 2, 1, width)  # [y, x_k, t_k, g_k] -> t log-correction
        self.proxy = MapNet(channels + 1, 1, width)  # [y, t_dcp] -> log(t / t_dcp)
        # what the proxy predicts, as a weight: files from before the transmission correction
        # (the proxy then predicted an error level) lack it and are refused at load
        self.register_buffer("proxy_target_version", torch.tensor(2))

    def estimate_correction(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The proxy: ``(B, 1, H, W)`` the predicted log-correction of the classical transmission
        ``t`` (:func:`pipeline.physics.haze.transmission_correction`), zero at the start (the
        classical estimate)."""
        return self.proxy(torch.cat([y, t], 1)).clamp(-CORRECTION_LIMIT, CORRECTION_LIMIT)

    def estimate_guidance(self, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t0, _ = dark_channel_estimate(y)
        return self.estimate_correction(y, t0)

    def forward(self, y: torch.Tensor | Observation, target: torch.Tensor | None = None) -> UnfoldedOutput:
        """``y (B, C, H, W)`` (or an :class:`Observation`); ``target (B, 1, H, W)``, the true
        transmission correction (:func:`pipeline.physics.haze.transmission_correction`), only for
        ``oracle``. ``proxy_maps`` holds the predicted correction (the inner level's target) and
        the final ``t``."""
        y, true_correction = getattr(y, "y", y), target
        if self.guidance_mode == "oracle" and true_correction is None:
            raise ValueError("guidance_mode 'oracle' needs the true transmission correction")
        with torch.no_grad():
            t0, airlight = dark_channel_estimate(y)
        if self.guidance_mode in ("none", "estimated"):  # the controls start from the uncorrected prior
            pred = correction = torch.zeros_like(t0)  # (their proxy is never used: not run)
        else:
            pred = self.estimate_correction(y, t0)
            correction = true_correction if self.guidance_mode == "oracle" else pred
        # the guidance corrects the classical transmission; its size is the residual level
        t = (t0 * torch.exp(correction)).clamp(T_MIN, 1.0)
        level = constant_level(1.0 - t0) if self.guidance_mode == "estimated" else correction.abs()
        x = HazePhysics(y, t, airlight).init()
        rhos = torch.exp(self.log_rho)
        maps = []
        for k in range(self.stages):
            g = self.stage_map(k, level, y)
            step = self.refine(torch.cat([y, x, t, g * MAP_GAIN], 1)).clamp(-CORRECTION_LIMIT, CORRECTION_LIMIT)
            t = (t * torch.exp(step)).clamp(T_MIN, 1.0)
            physics = HazePhysics(y, t, airlight)
            z = physics.data_step(x, rhos[k]) if k else physics.init()
            x = self.prior(z, g)
            maps.append(g)
        return UnfoldedOutput(x, maps, rhos, [pred, t])
