"""Image filters on ``(B, C, H, W)`` tensors, batched and differentiable where the operation is:
the box mean, the minimum and median filters, and He et al.'s guided filter. The classical rain
and haze estimates (:func:`pipeline.physics.rain.median_background`,
:func:`pipeline.physics.haze.dark_channel_estimate`) are built from them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the ``(2r+1)^2`` window of every pixel of ``x (B, C, H, W)``, separably.

    Windows are cut at the borders and normalised by the pixels they hold, as in He et al.'s
    box filter (the guided filter's reference implementation divides by the window's count).
    """
    k = 2 * radius + 1
    x = F.avg_pool2d(x, (k, 1), stride=1, padding=(radius, 0), count_include_pad=False)
    return F.avg_pool2d(x, (1, k), stride=1, padding=(0, radius), count_include_pad=False)


def min_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Minimum over the ``size x size`` window (odd ``size``) of every pixel of ``x (B, C, H, W)``,
    separably; windows are cut at the borders (the same as replicating the border pixels)."""
    r = size // 2
    x = -F.max_pool2d(-x, (size, 1), stride=1, padding=(r, 0))
    return -F.max_pool2d(-x, (1, size), stride=1, padding=(0, r))


def median_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Median over the ``size x size`` window (odd ``size``) of every pixel of ``x (B, C, H, W)``,
    per channel, the image mirrored at its borders with the edge repeated (``d c b a | a b c d``,
    scipy's ``reflect``). Holds ``size^2`` copies of the image at once."""
    r = size // 2
    b, c, h, w = x.shape

    def symmetric(n: int) -> torch.Tensor:
        i = torch.arange(-r, n + r, device=x.device) % (2 * n)
        return torch.where(i < n, i, 2 * n - 1 - i)

    padded = x[:, :, symmetric(h)][:, :, :, symmetric(w)]
    return F.unfold(padded, size).reshape(b, c, size * size, h, w).median(dim=2).values


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter of ``src`` by ``guide``, ``(B, 1, H, W)`` each: edge-preserving
    smoothing that is locally a linear function of the guide (``eps`` the regularisation of the
    local slope; ``eps -> 0`` returns the guide where ``src`` is the guide)."""
    mi, mp = box_mean(guide, radius), box_mean(src, radius)
    a = (box_mean(guide * src, radius) - mi * mp) / (box_mean(guide * guide, radius) - mi * mi + eps)
    b = mp - a * mi
    return box_mean(a, radius) * guide + box_mean(b, radius)
