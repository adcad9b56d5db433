"""Overlapping tiles: run a convolutional network on an image larger than a memory budget.

A network whose receptive field has radius ``r`` computes each output pixel from the input
pixels within ``r`` of it. Run on a tile extended by a *halo* of at least ``r`` pixels on every
side that lies inside the image, its output on the tile's own pixels is therefore the untiled
output (up to float summation order); where the halo is clipped by the image border the
network pads exactly as it does untiled. Neighbouring tiles also overlap by ``blend`` pixels,
cross-faded with a raised-cosine ramp: with ``halo >= r`` both agree and the fade changes
nothing, with a smaller halo (a tighter budget) it hides the seam instead of leaving a step.

Peak memory is that of one extended tile plus the full-size accumulators (two ``(B, C, H, W)``
float32 tensors), whatever the image size.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn


def tile_spans(length: int, tile: int, blend: int, align: int = 1) -> list[tuple[int, int]]:
    """Output spans ``[start, stop)`` covering ``[0, length)``.

    Each span is ``tile`` long (the last one up to ``align - 1`` longer), consecutive spans
    overlap by at least ``blend`` pixels and every start is a multiple of ``align`` (a stride-2
    front end, e.g. the proxy's Haar band, needs even starts to keep its sampling grid).
    """
    if tile < 1 or blend < 0 or align < 1:
        raise ValueError(f"bad tiling: tile {tile}, blend {blend}, align {align}")
    if length <= tile:
        return [(0, length)]
    step = ((tile - blend) // align) * align
    if step < align or 2 * blend > tile:
        raise ValueError(f"tile {tile} too small for blend {blend} (align {align})")
    starts = list(range(0, length - tile, step))
    last = ((length - tile) // align) * align
    if starts and starts[-1] == last:
        starts.pop()
    return [(s, s + tile) for s in starts] + [(last, length)]


def blend_ramp(start: int, stop: int, length: int, blend: int) -> torch.Tensor:
    """``(stop - start,)`` weights: 1 inside, a raised-cosine ramp over ``blend`` pixels at each
    end that has a neighbour (none at the image border). Strictly positive, and where two
    ramps overlap exactly they sum to 1 (sin^2 + cos^2)."""
    w = torch.ones(stop - start, dtype=torch.float32)
    if blend > 0:
        up = torch.sin(0.5 * math.pi * (torch.arange(blend, dtype=torch.float32) + 0.5) / blend) ** 2
        if start > 0:
            w[:blend] *= up
        if stop < length:
            w[-blend:] *= up.flip(0)
    return w


def tiled_apply(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], tile: int, halo: int,
                blend: int = 0, align: int = 1) -> torch.Tensor:
    """``fn(*inputs)`` computed tile by tile.

    Args:
        fn: maps crops ``(B, C_i, h, w)`` to ``(B, C_out, h, w)`` (same spatial size), e.g. a
            conv net with padding.
        inputs: tensors ``(B, C_i, H, W)`` sharing ``H, W``.
        tile: output tile side (pixels); each call of ``fn`` sees at most
            ``(tile + 2 * halo)^2`` pixels (plus ``align - 1`` per axis).
        halo: context on each side, discarded after the call; ``>= `` the receptive-field
            radius of ``fn`` for a result equal to the untiled one. Rounded up to ``align``.
        blend: overlap of neighbouring tiles, cross-faded.
        align: tile starts (and the halo) are multiples of it.
    Returns:
        ``(B, C_out, H, W)`` float32 (or float64 if ``fn`` returns float64).
    """
    h, w = inputs[0].shape[-2:]
    rows, cols = tile_spans(h, tile, blend, align), tile_spans(w, tile, blend, align)
    if len(rows) == 1 and len(cols) == 1:
        return fn(*inputs)
    halo = -(-halo // align) * align
    out: torch.Tensor | None = None
    weight = inputs[0].new_zeros((1, 1, h, w), dtype=torch.float32)
    for r0, r1 in rows:
        e0, e1 = max(r0 - halo, 0), min(r1 + halo, h)
        wr = blend_ramp(r0, r1, h, blend).to(weight.device)
        for c0, c1 in cols:
            f0, f1 = max(c0 - halo, 0), min(c1 + halo, w)
            piece = fn(*(t[..., e0:e1, f0:f1] for t in inputs))[..., r0 - e0:r1 - e0, c0 - f0:c1 - f0]
            if out is None:
                dtype = torch.float64 if piece.dtype == torch.float64 else torch.float32
                out = piece.new_zeros((*piece.shape[:-2], h, w), dtype=dtype)
            wt = wr[:, None] * blend_ramp(c0, c1, w, blend).to(weight.device)[None, :]
            out[..., r0:r1, c0:c1] += piece.to(out.dtype) * wt.to(out.dtype)
            weight[..., r0:r1, c0:c1] += wt
            del piece  # the tile's activations are gone; only its output was kept
    assert out is not None
    return out / weight.to(out.dtype)


class Tiled(nn.Module):
    """``module`` applied in overlapping tiles (see :func:`tiled_apply`) when an input exceeds
    ``tile`` on either side; directly otherwise. ``forward(*inputs)``: tensors
    ``(B, C_i, H, W)`` sharing ``H, W`` -> ``(B, C_out, H, W)``."""

    def __init__(self, module: nn.Module, tile: int, halo: int, blend: int = 0, align: int = 1):
        super().__init__()
        self.module, self.tile, self.halo, self.blend, self.align = module, tile, halo, blend, align

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return tiled_apply(self.module, inputs, self.tile, self.halo, self.blend, self.align)
