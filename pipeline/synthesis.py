"""Synthetic degraded samples: generators (what is drawn) composed with physics (what it does).

One function serves the ``degrade`` stage (fixed val/test samples, recorded) and training
(fresh samples every batch), so both see exactly the same degradation model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.generators import noise_maps
from pipeline.generators.kernels import KernelSample, pad_to
from pipeline.physics.blur import blur, psf2otf
from pipeline.physics.noise import add_gaussian_noise


@dataclass
class BlurSample:
    """One degraded observation and its ground truth of degradation."""

    y: np.ndarray  # (C, H, W) float32, not clipped (the noise model is additive Gaussian)
    sigma_map: np.ndarray  # (1, H, W) float32, true noise std per pixel, [0, 1] units
    kernel: np.ndarray  # (k, k) float32
    record: dict = field(default_factory=dict)  # drawn parameters, for the per-sample table


def blur_circular(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``k * x`` with circular boundaries. ``x (C, H, W)``, ``kernel (kh, kw)`` -> ``(C, H, W)``."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
    otf = psf2otf(torch.from_numpy(kernel), tuple(x.shape[-2:]))
    return blur(xt, otf)[0].numpy()


def noise_map(rng: np.random.Generator, shape: tuple[int, int], level: float, mode: str, spread: float) -> np.ndarray:
    """``(1, H, W)`` true noise map for a level in [0, 1] units; ``mode`` constant or varying."""
    if mode == "constant":
        return noise_maps.constant_map(shape, level)
    if mode == "varying":
        return noise_maps.smooth_map(rng, shape, level, spread)
    raise ValueError(f"unknown noise mode {mode!r}")


def degrade(x: np.ndarray, kernel: KernelSample, level: float, mode: str, spread: float,
            rng: np.random.Generator) -> BlurSample:
    """Blur ``x (C, H, W)`` circularly with ``kernel``, then add noise of mean level ``level``."""
    kh, kw = kernel.kernel.shape
    if kh > x.shape[-2] or kw > x.shape[-1]:
        raise ValueError(f"kernel {kh}x{kw} is larger than the image {x.shape[-2]}x{x.shape[-1]}")
    sigma = noise_map(rng, x.shape[-2:], level, mode, spread)
    y = add_gaussian_noise(blur_circular(x, kernel.kernel), sigma, rng)
    record = {"kernel_kind": kernel.kind, "kernel_size": kh, "noise_level": round(level * 100, 4), "noise_mode": mode}
    return BlurSample(y, sigma, kernel.kernel, record)


def batch_tensors(samples: list[BlurSample], clean: list[np.ndarray], kernel_size: int) -> dict[str, torch.Tensor]:
    """Stack samples of one patch size into ``x, y (B, C, P, P)``, ``sigma (B, 1, P, P)``,
    ``kernel (B, k, k)`` (zero-padded to ``kernel_size``, centres aligned)."""
    return {
        "x": torch.from_numpy(np.stack(clean)),
        "y": torch.from_numpy(np.stack([s.y for s in samples])),
        "sigma": torch.from_numpy(np.stack([s.sigma_map for s in samples])),
        "kernel": torch.from_numpy(np.stack([pad_to(s.kernel, kernel_size) for s in samples])),
    }
