"""K unfolded half-quadratic-splitting stages with learned hyper-guidance.

Each stage ``k``: data step ``z_k = argmin ||A z - y||^2 + rho_k ||z - x_{k-1}||^2`` (closed form,
from the task's physics), guidance ``g_k = H_theta(z_k)`` (the proxy), prior step
``x_k = D_omega(z_k, g_k)`` (the denoiser, shared across stages). The same loop, with the proxy
replaced by a hand-set schedule, is plug-and-play HQS (IRCNN, DPIR): :func:`hqs`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
import torch.utils.checkpoint
from torch import nn

from pipeline.baselines.schedules import SIGMA_START, geometric, ircnn_schedule
from pipeline.models.denoiser import ConditionedDenoiser
from pipeline.models.proxy import GuidanceProxy
from pipeline.physics.noise import estimated_level_map

GUIDANCE_MODES = ("learned", "none", "estimated", "oracle")


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
    # what the proxies predicted, each (B, 1, H, W) against the true noise map: the proxy on y,
    # then (proxy_sharing shared / per_stage) the proxy on each stage input z_k
    proxy_maps: list[torch.Tensor] = field(default_factory=list)


def hqs(physics: Physics, denoiser: nn.Module, rhos: torch.Tensor, guidance: Guidance,
        checkpoint: bool = False) -> UnfoldedOutput:
    """Run ``K = rhos.shape[-1]`` HQS iterations.

    Args:
        physics: the observation's forward model (``init``, ``data_step``).
        denoiser: ``D(z (B, C, H, W), g (B, 1, H, W)) -> (B, C, H, W)``.
        rhos: ``(K,)`` or ``(B, K)`` penalties.
        guidance: ``(k, z_k) -> (B, 1, H, W)``, the map fed to the denoiser at stage ``k``.
        checkpoint: activation checkpointing: each stage keeps only its input for the backward
            pass and recomputes its activations then (memory ~ constant in ``K`` instead of
            linear, for one more forward pass of compute).
    """

    def stage(x: torch.Tensor, rho: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = physics.data_step(x, rho)
        g = guidance(k, z)
        return denoiser(z, g), g

    x = physics.init()
    rhos = rhos.to(x.device)  # a hand-set schedule is built on the CPU; the observation may be on a GPU
    maps = []
    for k in range(rhos.shape[-1]):
        if checkpoint:
            x, g = torch.utils.checkpoint.checkpoint(stage, x, rhos[..., k], k, use_reentrant=False)
        else:
            x, g = stage(x, rhos[..., k], k)
        maps.append(g)
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
            constant maps and its ``rho_k``: the no-guidance ablation), ``estimated`` (the proxy's
            map replaced by the constant level ``skimage.restoration.estimate_sigma`` gives for
            ``y``, ``rho_k`` from the same level: the control that isolates the proxy's own share),
            ``oracle`` (the true noise map in place of the proxy's: a bound).
        rho_mode: ``estimated`` or ``nominal``.
        learn_rho: learn a per-stage log-gain on ``rho_k`` as well (beyond the paper).
        lam_factor: ``lambda = lam_factor * sigma^2`` (IRCNN: 1/3).
        proxy_output: ``map`` (per pixel) or ``scalar`` (the map's mean: one level per image and stage).
        proxy_sharing: ``once`` (the proxy on ``y``; stage ``k`` uses the decay above), ``shared``
            (the same proxy also on each stage input ``z_k``: ``s(p)`` becomes ``s_k(p) = H(z_k)``),
            ``per_stage`` (stage ``k`` has its own proxy ``H_k(z_k)``). In the last two the inner
            problem supervises every stage's map, so it depends on ``omega`` through ``z_k``.
        activation_checkpointing: recompute each stage's activations in the backward pass instead
            of storing them (training memory vs ``K``, see :func:`hqs`; ``proxy_sharing: once``
            only). Off by default.
    """

    def __init__(self, denoiser: ConditionedDenoiser, proxy: GuidanceProxy, stages: int = 5,
                 nominal_sigma: float = 0.01, sigma_start: float = SIGMA_START,
                 guidance_mode: str = "learned", rho_mode: str = "estimated", learn_rho: bool = False,
                 lam_factor: float = 1.0 / 3.0, proxy_output: str = "map", proxy_sharing: str = "once",
                 activation_checkpointing: bool = False):
        super().__init__()
        self.activation_checkpointing = activation_checkpointing
        if guidance_mode not in GUIDANCE_MODES:
            raise ValueError(f"unknown guidance_mode {guidance_mode!r}")
        if rho_mode not in ("estimated", "nominal", "predicted"):
            raise ValueError(f"unknown rho_mode {rho_mode!r}")
        if proxy_output not in ("map", "scalar") or proxy_sharing not in ("once", "shared", "per_stage"):
            raise ValueError(f"unknown proxy variant {proxy_output!r}/{proxy_sharing!r}")
        self.denoiser, self.proxy = denoiser, proxy
        self.proxy_output, self.proxy_sharing = proxy_output, proxy_sharing
        if proxy_sharing == "per_stage":
            # stage 0 uses ``proxy`` itself (also the estimate on y); copies start from it
            self.stage_proxies = nn.ModuleList(copy.deepcopy(proxy) for _ in range(stages - 1))
        if rho_mode == "predicted":
            # (mean, std) of the log map -> a log-factor per stage; zero-initialised: starts on the rule
            self.rho_head = nn.Linear(2, stages)
            nn.init.zeros_(self.rho_head.weight)
            nn.init.zeros_(self.rho_head.bias)
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

    def inner_parameters(self) -> list[nn.Parameter]:
        """``theta`` of the inner problem: the parameters the guidance loss depends on (the proxies)."""
        extra = list(self.stage_proxies.parameters()) if self.proxy_sharing == "per_stage" else []
        return list(self.proxy.parameters()) + extra

    def proxy_map(self, y: torch.Tensor) -> torch.Tensor:
        """The proxy's raw map ``(B, 1, H, W)`` on ``y`` (pre-training's inner problem)."""
        return self.proxy(y)

    def sync_proxies(self) -> None:
        """Copy ``proxy`` into every stage proxy (after pre-training, which warms ``proxy`` alone)."""
        if self.proxy_sharing == "per_stage":
            for p in self.stage_proxies:
                p.load_state_dict(self.proxy.state_dict())

    def _level(self, proxy: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """``proxy(z)`` as a map ``(B, 1, H, W)``, or its mean broadcast (``proxy_output: scalar``)."""
        level = proxy(z)
        if self.proxy_output == "scalar":
            level = level.mean(dim=(2, 3), keepdim=True).expand_as(level)
        return level

    def estimate_guidance(self, y: torch.Tensor) -> torch.Tensor:
        """The proxy on the observation ``y (B, C, H, W)``: its noise-level map ``(B, 1, H, W)``,
        the guidance target's estimate."""
        return self._level(self.proxy, y)

    def penalties(self, level: torch.Tensor | None, level_map: torch.Tensor | None = None) -> torch.Tensor:
        """``rho (B, K)`` from per-image noise levels ``(B,)`` (or ``(K,)`` nominal when ``None``);
        ``rho_mode: predicted`` also reads the proxy's map ``(B, 1, H, W)``."""
        if level is None or self.rho_mode == "nominal":
            rhos = self.nominal_rhos if level is None else self.nominal_rhos.expand(level.shape[0], -1)
        else:
            level = level.clamp(1e-3, self.sigma_start)
            strengths = geometric(torch.full_like(level, self.sigma_start), level, self.stages).to(level)
            rhos = self.lam_factor * level[:, None] ** 2 / strengths**2
        if self.rho_mode == "predicted" and level is not None and level_map is not None:
            logs = torch.log(level_map.clamp_min(1e-4)).flatten(1)
            rhos = rhos * torch.exp(self.rho_head(torch.stack([logs.mean(1), logs.std(1)], dim=1)))
        return rhos * torch.exp(self.rho_gain)

    def stage_guidance(self, maps: list[torch.Tensor]) -> Guidance:
        """Stage ``k`` decays from ``sigma_start`` to the map its proxy predicts from ``z_k`` (with
        the gains); every prediction is appended to ``maps`` (the inner problem supervises them)."""
        log_start = math.log(self.sigma_start)
        k_max = max(self.stages - 1, 1)

        def guidance(k: int, z: torch.Tensor) -> torch.Tensor:
            proxy = self.proxy if self.proxy_sharing == "shared" or k == 0 else self.stage_proxies[k - 1]
            level = self._level(proxy, z)
            maps.append(level)
            t = k / k_max if self.stages > 1 else 1.0
            return torch.exp(log_start * (1 - t) + torch.log(level.clamp(1e-3, self.sigma_start)) * t
                             + self.guidance_gain[k])

        return guidance

    def map_guidance(self, level_map: torch.Tensor) -> Guidance:
        """Per-pixel IRCNN decay from ``sigma_start`` to ``level_map (B, 1, H, W)``, with the gains."""
        log_start = math.log(self.sigma_start)
        log_end = torch.log(level_map.clamp(1e-3, self.sigma_start))
        k_max = max(self.stages - 1, 1)

        def guidance(k: int, z: torch.Tensor) -> torch.Tensor:
            t = k / k_max if self.stages > 1 else 1.0
            return torch.exp(log_start * (1 - t) + log_end * t + self.guidance_gain[k])

        return guidance

    def forward(self, physics: Physics, target: torch.Tensor | None = None) -> UnfoldedOutput:
        """Restore the observation held by ``physics``; ``target (B, 1, H, W)``, the true noise-level
        map (the guidance target), only for ``oracle``."""
        ckpt = self.activation_checkpointing and torch.is_grad_enabled()
        if self.guidance_mode == "none":
            return hqs(physics, self.denoiser, self.penalties(None), constant_maps(self.nominal_sigmas), ckpt)
        if self.guidance_mode == "oracle":
            if target is None:
                raise ValueError("guidance_mode 'oracle' needs the true guidance target (the noise-level map)")
            level_map = target
        elif self.guidance_mode == "estimated":
            level_map = estimated_level_map(physics.init())
        else:
            level_map = self.estimate_guidance(physics.init())
        if self.guidance_mode == "learned" and self.proxy_sharing != "once":
            maps: list[torch.Tensor] = []
            # not checkpointed: the recomputation in the backward pass would append to ``maps`` again
            out = hqs(physics, self.denoiser, self.penalties(level_map.flatten(1).mean(1), level_map),
                      self.stage_guidance(maps))
            out.proxy_maps = [level_map, *maps]
            return out
        out = self.with_map(physics, level_map, ckpt)
        out.proxy_maps = [level_map] if self.guidance_mode == "learned" else []
        return out

    def with_map(self, physics: Physics, level_map: torch.Tensor, checkpointed: bool = False) -> UnfoldedOutput:
        """The model's pass with ``level_map (B, 1, H, W)`` as its guidance source, whatever its
        guidance mode: penalties from the map's mean level, each pixel's strength decaying to its
        own level. What :meth:`forward` runs on the proxy's map (``learned``), the classical scalar
        (``estimated``) or the true map (``oracle``); the benchmark's local-map methods feed it the
        classical local estimate (:func:`pipeline.physics.noise.local_level_map`)."""
        rhos = self.penalties(level_map.flatten(1).mean(1), level_map)
        return hqs(physics, self.denoiser, rhos, self.map_guidance(level_map), checkpointed)
