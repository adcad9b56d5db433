"""Build the unfolded model from its typed config (the one place that maps config -> modules)."""
from __future__ import annotations

from torch import nn

import dataclasses

import torch

from pipeline.config import ModelConfig
from pipeline.models.denoiser import ConditionedDenoiser
from pipeline.models.direct import DirectCNN, matched_layers
from pipeline.models.proxy import GuidanceProxy
from pipeline.models.task_models import UnfoldedDehaze, UnfoldedDerain
from pipeline.models.unfolded import UnfoldedHQS

TASK_MODELS = {"derain": UnfoldedDerain, "dehaze": UnfoldedDehaze}


def build_denoiser(cfg: ModelConfig, channels: int) -> ConditionedDenoiser:
    return ConditionedDenoiser(channels, cfg.denoiser_width, cfg.denoiser_dilations)


def build_model(cfg: ModelConfig, channels: int, denoiser: ConditionedDenoiser | None = None,
                task: str = "deblur") -> nn.Module:
    """The K-stage model of ``task`` (:class:`UnfoldedHQS` for deblur, the rain and haze models
    of :mod:`pipeline.models.task_models` otherwise); ``denoiser`` (e.g. a pre-trained one) is
    used as is when given."""
    if cfg.guidance == "direct":
        return build_direct(cfg, channels, task)
    denoiser = denoiser if denoiser is not None else build_denoiser(cfg, channels)
    if task in TASK_MODELS:
        return TASK_MODELS[task](denoiser, channels=channels, width=cfg.proxy_width, stages=cfg.stages,
                                 guidance_mode=cfg.guidance, nominal_sigma=cfg.nominal_sigma / 100.0,
                                 sigma_start=cfg.sigma_start / 255.0)
    if task != "deblur":
        raise ValueError(f"unknown task {task!r}; known: deblur, {', '.join(TASK_MODELS)}")
    return UnfoldedHQS(
        denoiser,
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


def build_direct(cfg: ModelConfig, channels: int, task: str) -> DirectCNN:
    """The ``direct_cnn`` control of ``cfg``: a :class:`DirectCNN` with the denoiser's width and
    dilations and as many layers as bring it nearest the parameter count of the unfolded model
    that ``cfg`` describes with learned guidance (counted on the meta device: no weights are
    drawn, so the control's initial weights come from the same seeded stream as any model's)."""
    with torch.device("meta"):
        reference = build_model(dataclasses.replace(cfg, guidance="learned"), channels, task=task)
    target = sum(p.numel() for p in reference.parameters())
    return DirectCNN(channels, cfg.denoiser_width, matched_layers(target, channels, cfg.denoiser_width),
                     cfg.denoiser_dilations)
