"""The proxy network ``H_theta``: predicts the hyper-guidance (noise-level) map from an image."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_stack(c_in: int, c_out: int, width: int, dilations: tuple[int, ...]) -> nn.Sequential:
    """Dilated 3x3 convolutions with ReLUs, ``c_in -> width -> ... -> c_out``; the last layer is
    zero-initialised, so a predicted correction starts at exactly zero."""
    layers: list[nn.Module] = []
    for i, d in enumerate(dilations):
        last = i == len(dilations) - 1
        layers.append(nn.Conv2d(c_in, c_out if last else width, 3, padding=d, dilation=d))
        if not last:
            layers.append(nn.ReLU(inplace=True))
        c_in = width
    body = nn.Sequential(*layers)
    nn.init.zeros_(body[-1].weight)
    nn.init.zeros_(body[-1].bias)
    return body


class GuidanceProxy(nn.Module):
    """A learned local noise-level estimator: ``(B, C, H, W) -> (B, 1, H, W)``, positive.

    A plain CNN regressing the level from pixels barely learns in a few hundred steps: the
    noise (1-7 % of the range) is buried under image content. So the front end is the one of
    the classical wavelet estimator (Donoho & Johnstone; ``skimage.restoration.estimate_sigma``):
    the diagonal Haar detail band ``HH`` (stride 2), whose local RMS is the noise level where the
    image is smooth, and which blurred images leave nearly noise-only. The CNN (the reference
    code's 4 conv layers, dilated here) predicts a log-correction to that local RMS, from the
    normalised band and its log-energy; the last layer is zero-initialised, so training starts
    from the classical estimate. Working at half resolution quarters the cost; noise maps are
    smooth, so the output is bilinearly upsampled.

    Args:
        channels: input channels ``C``.
        width: feature channels.
        dilations: one per 3x3 convolution; the last maps ``width -> 1``.
        window: side of the local-energy window (half-resolution pixels).
    """

    def __init__(self, channels: int = 1, width: int = 64, dilations: tuple[int, ...] = (1, 2, 4, 1), window: int = 5):
        super().__init__()
        hh = torch.tensor([[0.5, -0.5], [-0.5, 0.5]])  # orthonormal: white noise of std s -> std s
        self.register_buffer("haar_hh", hh[None, None].repeat(channels, 1, 1, 1))
        self.channels, self.window = channels, window
        self.body = conv_stack(2 * channels, 1, width, dilations)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z (B, C, H, W)`` -> noise-level map ``(B, 1, H, W)`` in the units of ``z``."""
        h, w = z.shape[-2:]
        padded = F.pad(z, (0, w % 2, 0, h % 2), mode="replicate")
        hh = F.conv2d(padded, self.haar_hh.to(z.dtype), stride=2, groups=self.channels)
        energy = F.avg_pool2d(hh * hh, self.window, stride=1, padding=self.window // 2, count_include_pad=False)
        log_rms = 0.5 * torch.log(energy + 1e-8)
        base = log_rms.mean(1, keepdim=True)
        features = torch.cat([hh / (torch.exp(base) + 1e-4), log_rms], dim=1)
        log_sigma = base + self.body(features)
        return torch.exp(F.interpolate(log_sigma, size=(h, w), mode="bilinear", align_corners=False))
