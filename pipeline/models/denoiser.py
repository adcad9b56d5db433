"""The prior: a denoiser conditioned on a per-pixel noise-level map (FFDNet/IRCNN style)."""
from __future__ import annotations

import torch
from torch import nn


class ConditionedDenoiser(nn.Module):
    """Dilated-convolution residual denoiser ``D(z, g)``.

    The map ``g`` is concatenated to the input (FFDNet/DRUNet), so one network covers every
    noise level and a spatially varying one. The reference code uses dilations
    ``1,2,3,4,4,4,3,2,1`` at width 64 (IRCNN); the default here is lighter for CPUs.
    No batch norm: batch statistics would differ between stages of the unfolded model.

    Args:
        channels: image channels ``C``.
        width: feature channels.
        dilations: one per 3x3 convolution (the first maps ``C + 1 -> width``, the last
            ``width -> C``).
    """

    def __init__(self, channels: int = 1, width: int = 64, dilations: tuple[int, ...] = (1, 2, 3, 4, 4, 4, 3, 2, 1)):
        super().__init__()
        self.channels = channels
        layers: list[nn.Module] = []
        c_in = channels + 1
        for i, d in enumerate(dilations):
            last = i == len(dilations) - 1
            layers.append(nn.Conv2d(c_in, channels if last else width, 3, padding=d, dilation=d, padding_mode="zeros"))
            if not last:
                layers.append(nn.ReLU(inplace=True))
            c_in = width
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``z (B, C, H, W)``, ``g (B, 1, H, W)`` (noise std in [0, 1] units) -> ``(B, C, H, W)``."""
        return z - self.body(torch.cat([z, g.to(z.dtype)], dim=1))
