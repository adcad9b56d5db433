"""The proxy network ``H_theta``: predicts the hyper-guidance map from a stage's input."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GuidanceProxy(nn.Module):
    """A small CNN mapping an image to a non-negative per-pixel guidance map.

    In the reference code it predicts the residual noise level (4 conv layers, 64 channels).
    Noise-level maps are smooth, so the first convolution has stride 2 and the output is
    upsampled back: a quarter of the cost and twice the receptive field, which a local
    noise-level estimate needs (as do the dilations).

    Args:
        channels: input image channels ``C``.
        width: feature channels.
        dilations: one per 3x3 convolution; the last maps ``width -> 1``.
        scale: output units; the softplus output is multiplied by it so a freshly initialised
            proxy predicts noise levels of the right order (a few percent).
    """

    def __init__(self, channels: int = 1, width: int = 64, dilations: tuple[int, ...] = (1, 2, 4, 1), scale: float = 0.05):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for i, d in enumerate(dilations):
            last = i == len(dilations) - 1
            stride = 2 if i == 0 else 1
            layers.append(nn.Conv2d(c_in, 1 if last else width, 3, stride=stride, padding=d, dilation=d))
            if not last:
                layers.append(nn.ReLU(inplace=True))
            c_in = width
        self.body = nn.Sequential(*layers)
        self.scale = scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z (B, C, H, W)`` -> guidance ``(B, 1, H, W)``, non-negative."""
        g = F.interpolate(self.body(z), size=z.shape[-2:], mode="bilinear", align_corners=False)
        return self.scale * F.softplus(g)
