"""Build the unfolded model from its typed config (the one place that maps config -> modules)."""
from __future__ import annotations

from pipeline.config import ModelConfig
from pipeline.models.denoiser import ConditionedDenoiser
from pipeline.models.proxy import GuidanceProxy
from pipeline.models.unfolded import UnfoldedHQS


def build_denoiser(cfg: ModelConfig, channels: int) -> ConditionedDenoiser:
    return ConditionedDenoiser(channels, cfg.denoiser_width, cfg.denoiser_dilations)


def build_model(cfg: ModelConfig, channels: int, denoiser: ConditionedDenoiser | None = None) -> UnfoldedHQS:
    """The K-stage model; ``denoiser`` (e.g. a pre-trained one) is used as is when given."""
    return UnfoldedHQS(
        denoiser if denoiser is not None else build_denoiser(cfg, channels),
        GuidanceProxy(channels, cfg.proxy_width, cfg.proxy_dilations),
        stages=cfg.stages,
        nominal_sigma=cfg.nominal_sigma / 100.0,
        sigma_start=cfg.sigma_start / 255.0,
        guidance_mode=cfg.guidance,
        rho_mode=cfg.rho,
        learn_rho=cfg.learn_rho,
        proxy_output=cfg.proxy_output,
        proxy_sharing=cfg.proxy_sharing,
    )
