"""Training patches: fresh degraded crops every batch, from the same code as the degrade stage."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.generators.kernels import KernelSample
from pipeline.synthesis import batch_tensors, degrade


@dataclass(frozen=True)
class NoiseSpec:
    """How noise is drawn for training patches (levels in percent)."""

    low: float
    high: float
    mode: str = "constant"
    spread: float = 0.8


class PatchSampler:
    """Fresh degraded training patches every batch, from a fixed, seeded kernel bank.

    Args:
        images: ``(C, H, W)`` clean training images.
        kernels: the kernel bank drawn from.
        noise: noise levels and mode.
        patch_size: ``P``; images smaller than that are skipped.
        kernel_size: kernels are zero-padded to ``(kernel_size, kernel_size)`` in a batch.
        rng: the only source of randomness (crop, flip, kernel, level, noise).
    """

    def __init__(self, images: list[np.ndarray], kernels: list[KernelSample], noise: NoiseSpec,
                 patch_size: int, kernel_size: int, rng: np.random.Generator):
        self.images = [im for im in images if min(im.shape[-2:]) >= patch_size]
        if not self.images:
            raise ValueError(f"no training image is at least {patch_size}x{patch_size} (train.patch_size)")
        self.kernels, self.noise, self.p, self.kernel_size, self.rng = kernels, noise, patch_size, kernel_size, rng

    def clean_patch(self) -> np.ndarray:
        img = self.images[self.rng.integers(len(self.images))]
        h, w = img.shape[-2:]
        top, left = self.rng.integers(h - self.p + 1), self.rng.integers(w - self.p + 1)
        patch = img[:, top : top + self.p, left : left + self.p]
        if self.rng.uniform() < 0.5:
            patch = patch[:, :, ::-1]
        return np.ascontiguousarray(np.rot90(patch, k=int(self.rng.integers(4)), axes=(1, 2)))

    def clean_batch(self, batch_size: int) -> torch.Tensor:
        """``(B, C, P, P)`` clean patches (for pre-training the denoiser)."""
        return torch.from_numpy(np.stack([self.clean_patch() for _ in range(batch_size)]))

    def blur_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        """Degraded patches: ``x, y (B, C, P, P)``, ``sigma (B, 1, P, P)``, ``kernel (B, k, k)``."""
        clean, samples = [], []
        for _ in range(batch_size):
            x = self.clean_patch()
            kernel = self.kernels[self.rng.integers(len(self.kernels))]
            level = float(self.rng.uniform(self.noise.low, self.noise.high)) / 100.0
            samples.append(degrade(x, kernel, level, self.noise.mode, self.noise.spread, self.rng))
            clean.append(x)
        return batch_tensors(samples, clean, self.kernel_size)
