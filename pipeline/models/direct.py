"""The ``direct_cnn`` baseline: a plain residual CNN from the observation to the image.

No unfolding, no physics, no guidance: the question it answers is whether the guided, unfolded
structure matters at all at this size. It has (to within one layer) the parameter count of the
task's unfolded model and is trained on the same data for the same number of steps
(:class:`pipeline.bilevel.trainer.DirectTrainer`). Its layers are the denoiser's (3x3
convolutions with the denoiser's width and dilation pattern, ReLU between, no batch norm), so the
two differ in structure, not in their building blocks.
"""
from __future__ import annotations

import itertools

import torch
from torch import nn

from pipeline.models.unfolded import UnfoldedOutput


def conv_parameters(channels: int, width: int, layers: int) -> int:
    """Weights and biases of ``layers`` 3x3 convolutions ``C -> w -> ... -> w -> C``."""
    return (channels * width * 9 + width) + (layers - 2) * (width * width * 9 + width) + (width * channels * 9 + channels)


def matched_layers(target: int, channels: int, width: int) -> int:
    """The number of layers (>= 2) whose :func:`conv_parameters` is nearest ``target``."""
    per_layer = width * width * 9 + width
    base = conv_parameters(channels, width, 2)
    n = 2 + max(0, round((target - base) / per_layer))
    return n


class DirectCNN(nn.Module):
    """``x = y + body(y)``: ``y (B, C, H, W) -> (B, C, H, W)``, ``layers`` convolutions of
    ``width`` channels with ``dilations`` repeated cyclically.

    It answers to the unfolded models' interface where the evaluation protocol reads it: it takes
    a physics object (its ``y``; the blur, if any, is not used) and an ignored ``target``, and
    returns an :class:`UnfoldedOutput` with no guidance maps and no penalties.
    """

    guidance_mode = "direct"

    def __init__(self, channels: int, width: int, layers: int, dilations: tuple[int, ...] = (1,)):
        super().__init__()
        if layers < 2:
            raise ValueError(f"a direct CNN needs >= 2 layers, got {layers}")
        self.channels, self.layers = channels, layers
        mods: list[nn.Module] = []
        c_in = channels
        for i, d in zip(range(layers), itertools.cycle(dilations)):
            last = i == layers - 1
            d = 1 if i in (0, layers - 1) else d  # the first and last layers are plain, as in the denoiser
            mods.append(nn.Conv2d(c_in, channels if last else width, 3, padding=d, dilation=d))
            if not last:
                mods.append(nn.ReLU(inplace=True))
            c_in = width
        self.body = nn.Sequential(*mods)

    def forward(self, physics, target: torch.Tensor | None = None) -> UnfoldedOutput:
        y = getattr(physics, "y", physics)
        x = y + self.body(y)
        return UnfoldedOutput(x, [], x.new_zeros(0))

    def estimate_guidance(self, y: torch.Tensor) -> torch.Tensor:
        """No guidance: zeros ``(B, 1, H, W)`` (the protocol records a map for every model)."""
        return y.new_zeros(y.shape[0], 1, *y.shape[-2:])
